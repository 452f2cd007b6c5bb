"""PyTorch fallback of the fused DSM loss — runs anywhere, and is the kernels' oracle.

    perturb:   x̃ = α · x + σ · z
    loss:      ℓ_i = ½ · λ_i · Σ_j (s_ij + z_ij · (1/σ_i))²
    backward:  ∂ℓ/∂s_ij = c_i · (s_ij + z_ij · (1/σ_i)),   c_i = λ_i · ∂L/∂ℓ_i

Same semantics as ``kernels/dsm.py``: per-row scales come as ``[B]`` tensors in the compute
dtype (fp32, fp64 for float64 inputs), the elementwise arithmetic is the kernels' (same
operations in the same order, so perturb and backward match the interpreted kernels bitwise
in fp32), and z is regenerated from the seed in every pass, never stored.

Like ``langevin_step_torch`` it walks the flat tensor in chunks aligned to the *global* element
index (:func:`fastlangevin.fallback.chunks.for_pieces`, the one walk): the noise of a chunk
(rng="torch": one reseeded torch generator per chunk; rng="philox": the kernels' counter-based
stream; see :mod:`fastlangevin._rng`) never depends on the batch size, only
chunk-sized temporaries exist, and on CPU the chunks are spread over torch's threads. Per-row
sums of the loss are taken piece by piece with a fixed-order reduction (:func:`row_sums`) and
accumulated in index order, so a row's loss is bitwise independent of the batch size and of
the number of threads.
"""

from __future__ import annotations

import functools
from typing import List, Optional, Tuple

import torch

from .. import _backend
from .chunks import for_pieces, mul_rows
from .langevin_step import scalar_tensor

#: Width of one level of :func:`row_sums`. Each level sums contiguous runs of this many
#: values; runs are far below torch's parallel grain (32768), so no reduction is ever split
#: across threads and the summation order is fixed.
ROW_SUM_WIDTH = 1024


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


def piece_blocks(i0: int, i1: int, row_size: int) -> List[Tuple[int, int, int, int]]:
    """``[(first_row, n_rows, start, length)]``: local elements ``[i0, i1)`` cut at row ends — a
    partial head row, whole rows (``n_rows`` of ``length = row_size`` from ``start``), a partial
    tail row — the blocks whose :func:`row_sums` make a piece's partial sums."""
    out = []
    pos = i0
    if pos % row_size:  # a row begun in an earlier piece
        r = pos // row_size
        end = min(i1, (r + 1) * row_size)
        out.append((r, 1, pos, end - pos))
        pos = end
    n_full = (i1 - pos) // row_size
    if n_full:
        out.append((pos // row_size, n_full, pos, row_size))
        pos += n_full * row_size
    if pos < i1:  # a row continued in the next piece
        out.append((pos // row_size, 1, pos, i1 - pos))
    return out


def piece_row_sums(vals: torch.Tensor, i0: int, row_size: int) -> List[Tuple[int, torch.Tensor]]:
    """``[(first_row, sums)]``: sums of the flat values ``vals`` (local elements
    ``[i0, i0 + len)``) per row they fall in (:func:`piece_blocks`)."""
    return [
        (r, row_sums(vals[a - i0 : a - i0 + k * n].view(k, n)))
        for r, k, a, n in piece_blocks(i0, i0 + vals.numel(), row_size)
    ]


@functools.lru_cache(maxsize=32)
@_backend.kept
def _split_rows_plan(n: int, row_size: int, elem_offset: int, rng: str, device_type: str):
    """Where the piece grid of :func:`for_pieces` cuts rows of a flat ``[n]`` tensor: ``(rows,
    depth, groups)`` — the cut rows (an index tensor), the most pieces one of them spans, and per
    fragment length ``n_f``: (local starts, slots ``row_position * depth + order``) of the
    fragments of that length."""
    blocks = for_pieces(
        lambda i0, i1, _: piece_blocks(i0, i1, row_size), 0, n, elem_offset=elem_offset, rng=rng,
        device=torch.device(device_type), with_noise=False,
    )  # fmt: skip
    frags: dict = {}  # row -> [(start, length)] in index order
    for piece in blocks:
        for r, k, a, m in piece:
            if m != row_size:
                frags.setdefault(r, []).append((a, m))
    rows = sorted(frags)
    depth = max((len(frags[r]) for r in rows), default=0)
    groups: dict = {}
    for pos, r in enumerate(rows):
        for order, (a, m) in enumerate(frags[r]):
            starts, slots = groups.setdefault(m, ([], []))
            starts.append(a)
            slots.append(pos * depth + order)
    as_index = lambda v: torch.tensor(v, dtype=torch.int64)  # noqa: E731
    return as_index(rows), depth, [(m, as_index(a), as_index(sl)) for m, (a, sl) in groups.items()]


def grid_row_sums(sq: torch.Tensor, row_size: int, elem_offset: int, rng: str) -> torch.Tensor:
    """The ``[B]`` row totals of a flat ``[B * row_size]`` tensor exactly as :func:`for_pieces` /
    :func:`piece_row_sums` / :func:`_accumulate_rows` take them (the same partial sums, added in
    the same order), in a few whole-tensor ops instead of some per piece: whole rows by one
    :func:`row_sums`, the rows the piece grid cuts from their fragments gathered per length
    (one :func:`row_sums` each), folded in index order (``0 + a`` and ``a + 0`` are ``a`` for
    the non-negative sums of squares summed here)."""
    n = sq.numel()
    q = row_sums(sq.view(n // row_size, row_size))
    rows, depth, groups = _split_rows_plan(n, row_size, elem_offset, rng, sq.device.type)
    if depth == 0:
        return q
    parts = []
    for m, starts, _ in groups:
        parts.append(row_sums(sq.unfold(0, m, 1).index_select(0, starts.to(sq.device))))
    slots = torch.cat([sl for _, _, sl in groups]).to(sq.device)
    table = torch.zeros(rows.numel() * depth, dtype=sq.dtype, device=sq.device)
    table[slots] = torch.cat(parts)
    table = table.view(rows.numel(), depth)
    folded = table[:, 0]
    for j in range(1, depth):
        folded = folded + table[:, j]
    return q.index_copy_(0, rows.to(sq.device), folded)


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
        t = mul_rows(z.to(cdt), sigma_rows, i0, i1, row_size)
        xs = x[i0:i1].to(cdt)
        if alpha_rows is not None:
            xs = mul_rows(xs, alpha_rows, i0, i1, row_size)
        out[i0:i1].copy_(t.add_(xs))  # σz + αx: the kernel's αx + σz (addition commutes bitwise)

    for_pieces(body, seed, x.numel(), elem_offset=elem_offset, rng=rng, device=x.device, injected_noise=injected_noise)
    return out


def _residual(score, z, inv_sigma_rows, i0, i1, row_size, cdt):
    """``s + z / σ`` for flat elements ``[i0, i1)`` in ``cdt`` (z·(1/σ) first, as the kernels)."""
    r = mul_rows(z.to(cdt), inv_sigma_rows, i0, i1, row_size)
    return r.add_(score[i0:i1].to(cdt))


def _accumulate_rows(pieces, n_rows: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[n_rows]`` totals of :func:`piece_row_sums`' partial sums, added in index order (a
    fixed order, whatever the threading). A batch that is one piece of whole rows is its own
    total: ``0 + q`` is ``q`` bitwise for the non-negative sums of squares summed here."""
    if len(pieces) == 1 and len(pieces[0]) == 1 and pieces[0][0][0] == 0 and pieces[0][0][1].shape[0] == n_rows:
        return pieces[0][0][1]
    q = torch.zeros(n_rows, dtype=dtype, device=device)
    for piece in pieces:
        for r, sums in piece:
            q[r : r + sums.shape[0]] += sums
    return q


def _half_weighted(sums: torch.Tensor, weight_rows) -> torch.Tensor:
    """``(q · λ) · ½`` in place: the loss from the sums of squares (½ as a cached 0-d tensor, bitwise
    the Python scalar, which ATen casts to the op's dtype too)."""
    return sums.mul_(weight_rows).mul_(scalar_tensor(0.5, sums.dtype))


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

    pieces = for_pieces(
        body, seed, score.numel(), elem_offset=elem_offset, rng=rng, device=score.device, injected_noise=injected_noise
    )
    return _half_weighted(_accumulate_rows(pieces, inv_sigma_rows.shape[0], cdt, score.device), weight_rows)


def residual_loss_rows_(
    r: torch.Tensor, score: torch.Tensor, weight_rows, elem_offset: int, rng: str, one_piece: bool = False
) -> torch.Tensor:
    """The loss of :func:`dsm_loss_rows_torch` from ``r = z · (1/σ)`` (``[B, ...]``, compute
    dtype, contiguous), completed in place into the residual ``r = s + z · (1/σ)``: one pass
    adds the score, then the squares are summed on the same piece grid (``rng``'s chunks), so
    the ``[B]`` losses are bitwise that op's, whatever the batch size or offset.

    ``one_piece``: the caller knows r is one piece of whole rows of that walk (one noise chunk,
    at most ``CPU_PIECE`` elements on CPU, ``elem_offset`` on a row start): its row sums are then
    taken directly. ``weight_rows``: ``[B]`` or 0-d."""
    r.add_(score)  # score upcast to r's dtype: the op's s.to(cdt) + z·(1/σ), bitwise
    if one_piece:
        sq = r * r
        sums = row_sums(sq if sq.dim() == 2 else sq.view(r.shape[0], -1))
    else:
        sums = grid_row_sums((r * r).view(-1), r[0].numel(), elem_offset, rng)
    return _half_weighted(sums, weight_rows)


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
        grad[i0:i1].copy_(mul_rows(r, coef_rows.to(cdt), i0, i1, row_size))

    for_pieces(
        body, seed, score.numel(), elem_offset=elem_offset, rng=rng, device=score.device, injected_noise=injected_noise
    )
    return grad
