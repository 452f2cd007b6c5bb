"""Triton kernels for the fused denoising score-matching loss (installed as ``fastlangevin.kernels.dsm``).

    perturb:   x̃ = α · x + σ · z                           (z ~ N(0, I) drawn in-kernel)
    loss:      ℓ_i = ½ · λ_i · Σ_j (s_ij + z_ij · (1/σ_i))²  (z regenerated from the same seed)
    backward:  ∂ℓ/∂s_ij = c_i · (s_ij + z_ij · (1/σ_i)),  c_i = λ_i · ∂L/∂ℓ_i   (z regenerated again)

The noise is never written to memory: all three passes draw element ``i``'s normal from the
same Philox counter (output ``i % 4`` of ``fast_randn4x(seed, i // 4)`` (tiles), ``i`` the global flat
index, as in ``langevin_step``), so the backward pass sees exactly the forward's z.

Per-row scales (α, σ, 1/σ, λ, c) arrive as ``[B]`` tensors in the compute dtype; the op layer
builds them (a few [B]-sized ops), so the kernels have a single code path and the PyTorch
fallback reproduces their arithmetic exactly (same operations, same order).

The loss is a per-row reduction: a 2-D grid (row, column chunk) writes one partial sum per
program into a ``[B, n_chunks]`` buffer, then a tiny kernel (one program per row) sums a row's
partials in a fixed order. No atomics: bitwise reproducible, and a row's loss never depends on
the batch size (the chunking depends on the row length only).
"""

import functools

import triton
import triton.language as tl

from .row_tiles import lanes_busy, row_grid_block, row_options, row_sum, row_tile, rows_aligned
from .tiles import (
    BLOCK_INTERPRETER,
    FLAT_BLOCK_GPU,
    FLAT_WARPS_GPU,
    MAGIC_DIVIDEND_LIMIT,
    flat_launch,
    flat_tile,
    launch_options,
    magic_rows,
    normal_tile,
    row_launch,
    row_magic,
    stream_elems_per_warp,
    stream_warps,
    tile_load,
    tile_rows,
    tile_store,
    widen,
)

# Launch shapes live in .tiles: perturb is elementwise (the flat launch); the row kernels cover
# at most FLAT_BLOCK_GPU columns of one row per program, short rows a smaller power-of-two block
# (never below MIN_ROW_BLOCK so a program still feeds a few lanes).
BLOCK_GPU, NUM_WARPS_GPU = FLAT_BLOCK_GPU, FLAT_WARPS_GPU
MIN_ROW_BLOCK = 16
#: Perturb uses the row grid (σ, α one load per program, no per-element row division) when at least
#: this fraction of its GPU lanes hold an element (a 3·32·32 row: all of them; 28·28:
#: 77 %); else the flat grid, which gathers σ and α per element but idles no lane.
ROW_GRID_MIN_BUSY = 0.75
#: CUDA's limit on the second grid dimension (the chunks of a row).
MAX_GRID_Y = 65535


@triton.jit
def _noise(
    seed_ptr,
    noise_ptr,
    local,
    mask,
    first_group,
    NOISE_FROM_PTR: tl.constexpr,
    COMPUTE: tl.constexpr,
    GROUPS: tl.constexpr,
    VEC: tl.constexpr,
    LANES: tl.constexpr,
):
    if NOISE_FROM_PTR:
        z = tile_load(noise_ptr + local, mask, LANES).to(COMPUTE)
    else:
        z = normal_tile(seed_ptr, first_group, GROUPS, VEC, LANES).to(COMPUTE)
    return z


@triton.jit
def _perturb_tile(
    x_ptr, out_ptr, seed_ptr, noise_ptr, start, offs, mask, first_group, alpha, sigma,
    HAS_ALPHA: tl.constexpr, NOISE_FROM_PTR: tl.constexpr, COMPUTE: tl.constexpr, GROUPS: tl.constexpr,
    VEC: tl.constexpr, LANES: tl.constexpr,
):  # fmt: skip
    """x̃ = α x + σ z on the tile of local elements ``start + offs`` (α, σ: scalars or per element).
    LANES: the tile starts mid-way into a Philox group (tiles.tile_load)."""
    # No `other=`: masked lanes are never stored, so they need no defined value.
    x = widen(tile_load(x_ptr + start + offs, mask, LANES), COMPUTE)
    z = _noise(seed_ptr, noise_ptr + start, offs, mask, first_group, NOISE_FROM_PTR, COMPUTE, GROUPS, VEC, LANES)
    if HAS_ALPHA:
        out = alpha * x + sigma * z
    else:
        out = x + sigma * z
    tile_store(out_ptr + start + offs, out.to(out_ptr.dtype.element_ty), mask, LANES)


@triton.jit
def _dsm_perturb_kernel(
    x_ptr,
    out_ptr,
    seed_ptr,
    noise_ptr,  # injected noise (test hook) when NOISE_FROM_PTR, else unused
    alpha_ptr,  # [B] compute dtype, unused unless HAS_ALPHA
    sigma_ptr,  # [B] compute dtype
    row_size,
    elem_offset,
    HEAD: tl.constexpr,  # 0: every row starts on a Philox group (row_tiles: ROWS_ALIGNED); 1: not
    HAS_ALPHA: tl.constexpr,
    NOISE_FROM_PTR: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK: tl.constexpr,
    VEC: tl.constexpr,
):
    """A (row, chunk) grid (when ROW_GRID_MIN_BUSY allows): σ and α are one load per program."""
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1).to(tl.int64)
    base, offs, mask, first_group, _ = row_tile(row, chunk, row_size, elem_offset, BLOCK, HEAD == 0, VEC)
    sigma = tl.load(sigma_ptr + row).to(COMPUTE)
    alpha = tl.load(alpha_ptr + row).to(COMPUTE) if HAS_ALPHA else sigma
    _perturb_tile(
        x_ptr, out_ptr, seed_ptr, noise_ptr, base, offs, mask, first_group, alpha, sigma,
        HAS_ALPHA, NOISE_FROM_PTR, COMPUTE, BLOCK // 4, VEC, HEAD != 0 and VEC == 4,
    )  # fmt: skip


@triton.jit
def _row_scale(
    ptr, rows, mask, left, EVEN: tl.constexpr, LANES: tl.constexpr, VEC: tl.constexpr, COMPUTE: tl.constexpr
):
    """The per-row scale ``ptr[rows]`` of a flat tile: per element, or per tile row where ``rows`` is ``[R, 1]``
    (tiles.magic_rows' PER_TILE_ROW: valid where the tile row's first element is)."""
    if EVEN:
        r = tile_load(ptr + rows, None, LANES)
    elif rows.shape[1] == 1:
        r = tl.load(ptr + rows, mask=tl.arange(0, rows.shape[0])[:, None] * VEC < left, other=0.0)
    else:
        r = tile_load(ptr + rows, mask, LANES, 0.0)
    return r.to(COMPUTE)


@triton.jit
def _perturb_rows_tile(
    x_ptr, out_ptr, seed_ptr, noise_ptr, alpha_ptr, sigma_ptr, start, offs, mask, left, rows, first_group,
    HAS_ALPHA: tl.constexpr, NOISE_FROM_PTR: tl.constexpr, COMPUTE: tl.constexpr, GROUPS: tl.constexpr,
    VEC: tl.constexpr, LANES: tl.constexpr, EVEN: tl.constexpr,
):  # fmt: skip
    """:func:`_perturb_tile` with σ (and α) gathered by row; EVEN: every element of the tile is valid."""
    m = None if EVEN else mask
    sigma = _row_scale(sigma_ptr, rows, mask, left, EVEN, LANES, VEC, COMPUTE)
    alpha = _row_scale(alpha_ptr, rows, mask, left, EVEN, LANES, VEC, COMPUTE) if HAS_ALPHA else sigma
    _perturb_tile(
        x_ptr, out_ptr, seed_ptr, noise_ptr, start, offs, m, first_group, alpha, sigma,
        HAS_ALPHA, NOISE_FROM_PTR, COMPUTE, GROUPS, VEC, LANES,
    )  # fmt: skip


@triton.jit
def _dsm_perturb_flat_kernel(
    x_ptr,
    out_ptr,
    seed_ptr,
    noise_ptr,
    alpha_ptr,
    sigma_ptr,
    n_elements,
    row_size,
    group_offset,
    div_magic,  # tiles.row_magic(row_size) when ROW_DIV is 1 or 2, else unused
    HEAD: tl.constexpr,
    HAS_ALPHA: tl.constexpr,
    NOISE_FROM_PTR: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK: tl.constexpr,
    VEC: tl.constexpr,
    DIV32: tl.constexpr = False,
    ROW_DIV: tl.constexpr = 0,
    ROW_SHIFT: tl.constexpr = 0,
):
    """Short rows: a flat grid (a row grid would leave most lanes idle); σ and α gathered by row. The row of an
    element as the step's per-row scales find it (kernels/langevin_step.py): ROW_DIV 0 a division
    (tiles.tile_rows), 1 a multiply-high per element, 2 per tile row (tiles.magic_rows: rows a multiple of VEC,
    a group-aligned start), 3 a shift (rows of 2**ROW_SHIFT). Only the launch's partial tiles (the last one;
    program 0 too with a mid-group start) take masked accesses: the other tiles run an unmasked copy of the body,
    which ptxas lays out as the hot one (the masked copy comes first)."""
    start, offs, mask, first_group = flat_tile(group_offset, n_elements, HEAD, BLOCK, VEC)
    LANES: tl.constexpr = HEAD != 0 and VEC == 4
    if ROW_DIV == 0:
        rows = tile_rows(start, offs, row_size, DIV32)
    elif ROW_DIV == 3:
        rows = (start >> ROW_SHIFT).to(tl.int32) + (offs >> ROW_SHIFT)
    else:
        rows = magic_rows(start, offs, div_magic, ROW_DIV == 2)
    left = tl.minimum(n_elements - start, BLOCK).to(tl.int32)  # the tile's elements in the tensor
    if HEAD != 0:
        masked = (tl.program_id(0) == 0) | (left < BLOCK)
    else:
        masked = left < BLOCK
    if masked:
        _perturb_rows_tile(
            x_ptr, out_ptr, seed_ptr, noise_ptr, alpha_ptr, sigma_ptr, start, offs, mask, left, rows, first_group,
            HAS_ALPHA, NOISE_FROM_PTR, COMPUTE, BLOCK // 4, VEC, LANES, False,
        )  # fmt: skip
    else:
        _perturb_rows_tile(
            x_ptr, out_ptr, seed_ptr, noise_ptr, alpha_ptr, sigma_ptr, start, offs, mask, left, rows, first_group,
            HAS_ALPHA, NOISE_FROM_PTR, COMPUTE, BLOCK // 4, VEC, LANES, True,
        )  # fmt: skip


@triton.jit
def _dsm_loss_partial_kernel(
    score_ptr,
    partial_ptr,  # [B, n_chunks] compute dtype
    seed_ptr,
    noise_ptr,
    inv_sigma_ptr,  # [B] compute dtype: 1/σ_i
    row_size,
    n_chunks,
    elem_offset,
    NOISE_FROM_PTR: tl.constexpr,
    ROWS_ALIGNED: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK: tl.constexpr,
    VEC: tl.constexpr,
):
    GROUPS: tl.constexpr = BLOCK // 4
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1).to(tl.int64)
    base, offs, mask, first_group, hi = row_tile(row, chunk, row_size, elem_offset, BLOCK, ROWS_ALIGNED, VEC)

    LANES: tl.constexpr = not ROWS_ALIGNED and VEC == 4  # rows start mid-group: tiles.tile_load
    # Masked lanes are left out of the sum (row_sum), so the loads need no `other=`.
    s = widen(tile_load(score_ptr + base + offs, mask, LANES), COMPUTE)
    inv_sigma = tl.load(inv_sigma_ptr + row).to(COMPUTE)
    z = _noise(seed_ptr, noise_ptr + base, offs, mask, first_group, NOISE_FROM_PTR, COMPUTE, GROUPS, VEC, LANES)
    r = s + z * inv_sigma
    part = row_sum(r * r, mask, hi, ROWS_ALIGNED, VEC)
    tl.store(partial_ptr + row * n_chunks + chunk, part)


@triton.jit
def _dsm_loss_reduce_kernel(partial_ptr, weight_ptr, out_ptr, n_chunks, CHUNKS: tl.constexpr):
    """ℓ_i = ½ · λ_i · Σ_c partial[i, c]: one program per row, a fixed summation order."""
    row = tl.program_id(0).to(tl.int64)
    idx = tl.arange(0, CHUNKS)
    p = tl.load(partial_ptr + row * n_chunks + idx, mask=idx < n_chunks, other=0.0)
    q = tl.sum(p, axis=0)
    w = tl.load(weight_ptr + row)
    tl.store(out_ptr + row, 0.5 * (w * q))


@triton.jit
def _dsm_loss_backward_kernel(
    score_ptr,
    grad_ptr,  # output ∂L/∂s, score's dtype
    seed_ptr,
    noise_ptr,
    inv_sigma_ptr,  # [B] compute dtype
    coef_ptr,  # [B] compute dtype: λ_i · ∂L/∂ℓ_i
    row_size,
    elem_offset,
    NOISE_FROM_PTR: tl.constexpr,
    ROWS_ALIGNED: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK: tl.constexpr,
    VEC: tl.constexpr,
):
    GROUPS: tl.constexpr = BLOCK // 4
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1).to(tl.int64)
    base, offs, mask, first_group, _ = row_tile(row, chunk, row_size, elem_offset, BLOCK, ROWS_ALIGNED, VEC)

    LANES: tl.constexpr = not ROWS_ALIGNED and VEC == 4  # rows start mid-group: tiles.tile_load
    s = widen(tile_load(score_ptr + base + offs, mask, LANES), COMPUTE)  # masked lanes are never stored
    inv_sigma = tl.load(inv_sigma_ptr + row).to(COMPUTE)
    coef = tl.load(coef_ptr + row).to(COMPUTE)
    z = _noise(seed_ptr, noise_ptr + base, offs, mask, first_group, NOISE_FROM_PTR, COMPUTE, GROUPS, VEC, LANES)
    g = coef * (s + z * inv_sigma)
    tile_store(grad_ptr + base + offs, g.to(grad_ptr.dtype.element_ty), mask, LANES)


# ---------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------
def _compute(dtype):
    import torch

    return tl.float64 if dtype == torch.float64 else tl.float32


# The launchers take contiguous tensors of any shape (the kernels see pointers and dtypes only, so a
# flat view and the tensor itself launch the same kernel on the same memory; a view costs ~2 µs of host
# time). Each launch's shape (grid, scalar arguments, constexprs and options) is one cached plan, a
# function of row length, offset, batch, dtypes and modes only: a training loop launches the same plans
# every step. Plans are shared: read-only.


def launch_dsm_perturb(
    x, out, seed, alpha_rows, sigma_rows, *, row_size, elem_offset=0, injected_noise=None, block=None
):
    """x̃ = α x + σ z. ``x``, ``out`` (and ``injected_noise``) contiguous, same numel; rows ``[B]`` tensors.
    ``block`` (tests): the BLOCK of whichever kernel runs (row grid or flat: ROW_GRID_MIN_BUSY)."""
    n = x.numel()
    if n == 0:
        return out
    flat, grid, scalars, consts = _perturb_plan(
        n,
        row_size,
        elem_offset,
        x.element_size() == 2,
        alpha_rows is not None,
        injected_noise is not None,
        sigma_rows.element_size() == 8,
        x.is_cpu,
        block,
    )
    # Unused pointer slots get sigma_rows (never dereferenced: a constexpr disables the load).
    (_dsm_perturb_flat_kernel if flat else _dsm_perturb_kernel)[grid](
        x,
        out,
        seed,
        injected_noise if injected_noise is not None else sigma_rows,
        alpha_rows if alpha_rows is not None else sigma_rows,
        sigma_rows,
        *scalars,
        **consts,
    )
    return out


def flat_row_div(n: int, row_size: int, elem_offset: int, vec: int) -> int:
    """How the flat perturb finds an element's row (its ROW_DIV): as the step's per-row scales do
    (kernels/langevin_step.py ``_launch_plan``): a multiply-high per element (1) below MAGIC_DIVIDEND_LIMIT
    elements, per tile row (2) where rows are whole tile rows from a group-aligned start, a shift (3) for rows
    of a power of two below VEC; a division (0) past the limit."""
    if n > MAGIC_DIVIDEND_LIMIT:
        return 0
    if elem_offset % 4 != 0:
        return 1
    if row_size % vec == 0:
        return 2
    return 3 if row_size & (row_size - 1) == 0 else 1


def flat_warps(row_div: int, vec: int, fp64: bool) -> int:
    """Warps of a compiled flat perturb on FLAT_BLOCK_GPU elements: 32 elements a thread (4 warps) with a row per
    element, 64 in 8-wide rows per tile row (2 warps), as the step's per-row scales (`fastlangevin kernels`:
    ``dsm-perturb-flat-*``); float64 keeps 8 warps (16 doubles a thread)."""
    if fp64:
        return FLAT_WARPS_GPU
    return stream_warps(FLAT_BLOCK_GPU, vec if row_div == 2 else 4)


@functools.lru_cache(maxsize=1024)
def _perturb_plan(n, row_size, elem_offset, half, has_alpha, noise_from_ptr, fp64, interpreted, block):
    """(flat grid?, grid, scalar arguments, constexprs and options) of the perturb launch over ``n``
    elements of ``row_size``-element rows (``half``: 16-bit x; ``fp64``: float64 compute)."""
    modes = dict(HAS_ALPHA=has_alpha, NOISE_FROM_PTR=noise_from_ptr, COMPUTE=tl.float64 if fp64 else tl.float32)
    vec = 8 if half else 4  # tiles.vec_for
    if vec == 8 and not rows_aligned(row_size, elem_offset, 8):  # row_tiles.row_vec
        vec = 4
    aligned = rows_aligned(row_size, elem_offset, vec)
    # a mid-group start has scalar accesses: 4-wide rows, loaded column by column (tiles.tile_load)
    flat_vec = (8 if half else 4) if elem_offset % 4 == 0 else 4
    head_room = 0 if aligned else 3
    gpu_block = row_grid_block(row_size + head_room)
    chunks = triton.cdiv(row_size + head_room, gpu_block)
    if lanes_busy(row_size + head_room, gpu_block) < ROW_GRID_MIN_BUSY or chunks > MAX_GRID_Y:
        row_div = flat_row_div(n, row_size, elem_offset, flat_vec)
        cfg = flat_launch(interpreted, n, elem_offset, block, flat_vec, flat_warps(row_div, flat_vec, fp64))
        consts = dict(
            HEAD=elem_offset % 4,
            BLOCK=cfg.block,
            VEC=cfg.vec,
            DIV32=row_size + cfg.block < (1 << 31),  # tiles.tile_rows
            ROW_DIV=row_div,
            ROW_SHIFT=row_size.bit_length() - 1 if row_div == 3 else 0,
            **modes,
            **cfg.options,
        )
        magic = row_magic(row_size) if row_div in (1, 2) else 0
        return True, cfg.grid, (n, row_size, elem_offset // 4, magic), consts
    if block is None:  # the interpreter: one program per row (few, large programs)
        block = min(BLOCK_INTERPRETER, triton.next_power_of_2(row_size + head_room)) if interpreted else gpu_block
    grid = (n // row_size, triton.cdiv(row_size + head_room, block))
    # elementwise: 64 elements a thread in 8-wide rows (tiles.ELEMS_PER_THREAD_GPU)
    options = row_options(interpreted, block, stream_elems_per_warp(vec))
    consts = dict(HEAD=0 if aligned else 1, BLOCK=block, VEC=vec, **modes, **options)
    return False, grid, (row_size, elem_offset), consts


def perturb_plan(n: int, row_size: int, elem_offset: int, half: bool, has_alpha: bool, fp64: bool,
                 interpreted: bool) -> tuple:  # fmt: skip
    """The perturb launch's plan with the noise generated (``half``: a 16-bit x; ``fp64``: float64 compute),
    for callers that keep it: pass it to :func:`launch_perturb_planned`."""
    return _perturb_plan(n, row_size, elem_offset, half, has_alpha, False, fp64, interpreted, None)


def launch_perturb_planned(plan, x, out, seed, alpha_rows, sigma_rows) -> None:
    """:func:`launch_dsm_perturb` (noise generated) with its kept plan (:func:`perturb_plan`): the launch
    alone, arguments positional (no keyword binding, no plan lookup: about 1.5 µs of host time less)."""
    flat, grid, scalars, consts = plan
    (_dsm_perturb_flat_kernel if flat else _dsm_perturb_kernel)[grid](
        x, out, seed, sigma_rows, sigma_rows if alpha_rows is None else alpha_rows, sigma_rows, *scalars, **consts
    )


def launch_loss_planned(plan, score, out, partial, seed, inv_sigma_rows, weight_rows, row_size, elem_offset) -> None:
    """:func:`launch_dsm_loss_rows` (noise generated) with its kept plan and ``partial`` buffer: the two
    launches alone, arguments positional."""
    n_chunks, partial_grid, partial_consts, reduce_grid, reduce_consts = plan
    _dsm_loss_partial_kernel[partial_grid](
        score, partial, seed, inv_sigma_rows, inv_sigma_rows, row_size, n_chunks, elem_offset, **partial_consts
    )
    _dsm_loss_reduce_kernel[reduce_grid](partial, weight_rows, out, n_chunks, **reduce_consts)


def launch_backward_planned(plan, score, grad, seed, inv_sigma_rows, coef_rows, row_size, elem_offset) -> None:
    """:func:`launch_dsm_loss_backward` (noise generated) with its kept plan: the launch alone."""
    grid, consts = plan
    _dsm_loss_backward_kernel[grid](
        score, grad, seed, inv_sigma_rows, inv_sigma_rows, coef_rows, row_size, elem_offset, **consts
    )


def loss_plans(rows: int, row_size: int, elem_offset: int, half: bool, fp64: bool, interpreted: bool) -> tuple:
    """(loss plan, backward plan) of a loss over ``rows`` rows with the noise generated (``half``: a 16-bit
    score; ``fp64``: float64 compute), for callers that keep them: pass them as ``plan=`` to
    :func:`launch_dsm_loss_rows` and :func:`launch_dsm_loss_backward`. A loss plan's first entry is the
    number of column chunks per row (the ``partial`` buffer holds ``rows · n_chunks`` elements)."""
    return (
        _loss_plan(rows, row_size, elem_offset, half, False, fp64, interpreted),
        _backward_plan(rows, row_size, elem_offset, half, False, fp64, interpreted),
    )


def launch_dsm_loss_rows(
    score, out, seed, inv_sigma_rows, weight_rows, *, row_size, elem_offset=0, injected_noise=None, partial=None,
    plan=None,
):  # fmt: skip
    """Per-row loss ``out[i] = ½ λ_i Σ_j (s_ij + z_ij / σ_i)²`` (``out``: [B], compute dtype; ``score``
    contiguous). ``partial``: a contiguous buffer of ``B · n_chunks`` elements in ``out``'s dtype for the
    partial sums, written then read by this launch (None: a new one); ``plan``: this launch's from
    :func:`loss_plans` (None: looked up)."""
    rows = out.shape[0]
    if rows == 0:
        return out
    if plan is None:
        plan = _loss_plan(
            rows, row_size, elem_offset, score.element_size() == 2, injected_noise is not None,
            out.element_size() == 8, score.is_cpu,
        )  # fmt: skip
    n_chunks, partial_grid, partial_consts, reduce_grid, reduce_consts = plan
    if partial is None:
        partial = out.new_empty(rows * n_chunks)
    _dsm_loss_partial_kernel[partial_grid](
        score,
        partial,
        seed,
        injected_noise if injected_noise is not None else inv_sigma_rows,
        inv_sigma_rows,
        row_size,
        n_chunks,
        elem_offset,
        **partial_consts,
    )
    _dsm_loss_reduce_kernel[reduce_grid](partial, weight_rows, out, n_chunks, **reduce_consts)
    return out


@functools.lru_cache(maxsize=1024)
def _loss_plan(rows, row_size, elem_offset, half, noise_from_ptr, fp64, interpreted):
    """(n_chunks, partial grid, its constexprs and options, reduce grid, its constexprs and options)."""
    n_chunks, partial_consts = _row_pass_consts(row_size, elem_offset, half, noise_from_ptr, fp64, interpreted)
    chunks = max(2, 1 << (n_chunks - 1).bit_length())  # next_power_of_2
    return n_chunks, (rows, n_chunks), partial_consts, (rows,), dict(CHUNKS=chunks, **launch_options(interpreted, 1))


def _row_pass_consts(row_size, elem_offset, half, noise_from_ptr, fp64, interpreted) -> tuple:
    """(n_chunks, constexprs and options) shared by the loss-partial and backward row passes."""
    block, n_chunks, _, _, options = row_launch(row_size, elem_offset, interpreted, MIN_ROW_BLOCK)
    vec, aligned = _row_vec(row_size, elem_offset, half)
    compute = tl.float64 if fp64 else tl.float32
    return n_chunks, dict(NOISE_FROM_PTR=noise_from_ptr, ROWS_ALIGNED=aligned, COMPUTE=compute, BLOCK=block, VEC=vec,
                          **options)  # fmt: skip


def _row_vec(row_size: int, elem_offset: int, half: bool):
    """:func:`row_tiles.row_vec` from whether an operand is 16-bit."""
    vec = 8 if half else 4
    if vec == 8 and not rows_aligned(row_size, elem_offset, 8):
        vec = 4
    return vec, rows_aligned(row_size, elem_offset, vec)


def launch_dsm_loss_backward(
    score, grad, seed, inv_sigma_rows, coef_rows, *, row_size, elem_offset=0, injected_noise=None, plan=None
):
    """``grad[i, j] = c_i (s_ij + z_ij / σ_i)`` (contiguous ``score``/``grad``, same numel, ``grad`` in the
    score's dtype); ``plan``: this launch's from :func:`loss_plans` (None: looked up)."""
    rows = inv_sigma_rows.shape[0]
    if rows == 0 or row_size == 0:
        return grad
    if plan is None:
        plan = _backward_plan(
            rows, row_size, elem_offset, score.element_size() == 2 or grad.element_size() == 2,
            injected_noise is not None, inv_sigma_rows.element_size() == 8, score.is_cpu,
        )  # fmt: skip
    grid, consts = plan
    _dsm_loss_backward_kernel[grid](
        score,
        grad,
        seed,
        injected_noise if injected_noise is not None else inv_sigma_rows,
        inv_sigma_rows,
        coef_rows,
        row_size,
        elem_offset,
        **consts,
    )
    return grad


@functools.lru_cache(maxsize=1024)
def _backward_plan(rows, row_size, elem_offset, half, noise_from_ptr, fp64, interpreted):
    """(grid, constexprs and options) of the loss backward launch."""
    n_chunks, consts = _row_pass_consts(row_size, elem_offset, half, noise_from_ptr, fp64, interpreted)
    return (rows, n_chunks), consts
