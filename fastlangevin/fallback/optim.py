"""PyTorch fallback of the Langevin optimizers' multi-tensor update, on ``torch._foreach_*`` ops.

With ``g = gscale · grad + prior · θ`` (fp32; θ the parameter or its fp32 master copy):

    SGLD:   θ ← (θ − lr·g) + b·z
    pSGLD:  V ← a1·V + a2·g²;   G = 1 / (eps + √V);   θ ← (θ − lr·(G·g)) + √(c·G)·z   (c = b)
    SGHMC:  v ← ((a1·v) − lr·g) + b·z;   θ ← θ + v

Same evaluation order as ``kernels/optim.py``, one rounding per operation (explicit multiplies,
never ``alpha=`` which may fuse into an FMA), so with the noise injected it matches the kernel
bitwise. Noise for element j of the parameter with optimizer index i is element
``i · PARAM_SLOT + j`` of the global stream under the step's seed: ``rng="philox"`` is the kernels'
stream; ``rng="torch"`` (CPU default) the chunk-keyed torch stream (chunks of
``TORCH_RNG_CHUNK`` of the global index, each a reseeded torch generator). Both depend only on
(seed, i, j), never on how tensors are grouped or walked.
"""

from __future__ import annotations

from typing import List, Optional

import torch

from .._rng import TORCH_RNG_CHUNK, philox_normal, torch_chunk_normal

#: Elements of the global stream reserved for each parameter (the kernel uses 2**40 Philox groups).
PARAM_SLOT = 1 << 42

SGLD, PSGLD, SGHMC = 0, 1, 2


def sqrt_rn(ts: List[torch.Tensor]) -> List[torch.Tensor]:
    """Correctly rounded fp32 square roots (as the kernel's ``sqrt_rn``): torch's vectorised CPU
    fp32 sqrt can be 1 ulp off. The float64 root rounded to fp32 is exact (53 > 2·24 + 2 bits)."""
    return [t.double().sqrt_().float() for t in ts]


def param_noise(seed: torch.Tensor, index: int, n: int, rng: str, std: float = 1.0, scratch=None) -> torch.Tensor:
    """``std ·`` the standard normals of parameter ``index``'s first ``n`` elements (float32, flat).

    ``rng="torch"``: CPU only; ``std`` is folded into ``normal_`` (bitwise ``fl(z · std)``).
    """
    start = index * PARAM_SLOT
    if rng == "philox":
        z = philox_normal(seed, start, n)
        return z if std == 1.0 else z.mul_(std)
    C = TORCH_RNG_CHUNK
    gen, buf = scratch if scratch is not None else (torch.Generator(), torch.empty(C, dtype=torch.float32))
    seed_int = int(seed.reshape(()).item())
    out = torch.empty(n, dtype=torch.float32)
    k0 = start // C  # PARAM_SLOT is a multiple of C: the parameter starts a chunk
    for c in range(-(-n // C)):
        lo, hi = c * C, min((c + 1) * C, n)
        if hi - lo == C:
            torch_chunk_normal(seed_int, k0 + c, out[lo:hi], gen, needed=C, std=std)
        else:  # a partial chunk: fill the (16-aligned) prefix in scratch, keep what is needed
            torch_chunk_normal(seed_int, k0 + c, buf, gen, needed=hi - lo, std=std)
            out[lo:hi] = buf[: hi - lo]
    return out


def _noise(seed, indices, params, rng, std, injected, device):
    """One flat fp32 noise tensor per parameter, ``std``-scaled (``std`` a float)."""
    if injected is not None:
        z = [t.reshape(-1).to(torch.float32) for t in injected]
        return z if std == 1.0 else torch._foreach_mul(z, std)
    if rng == "philox":
        z = [philox_normal(seed, i * PARAM_SLOT, p.numel(), device) for i, p in zip(indices, params)]
        return z if std == 1.0 else torch._foreach_mul(z, std)
    scratch = _scratch()
    return [param_noise(seed, i, p.numel(), rng, std, scratch) for i, p in zip(indices, params)]


def _scratch():
    return torch.Generator(), torch.empty(TORCH_RNG_CHUNK, dtype=torch.float32)


def _add_torch_noise_(seed, indices, targets, std):
    """``targets[k] += std · z`` with the chunk-keyed torch stream, chunk by chunk from a scratch
    buffer (no full-size noise tensor; the common small parameter costs one fill and one add)."""
    C = TORCH_RNG_CHUNK
    gen, buf = _scratch()
    seed_int = int(seed.reshape(()).item())
    for i, t in zip(indices, targets):
        n = t.numel()
        k0 = i * PARAM_SLOT // C
        for c in range(-(-n // C)):
            lo, hi = c * C, min((c + 1) * C, n)
            torch_chunk_normal(seed_int, k0 + c, buf, gen, needed=hi - lo, std=std)
            t[lo:hi].add_(buf[: hi - lo])


@torch.no_grad()
def optim_update_torch(
    method: int,
    params: List[torch.Tensor],
    grads: List[torch.Tensor],
    masters: List[torch.Tensor],
    states: List[torch.Tensor],
    indices: List[int],
    seed: torch.Tensor,
    lr: float,
    gscale: float,
    prior: float,
    nscale: float,
    a1: float,
    a2: float,
    eps: float,
    has_noise: bool,
    rng: str,
    injected: Optional[List[torch.Tensor]] = None,
) -> None:
    """Update ``params`` (and ``masters``, ``states``) in place. Tensors contiguous, one device."""
    if not params:
        return
    if rng == "torch" and params[0].device.type != "cpu":
        raise ValueError(f"rng='torch' draws from torch's CPU generator; use rng='philox' on {params[0].device.type}")
    device = params[0].device
    theta = [t.view(-1) for t in (masters if masters else params)]
    if not masters and params[0].dtype != torch.float32:
        raise ValueError(f"16-bit parameters need fp32 master copies, got {params[0].dtype} without")
    flat_g = [g.reshape(-1) for g in grads]
    g = [x.to(torch.float32) for x in flat_g] if grads[0].dtype != torch.float32 else flat_g
    if gscale != 1.0:  # (× 1 is exact: skipping it changes no bit)
        g = torch._foreach_mul(g, gscale)
    if prior != 0.0:  # out of place: g may still be the caller's gradients
        g = torch._foreach_add(g, torch._foreach_mul(theta, prior))
    st = [s.view(-1) for s in states]
    # SGLD and SGHMC have a scalar noise scale: fold it into the draw. pSGLD scales per element.
    z = None
    # Scalar noise scale drawn from the torch stream: added chunk by chunk, never materialised.
    direct = has_noise and injected is None and rng == "torch" and method != PSGLD
    if has_noise and not direct:
        z = _noise(seed, indices, theta, rng, 1.0 if method == PSGLD else nscale, injected, device)
    if method == SGLD:
        torch._foreach_sub_(theta, torch._foreach_mul(g, lr))
        if z is not None:
            torch._foreach_add_(theta, z)
        elif direct:
            _add_torch_noise_(seed, indices, theta, nscale)
    elif method == PSGLD:
        torch._foreach_mul_(st, a1)
        gg = torch._foreach_mul(g, g)
        torch._foreach_mul_(gg, a2)
        torch._foreach_add_(st, gg)
        precond = sqrt_rn(st)
        torch._foreach_add_(precond, eps)
        torch._foreach_reciprocal_(precond)
        step = torch._foreach_mul(precond, g)
        torch._foreach_mul_(step, lr)
        torch._foreach_sub_(theta, step)
        if z is not None:
            torch._foreach_mul_(precond, nscale)
            noise_std = sqrt_rn(precond)
            torch._foreach_mul_(noise_std, z)
            torch._foreach_add_(theta, noise_std)
    elif method == SGHMC:
        torch._foreach_mul_(st, a1)
        torch._foreach_sub_(st, torch._foreach_mul(g, lr))
        if z is not None:
            torch._foreach_add_(st, z)
        elif direct:
            _add_torch_noise_(seed, indices, st, nscale)
        torch._foreach_add_(theta, st)
    else:
        raise ValueError(f"unknown method {method}")
    if masters:
        torch._foreach_copy_([p.view(-1) for p in params], theta)
