"""PyTorch fallback of the Langevin optimizers' multi-tensor update, on flat fp32 batches.

With ``g = gscale · grad + prior · θ`` (fp32; θ the parameter or its fp32 master copy):

    SGLD:   θ ← (θ − lr·g) + b·z
    pSGLD:  V ← a1·V + a2·g²;   G = 1 / (eps + √V);   θ ← (θ − lr·(G·g)) + √(c·G)·z   (c = b)
    SGHMC:  v ← ((a1·v) − lr·g) + b·z;   θ ← θ + v

Same evaluation order as ``kernels/optim.py``, one rounding per operation (explicit multiplies,
never ``alpha=`` which may fuse into an FMA; correctly rounded √), so with the noise injected it
matches the kernel bitwise. Noise for element j of the parameter with optimizer index i is
element ``i · PARAM_SLOT + j`` of the global stream under the step's seed: ``rng="philox"`` is
the kernels' stream; ``rng="torch"`` (CPU default) the chunk-keyed torch stream (chunks of
``TORCH_RNG_CHUNK`` of the global index, each a reseeded torch generator). Both depend only on
(seed, i, j), never on how tensors are grouped, batched or walked.

Layout (why it is fast on CPU, where a ``_foreach_*`` op still dispatches once per tensor):
small tensors are packed into batches of at most ``BATCH`` elements, gathered into flat fp32
buffers (one ``torch.cat`` per operand), updated by a handful of flat ops and scattered back
(one ``_foreach_copy_`` per output); a tensor above one noise chunk is updated in place, in
slices of ``BATCH``. The torch stream's normals are drawn straight into the batch's noise buffer
with the noise scale folded into ``normal_``, spread over torch's threads when there are several.
"""

from __future__ import annotations

import threading
from typing import List, Optional

import numpy as np
import torch

from .._rng import TORCH_RNG_CHUNK, chunk_seed, philox_normal, philox_randn4x, torch_chunk_normal, torch_normal
from .chunks import _pool, cpu_scratch

#: Elements of the global stream reserved for each parameter (the kernel uses 2**40 Philox groups).
PARAM_SLOT = 1 << 42
#: Elements per flat batch (a multiple of TORCH_RNG_CHUNK): its six fp32 buffers (3 MiB) stay in L2/L3.
BATCH = 1 << 17
#: Below this many elements per worker, handing noise draws to another thread costs more than it saves.
MIN_DRAW_PER_WORKER = 1 << 14

SGLD, PSGLD, SGHMC = 0, 1, 2
_C = TORCH_RNG_CHUNK


def param_noise(seed: torch.Tensor, index: int, n: int, rng: str) -> torch.Tensor:
    """The standard normals of parameter ``index``'s first ``n`` elements (float32, flat): a test oracle."""
    if rng == "philox":
        return philox_normal(seed, index * PARAM_SLOT, n)
    return torch_normal(int(seed.reshape(()).item()), index * PARAM_SLOT, n)


def _sqrt_rn(src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Correctly rounded fp32 square roots (the kernel's ``sqrt_rn``) of flat ``src`` into ``out``.

    torch's CPU fp32 sqrt is not always correctly rounded (0.6 % of [2**-7, 1) 1 ulp off, measured);
    numpy's is (the IEEE instruction): bitwise the float64 root rounded to fp32, which is exact
    (53 > 2·24 + 2 bits) and what other devices compute.
    """
    if src.device.type == "cpu":
        np.sqrt(src.numpy(), out=out.numpy())
        return out
    return out.copy_(src.double().sqrt_())


def _update_flat(method, theta, g, state, z, a, b, lr, gscale, prior, nscale, a1, a2, eps):
    """The update on flat fp32 tensors: ``theta`` (and ``state``) in place; ``g`` read-only; ``z``
    the noise (SGLD, SGHMC: already times ``nscale``; pSGLD: standard) or None; ``a``, ``b`` scratch."""
    if gscale != 1.0:  # (× 1 is exact: skipping it changes no bit)
        g = torch.mul(g, gscale, out=a)
    if prior != 0.0:
        g = torch.add(g, torch.mul(theta, prior, out=b), out=a)
    if method == SGLD:
        theta.sub_(torch.mul(g, lr, out=b))
        if z is not None:
            theta.add_(z)
    elif method == PSGLD:
        state.mul_(a1).add_(torch.mul(g, g, out=b).mul_(a2))
        precond = _sqrt_rn(state, b).add_(eps).reciprocal_()
        theta.sub_(torch.mul(precond, g, out=a).mul_(lr))
        if z is not None:
            theta.add_(_sqrt_rn(precond.mul_(nscale), precond).mul_(z))
    elif method == SGHMC:
        state.mul_(a1).sub_(torch.mul(g, lr, out=b))
        if z is not None:
            state.add_(z)
        theta.add_(state)
    else:
        raise ValueError(f"unknown method {method}")


class _Plan:
    """The batches of one bucket layout (sizes and optimizer indices), with their fp32 buffers.

    ``batches``: lists of parts ``(k, lo, hi)`` (tensor k's flat elements [lo, hi)), either many
    whole small tensors or one slice of a large one. ``segs[b]``: batch b's noise chunks
    ``(chunk key, offset in the batch, elements needed, elements filled)``.
    """

    def __init__(self, numels, indices, device):
        self.batches, cur, total = [], [], 0
        for k, n in enumerate(numels):
            if n == 0:
                continue
            if n > _C:
                self.batches += [[(k, lo, min(n, lo + BATCH))] for lo in range(0, n, BATCH)]
                continue
            if total + n > BATCH:
                self.batches.append(cur)
                cur, total = [], 0
            cur.append((k, 0, n))
            total += n
        if cur:
            self.batches.append(cur)
        self.totals = [sum(hi - lo for _, lo, hi in parts) for parts in self.batches]
        self.sizes = [[hi - lo for _, lo, hi in parts] for parts in self.batches]
        self.segs = [self._segments(parts, indices) for parts in self.batches]
        self.device = device
        self._buffers = {}
        self._views = {}
        self._philox = {}

    @staticmethod
    def _segments(parts, indices):
        segs, off = [], 0
        for k, lo, hi in parts:
            base = indices[k] * (PARAM_SLOT // _C)  # PARAM_SLOT is a multiple of the chunk
            for c in range(lo // _C, -(-hi // _C)):
                need = min(hi, (c + 1) * _C) - c * _C
                segs.append((base + c, off + c * _C - lo, need, min(_C, max(16, -(-need // 16) * 16))))
            off += hi - lo
        return segs

    def buffer(self, name: str, n: int) -> torch.Tensor:
        """This plan's flat fp32 buffer ``name``, first ``n`` elements (16 spare for the last fill)."""
        buf = self._buffers.get(name)
        if buf is None:
            buf = self._buffers[name] = torch.empty(max(self.totals) + 16, dtype=torch.float32, device=self.device)
        return buf[:n]

    def views(self, name: str, b: int) -> List[torch.Tensor]:
        """Buffer ``name`` split into batch ``b``'s parts (cached: the buffers live as long as the plan)."""
        key = (name, b)
        v = self._views.get(key)
        if v is None:
            v = self._views[key] = list(self.buffer(name, self.totals[b]).split(self.sizes[b]))
        return v

    def philox_gather(self, b: int):
        """(Philox group counters, positions of batch b's normals in their 4-wide output): cached."""
        got = self._philox.get(b)
        if got is None:
            counters, pos, g0 = [], [], 0
            for key, off, need, _ in self.segs[b]:
                start = key * _C  # the segment's first global element, a multiple of 4
                groups = -(-need // 4)
                counters.append(torch.arange(start // 4, start // 4 + groups, dtype=torch.int64))
                pos.append(torch.arange(4 * g0, 4 * g0 + need, dtype=torch.int64))
                g0 += groups
            got = self._philox[b] = (torch.cat(counters).to(self.device), torch.cat(pos).to(self.device))
        return got


_PLANS = threading.local()


def _plan(numels, indices, device) -> _Plan:
    cache = getattr(_PLANS, "cache", None)
    if cache is None:
        cache = _PLANS.cache = {}
    key = (device, tuple(numels), tuple(indices))
    plan = cache.get(key)
    if plan is None:
        if len(cache) >= 16:
            cache.clear()
        plan = cache[key] = _Plan(numels, indices, device)
    return plan


def _draw_torch(z: torch.Tensor, segs, seed_int: int, std: float) -> None:
    """Fill ``z`` with ``std ·`` the torch stream's normals of ``segs``, over torch's threads.

    A fill rounds up to 16 values (``torch_chunk_normal``), spilling into the next segment's
    place, which that segment's own fill then overwrites: so a thread's last spilling segment is
    drawn into its scratch buffer instead (its successor may belong to another thread).
    """
    total = z.numel() - 16
    workers = 1 if torch.compiler.is_compiling() else min(torch.get_num_threads(), len(segs), total // MIN_DRAW_PER_WORKER)
    if workers <= 1:
        _draw_range(z, segs, seed_int, std, z.numel())
        return
    cuts = [0]
    for w in range(1, workers):  # balance elements, not segments
        target = total * w // workers
        first = next((s for s, seg in enumerate(segs) if seg[1] >= target), len(segs))
        cuts.append(min(len(segs), max(cuts[-1] + 1, first)))
    cuts.append(len(segs))
    ranges = [(cuts[w], cuts[w + 1]) for w in range(workers) if cuts[w] < cuts[w + 1]]
    ends = [segs[b][1] if b < len(segs) else z.numel() for _, b in ranges]
    futures = [_pool().submit(_draw_range, z, segs[a:b], seed_int, std, end) for (a, b), end in zip(ranges[1:], ends[1:])]
    _draw_range(z, segs[ranges[0][0] : ranges[0][1]], seed_int, std, ends[0])
    for f in futures:
        f.result()


def _draw_range(z, segs, seed_int, std, end):
    gen, buf = cpu_scratch()
    for key, off, need, fill in segs:
        if off + fill <= end:
            torch_chunk_normal(seed_int, key, z[off : off + fill], gen, needed=fill, std=std)
        else:
            torch_chunk_normal(seed_int, key, buf, gen, needed=need, std=std)
            z[off : off + need].copy_(buf[:need])


def _noise(plan, b, z, seed, rng, std, injected_parts):
    """Batch ``b``'s noise in ``z`` (its first ``plan.totals[b]`` elements are used)."""
    n = plan.totals[b]
    if injected_parts is not None:
        torch.cat(injected_parts, out=z[:n])
    elif rng == "philox":
        counter, pos = plan.philox_gather(b)
        z4 = torch.stack(philox_randn4x(seed.to(plan.device), counter), dim=1).reshape(-1)
        torch.index_select(z4, 0, pos, out=z[:n])
    else:
        _draw_torch(z, plan.segs[b], seed, std)
        return z[:n]
    return z[:n] if std == 1.0 else z[:n].mul_(std)


@torch.no_grad()
def optim_update_torch(
    method: int,
    params: List[torch.Tensor],
    grads: List[torch.Tensor],
    masters: List[torch.Tensor],
    states: List[torch.Tensor],
    indices: List[int],
    seed: torch.Tensor,
    scalars: tuple,
    has_noise: bool,
    rng: str,
    injected: Optional[List[torch.Tensor]] = None,
) -> None:
    """Update ``params`` (and ``masters``, ``states``) in place. Tensors contiguous, one device.

    ``scalars``: ``(lr, gscale, prior, nscale, a1, a2, eps)`` (floats, see the module docstring).
    """
    if not params:
        return
    device = params[0].device
    if rng == "torch" and device.type != "cpu":
        raise ValueError(f"rng='torch' draws from torch's CPU generator; use rng='philox' on {device.type}")
    if not masters and params[0].dtype != torch.float32:
        raise ValueError(f"16-bit parameters need fp32 master copies, got {params[0].dtype} without")
    lr, gscale, prior, nscale, a1, a2, eps = scalars
    theta = [t.view(-1) for t in (masters if masters else params)]
    flat_g = [g.view(-1) for g in grads]
    st = [s.view(-1) for s in states]
    flat_p = [p.view(-1) for p in params] if masters else None
    inj = [t.reshape(-1) for t in injected] if injected is not None else None
    plan = _plan([t.numel() for t in theta], indices, device)
    # SGLD and SGHMC have a scalar noise scale: fold it into the draw. pSGLD scales per element.
    std = 1.0 if method == PSGLD else nscale
    noise_arg = seed
    if has_noise and injected is None and rng == "torch":
        noise_arg = int(seed.reshape(()).item())  # once per call (CPU)
    g_is_fp32 = grads[0].dtype == torch.float32
    for b, parts in enumerate(plan.batches):
        n = plan.totals[b]
        a, bb = plan.buffer("a", n), plan.buffer("b", n)
        z = None
        if has_noise:
            inj_parts = None if inj is None else [inj[k][lo:hi] for k, lo, hi in parts]
            z = _noise(plan, b, plan.buffer("z", n + 16), noise_arg, rng, std, inj_parts)
        if len(parts) == 1:  # one slice of one tensor: work on its own memory
            k, lo, hi = parts[0]
            th = theta[k][lo:hi]
            g = flat_g[k][lo:hi] if g_is_fp32 else plan.buffer("g", n).copy_(flat_g[k][lo:hi])
            s = st[k][lo:hi] if st else None
            _update_flat(method, th, g, s, z, a, bb, lr, gscale, prior, nscale, a1, a2, eps)
            if flat_p is not None:
                flat_p[k][lo:hi].copy_(th)
            continue
        ks = [k for k, _, _ in parts]
        th = torch.cat([theta[k] for k in ks], out=plan.buffer("theta", n))
        g = torch.cat([flat_g[k] for k in ks], out=plan.buffer("g", n))
        s = torch.cat([st[k] for k in ks], out=plan.buffer("state", n)) if st else None
        _update_flat(method, th, g, s, z, a, bb, lr, gscale, prior, nscale, a1, a2, eps)
        th_parts = plan.views("theta", b)
        torch._foreach_copy_([theta[k] for k in ks], th_parts)
        if s is not None:
            torch._foreach_copy_([st[k] for k in ks], plan.views("state", b))
        if flat_p is not None:
            torch._foreach_copy_([flat_p[k] for k in ks], th_parts)
