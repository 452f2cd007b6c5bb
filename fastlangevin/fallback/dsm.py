"""PyTorch fallback of the fused DSM loss — runs anywhere, and is the kernels' oracle.

    perturb:   x̃ = α · x + σ · z
    loss:      ℓ_i = ½ · λ_i · Σ_j (s_ij + z_ij · (1/σ_i))²
    backward:  ∂ℓ/∂s_ij = c_i · (s_ij + z_ij · (1/σ_i)),   c_i = λ_i · ∂L/∂ℓ_i

Same semantics as ``kernels/dsm.py``: per-row scales come as ``[B]`` tensors in the compute
dtype (fp32, fp64 for float64 inputs), the elementwise arithmetic is the kernels' (same
operations in the same order, so perturb and backward match the interpreted kernels bitwise
in fp32), and z is regenerated from the seed in every pass, never stored.

Like ``langevin_step_torch`` it walks the flat tensor in chunks aligned to the *global* element
index: the noise of a chunk (rng="torch": one reseeded torch generator per chunk; rng="philox":
the kernels' counter-based stream) never depends on the batch size, and only chunk-sized
temporaries exist. Per-row sums of the loss are accumulated chunk piece by chunk piece with a
fixed-order reduction (:func:`row_sums`), so a row's loss is bitwise independent of the batch
size and of the number of threads.
"""

from __future__ import annotations

from typing import Iterator, Optional, Tuple

import torch

from .._rng import TORCH_RNG_CHUNK, philox_normal, torch_chunk_normal
from .._validate import Scale
from .langevin_step import PHILOX_CHUNK, scale_slice

#: Width of one level of :func:`row_sums`. Each level sums contiguous runs of this many
#: values; runs are far below torch's parallel grain (32768), so no reduction is ever split
#: across threads and the summation order is fixed.
ROW_SUM_WIDTH = 1024


def noise_chunks(
    seed: torch.Tensor,
    n: int,
    *,
    elem_offset: int,
    rng: str,
    device: torch.device,
    injected_noise: Optional[torch.Tensor] = None,
) -> Iterator[Tuple[int, int, torch.Tensor]]:
    """Yield ``(i0, i1, z)``: the noise of local flat elements ``[i0, i1)``, chunk by chunk.

    ``z`` is float32 (or the injected noise's slice, any dtype) and may be a reused buffer:
    consume it before asking for the next chunk.
    """
    if rng == "torch":
        if device.type != "cpu":
            raise ValueError(f"rng='torch' draws from torch's CPU generator; use rng='philox' on {device.type}")
        C = TORCH_RNG_CHUNK
        gen = torch.Generator()
        buf = torch.empty(C, dtype=torch.float32)
        seed_int = int(seed.reshape(()).item()) if injected_noise is None else 0  # CPU: no device sync
    elif rng == "philox":
        C = PHILOX_CHUNK
    else:
        raise ValueError(f"rng must be 'torch' or 'philox', got {rng!r}")
    if n == 0:
        return
    for k in range(elem_offset // C, (elem_offset + n - 1) // C + 1):
        g0, g1 = max(k * C, elem_offset), min((k + 1) * C, elem_offset + n)
        i0, i1 = g0 - elem_offset, g1 - elem_offset
        if injected_noise is not None:
            z = injected_noise[i0:i1]
        elif rng == "torch":
            torch_chunk_normal(seed_int, k, buf, gen)
            z = buf[g0 - k * C : g1 - k * C]
        else:
            z = philox_normal(seed, g0, i1 - i0)
        yield i0, i1, z


def row_sums(t: torch.Tensor) -> torch.Tensor:
    """Sums of the rows of a 2-D tensor ``[k, n]`` (last dim contiguous) in a fixed order.

    Level by level, contiguous runs of :data:`ROW_SUM_WIDTH` values are summed (plus one
    shorter run for the remainder), so the result of a row depends on that row alone.
    """
    W = ROW_SUM_WIDTH
    while t.shape[1] > W:
        k, n = t.shape
        full = n // W * W
        level = t[:, :full].reshape(k, n // W, W).sum(-1)
        if full < n:
            level = torch.cat([level, t[:, full:].sum(-1, keepdim=True)], dim=1)
        t = level
    return t.sum(-1)


def _accumulate_rows(q: torch.Tensor, vals: torch.Tensor, i0: int, row_size: int) -> None:
    """``q[r] += Σ`` of the values of ``vals`` (local flat elements ``[i0, i0 + len)``) in row r."""
    i1 = i0 + vals.numel()
    pos = i0
    if pos % row_size:  # a row begun in an earlier chunk
        r = pos // row_size
        end = min(i1, (r + 1) * row_size)
        q[r : r + 1] += row_sums(vals[: end - i0].view(1, -1))
        pos = end
    n_full = (i1 - pos) // row_size
    if n_full:
        r = pos // row_size
        q[r : r + n_full] += row_sums(vals[pos - i0 : pos - i0 + n_full * row_size].view(n_full, row_size))
        pos += n_full * row_size
    if pos < i1:  # a row continued in the next chunk
        r = pos // row_size
        q[r : r + 1] += row_sums(vals[pos - i0 :].view(1, -1))


def _rows(t: torch.Tensor) -> Scale:
    return Scale(tensor=t)


def dsm_perturb_torch(
    x: torch.Tensor,
    out: torch.Tensor,
    seed: torch.Tensor,
    alpha_rows: Optional[torch.Tensor],
    sigma_rows: torch.Tensor,
    *,
    row_size: int,
    elem_offset: int,
    rng: str,
    injected_noise: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``out = α x + σ z`` (``x + σ z`` when ``alpha_rows`` is None). Flat contiguous tensors."""
    cdt = sigma_rows.dtype
    for i0, i1, z in noise_chunks(seed, x.numel(), elem_offset=elem_offset, rng=rng, device=x.device, injected_noise=injected_noise):
        t = z.to(cdt).mul(scale_slice(_rows(sigma_rows), i0, i1, row_size, cdt))
        xs = x[i0:i1].to(cdt)
        if alpha_rows is not None:
            xs = xs.mul(scale_slice(_rows(alpha_rows), i0, i1, row_size, cdt))
        t.add_(xs)  # σz + αx: the kernel's αx + σz (addition commutes bitwise)
        out[i0:i1].copy_(t)
    return out


def dsm_loss_rows_torch(
    score: torch.Tensor,
    seed: torch.Tensor,
    inv_sigma_rows: torch.Tensor,
    weight_rows: torch.Tensor,
    *,
    row_size: int,
    elem_offset: int,
    rng: str,
    injected_noise: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Per-row loss ``½ λ_i Σ_j (s_ij + z_ij / σ_i)²`` as a ``[B]`` tensor (compute dtype)."""
    cdt = inv_sigma_rows.dtype
    q = torch.zeros(inv_sigma_rows.shape[0], dtype=cdt, device=score.device)
    for i0, i1, z in noise_chunks(seed, score.numel(), elem_offset=elem_offset, rng=rng, device=score.device, injected_noise=injected_noise):
        r = z.to(cdt).mul(scale_slice(_rows(inv_sigma_rows), i0, i1, row_size, cdt))
        r.add_(score[i0:i1].to(cdt))
        _accumulate_rows(q, r.mul_(r), i0, row_size)
    return q.mul_(weight_rows).mul_(0.5)


def dsm_loss_backward_torch(
    score: torch.Tensor,
    grad: torch.Tensor,
    seed: torch.Tensor,
    inv_sigma_rows: torch.Tensor,
    coef_rows: torch.Tensor,
    *,
    row_size: int,
    elem_offset: int,
    rng: str,
    injected_noise: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``grad = c_i (s_ij + z_ij / σ_i)`` into ``grad`` (flat, score's dtype). Returns ``grad``."""
    cdt = inv_sigma_rows.dtype
    for i0, i1, z in noise_chunks(seed, score.numel(), elem_offset=elem_offset, rng=rng, device=score.device, injected_noise=injected_noise):
        r = z.to(cdt).mul(scale_slice(_rows(inv_sigma_rows), i0, i1, row_size, cdt))
        r.add_(score[i0:i1].to(cdt))
        grad[i0:i1].copy_(r.mul_(scale_slice(_rows(coef_rows), i0, i1, row_size, cdt)))
    return grad
