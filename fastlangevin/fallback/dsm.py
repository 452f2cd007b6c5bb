"""PyTorch fallback of the fused DSM loss — runs anywhere, and is the kernels' oracle.

    perturb:   x̃ = α · x + σ · z
    loss:      ℓ_i = ½ · λ_i · Σ_j (s_ij + z_ij · (1/σ_i))²
    backward:  ∂ℓ/∂s_ij = c_i · (s_ij + z_ij · (1/σ_i)),   c_i = λ_i · ∂L/∂ℓ_i

Same semantics as ``kernels/dsm.py``: per-row scales come as ``[B]`` tensors in the compute
dtype (fp32, fp64 for float64 inputs), the elementwise arithmetic is the kernels' (same
operations in the same order, so perturb and backward match the interpreted kernels bitwise
in fp32), and z is regenerated from the seed in every pass, never stored.

Like ``langevin_step_torch`` it walks the flat tensor in chunks aligned to the *global* element
index (:func:`for_pieces`): the noise of a chunk (rng="torch": one reseeded torch generator per
chunk; rng="philox": the kernels' counter-based stream) never depends on the batch size, only
chunk-sized temporaries exist, and on CPU the chunks are spread over torch's threads. Per-row
sums of the loss are taken piece by piece with a fixed-order reduction (:func:`row_sums`) and
accumulated in index order, so a row's loss is bitwise independent of the batch size and of
the number of threads.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple, TypeVar

import torch

from .._rng import TORCH_RNG_CHUNK, philox_normal, torch_chunk_normal
from .._validate import Scale
from .langevin_step import _CPU_PIECE, PHILOX_CHUNK, _cpu_scratch, _pool, _workers, scale_slice

T = TypeVar("T")

#: Width of one level of :func:`row_sums`. Each level sums contiguous runs of this many
#: values; runs are far below torch's parallel grain (32768), so no reduction is ever split
#: across threads and the summation order is fixed.
ROW_SUM_WIDTH = 1024


def for_pieces(
    body: Callable[[int, int, torch.Tensor], T],
    seed: torch.Tensor,
    n: int,
    *,
    elem_offset: int,
    rng: str,
    device: torch.device,
    injected_noise: Optional[torch.Tensor] = None,
) -> List[T]:
    """Call ``body(i0, i1, z)`` for every piece of local flat elements ``[i0, i1)`` with its
    noise ``z``, and return the results in index order.

    Pieces are cut on a grid of the *global* index (noise chunks, and on CPU sub-pieces below
    ATen's parallel grain), so they never depend on the batch size. On CPU with rng="torch",
    chunks are split across torch's intra-op threads (each chunk has its own generator;
    torch ops release the GIL) — the results are identical to the serial loop. ``z`` is float32
    (or the injected noise's slice) and may be a reused buffer: use it before returning.
    """
    if rng not in ("torch", "philox"):
        raise ValueError(f"rng must be 'torch' or 'philox', got {rng!r}")
    if rng == "torch" and device.type != "cpu":
        raise ValueError(f"rng='torch' draws from torch's CPU generator; use rng='philox' on {device.type}")
    if n == 0:
        return []
    C = TORCH_RNG_CHUNK if rng == "torch" else PHILOX_CHUNK
    first, last = elem_offset // C, (elem_offset + n - 1) // C + 1
    seed_int = (
        int(seed.reshape(()).item()) if rng == "torch" and injected_noise is None else None
    )  # CPU: no device sync
    # CPU: pieces below ATen's grain run serially inside worker threads (no OpenMP team per
    # thread oversubscribing the cores) and keep every reduction single-threaded.
    piece = _CPU_PIECE if device.type == "cpu" else C

    @torch.no_grad()  # plain arithmetic inside an op; worker threads do not inherit the
    def run(k0: int, k1: int) -> List[T]:  # caller's thread-local autograd state
        if seed_int is not None:  # this thread's reused generator and one-chunk noise buffer
            gen, buf, _ = _cpu_scratch(torch.float32)
        results = []
        for k in range(k0, k1):
            g0, g1 = max(k * C, elem_offset), min((k + 1) * C, elem_offset + n)
            z = None
            if injected_noise is None:
                if seed_int is not None:
                    torch_chunk_normal(seed_int, k, buf, gen, needed=g1 - k * C)
                    z = buf[g0 - k * C : g1 - k * C]
                else:
                    z = philox_normal(seed, g0, g1 - g0)
            for pb in range(k * C, (k + 1) * C, piece):
                p0, p1 = max(pb, g0), min(pb + piece, g1)
                if p0 >= p1:
                    continue
                i0, i1 = p0 - elem_offset, p1 - elem_offset
                zp = injected_noise[i0:i1] if z is None else z[p0 - g0 : p1 - g0]
                results.append(body(i0, i1, zp))
        return results

    workers = _workers(device, last - first) if seed_int is not None else 1
    if workers <= 1:
        return run(first, last)
    bounds = [first + (last - first) * w // workers for w in range(workers + 1)]
    futures = [_pool().submit(run, bounds[w], bounds[w + 1]) for w in range(workers)]
    return [r for f in futures for r in f.result()]


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


def piece_row_sums(vals: torch.Tensor, i0: int, row_size: int) -> List[Tuple[int, torch.Tensor]]:
    """``[(first_row, sums)]``: sums of the flat values ``vals`` (local elements
    ``[i0, i0 + len)``) per row they fall in — a partial head row, full rows, a partial tail."""
    i1 = i0 + vals.numel()
    out = []
    pos = i0
    if pos % row_size:  # a row begun in an earlier piece
        r = pos // row_size
        end = min(i1, (r + 1) * row_size)
        out.append((r, row_sums(vals[: end - i0].view(1, -1))))
        pos = end
    n_full = (i1 - pos) // row_size
    if n_full:
        out.append((pos // row_size, row_sums(vals[pos - i0 : pos - i0 + n_full * row_size].view(n_full, row_size))))
        pos += n_full * row_size
    if pos < i1:  # a row continued in the next piece
        out.append((pos // row_size, row_sums(vals[pos - i0 :].view(1, -1))))
    return out


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

    def body(i0, i1, z):
        t = z.to(cdt).mul(scale_slice(_rows(sigma_rows), i0, i1, row_size, cdt))
        xs = x[i0:i1].to(cdt)
        if alpha_rows is not None:
            xs = xs.mul(scale_slice(_rows(alpha_rows), i0, i1, row_size, cdt))
        out[i0:i1].copy_(t.add_(xs))  # σz + αx: the kernel's αx + σz (addition commutes bitwise)

    for_pieces(body, seed, x.numel(), elem_offset=elem_offset, rng=rng, device=x.device, injected_noise=injected_noise)
    return out


def _residual(score, z, inv_sigma_rows, i0, i1, row_size, cdt):
    """``s + z / σ`` for flat elements ``[i0, i1)`` in ``cdt`` (z·(1/σ) first, as the kernels)."""
    r = z.to(cdt).mul(scale_slice(_rows(inv_sigma_rows), i0, i1, row_size, cdt))
    return r.add_(score[i0:i1].to(cdt))


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

    def body(i0, i1, z):
        r = _residual(score, z, inv_sigma_rows, i0, i1, row_size, cdt)
        return piece_row_sums(r.mul_(r), i0, row_size)

    q = torch.zeros(inv_sigma_rows.shape[0], dtype=cdt, device=score.device)
    # accumulate the pieces' row sums in index order: a fixed order, whatever the threading
    for piece in for_pieces(
        body, seed, score.numel(), elem_offset=elem_offset, rng=rng, device=score.device, injected_noise=injected_noise
    ):
        for r, sums in piece:
            q[r : r + sums.shape[0]] += sums
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

    def body(i0, i1, z):
        r = _residual(score, z, inv_sigma_rows, i0, i1, row_size, cdt)
        grad[i0:i1].copy_(r.mul_(scale_slice(_rows(coef_rows), i0, i1, row_size, cdt)))

    for_pieces(
        body, seed, score.numel(), elem_offset=elem_offset, rng=rng, device=score.device, injected_noise=injected_noise
    )
    return grad
