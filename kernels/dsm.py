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

from .row_tiles import lanes_busy, row_grid_block, row_options, row_sum, row_tile, row_vec
from .tiles import (
    BLOCK_INTERPRETER,
    FLAT_BLOCK_GPU,
    FLAT_WARPS_GPU,
    flat_launch,
    flat_tile,
    launch_options,
    normal_tile,
    row_launch,
    tile_load,
    tile_rows,
    tile_store,
    vec_for,
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
    HEAD: tl.constexpr,
    HAS_ALPHA: tl.constexpr,
    NOISE_FROM_PTR: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK: tl.constexpr,
    VEC: tl.constexpr,
    DIV32: tl.constexpr = False,
):
    """Short rows: a flat grid (a row grid would leave most lanes idle); σ and α gathered per element."""
    start, offs, mask, first_group = flat_tile(group_offset, n_elements, HEAD, BLOCK, VEC)
    LANES: tl.constexpr = HEAD != 0 and VEC == 4
    rows = tile_rows(start, offs, row_size, DIV32)
    sigma = tile_load(sigma_ptr + rows, mask, LANES).to(COMPUTE)
    alpha = tile_load(alpha_ptr + rows, mask, LANES).to(COMPUTE) if HAS_ALPHA else sigma
    _perturb_tile(
        x_ptr, out_ptr, seed_ptr, noise_ptr, start, offs, mask, first_group, alpha, sigma,
        HAS_ALPHA, NOISE_FROM_PTR, COMPUTE, BLOCK // 4, VEC, LANES,
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


def launch_dsm_perturb(
    x, out, seed, alpha_rows, sigma_rows, *, row_size, elem_offset=0, injected_noise=None, block=None
):
    """x̃ = α x + σ z. ``x``, ``out`` (and ``injected_noise``) flat contiguous; rows ``[B]`` tensors.
    ``block`` (tests): the BLOCK of whichever kernel runs (row grid or flat: ROW_GRID_MIN_BUSY)."""
    n = x.numel()
    if n == 0:
        return out
    interpreted = x.device.type == "cpu"
    # Unused pointer slots get sigma_rows (never dereferenced: a constexpr disables the load).
    ptrs = (
        x,
        out,
        seed,
        injected_noise if injected_noise is not None else sigma_rows,
        alpha_rows if alpha_rows is not None else sigma_rows,
        sigma_rows,
    )
    modes = dict(
        HAS_ALPHA=alpha_rows is not None,
        NOISE_FROM_PTR=injected_noise is not None,
        COMPUTE=_compute(sigma_rows.dtype),
    )
    vec, aligned = row_vec(row_size, elem_offset, x)
    # a mid-group start has scalar accesses: 4-wide rows, loaded column by column (tiles.tile_load)
    fvec = vec_for(x) if elem_offset % 4 == 0 else 4
    flat, grid, block, vec, options = _perturb_plan(row_size, elem_offset, aligned, vec, fvec, interpreted, n, block)
    if flat:
        _dsm_perturb_flat_kernel[grid](
            *ptrs,
            n,
            row_size,
            elem_offset // 4,
            HEAD=elem_offset % 4,
            BLOCK=block,
            VEC=vec,
            DIV32=row_size + block < (1 << 31),  # tiles.tile_rows
            **modes,
            **options,
        )
        return out
    _dsm_perturb_kernel[grid](
        *ptrs,
        row_size,
        elem_offset,
        HEAD=0 if aligned else 1,
        BLOCK=block,
        VEC=vec,
        **modes,
        **options,
    )
    return out


@functools.lru_cache(maxsize=1024)
def _perturb_plan(row_size, elem_offset, aligned, vec, flat_vec, interpreted, n, block):
    """(flat grid?, grid, BLOCK, VEC, options) of the perturb launch: a function of these only, cached
    (the choice calls Triton's cdiv/next_power_of_2, JIT functions: ~10 µs of host time a launch)."""
    head_room = 0 if aligned else 3
    gpu_block = row_grid_block(row_size + head_room)
    chunks = triton.cdiv(row_size + head_room, gpu_block)
    if lanes_busy(row_size + head_room, gpu_block) < ROW_GRID_MIN_BUSY or chunks > MAX_GRID_Y:
        cfg = flat_launch(interpreted, n, elem_offset, block, flat_vec)
        return True, cfg.grid, cfg.block, cfg.vec, cfg.options
    if block is None:  # the interpreter: one program per row (few, large programs)
        block = min(BLOCK_INTERPRETER, triton.next_power_of_2(row_size + head_room)) if interpreted else gpu_block
    grid = (n // row_size, triton.cdiv(row_size + head_room, block))
    return False, grid, block, vec, row_options(interpreted, block)


def launch_dsm_loss_rows(
    score, out, seed, inv_sigma_rows, weight_rows, *, row_size, elem_offset=0, injected_noise=None
):
    """Per-row loss ``out[i] = ½ λ_i Σ_j (s_ij + z_ij / σ_i)²`` (``out``: [B], compute dtype)."""
    import torch

    rows = out.shape[0]
    if rows == 0:
        return out
    interpreted = score.device.type == "cpu"
    block, n_chunks, _, _, kwargs = row_launch(row_size, elem_offset, interpreted, MIN_ROW_BLOCK)
    vec, aligned = row_vec(row_size, elem_offset, score)
    partial = torch.empty((rows, n_chunks), dtype=out.dtype, device=score.device)
    _dsm_loss_partial_kernel[(rows, n_chunks)](
        score,
        partial,
        seed,
        injected_noise if injected_noise is not None else inv_sigma_rows,
        inv_sigma_rows,
        row_size,
        n_chunks,
        elem_offset,
        NOISE_FROM_PTR=injected_noise is not None,
        ROWS_ALIGNED=aligned,
        COMPUTE=_compute(out.dtype),
        BLOCK=block,
        VEC=vec,
        **kwargs,
    )
    _dsm_loss_reduce_kernel[(rows,)](
        partial,
        weight_rows,
        out,
        n_chunks,
        CHUNKS=max(2, 1 << (n_chunks - 1).bit_length()),  # next_power_of_2 without a ConstexprFunction call
        **launch_options(interpreted, 1),
    )
    return out


def launch_dsm_loss_backward(
    score, grad, seed, inv_sigma_rows, coef_rows, *, row_size, elem_offset=0, injected_noise=None
):
    """``grad[i, j] = c_i (s_ij + z_ij / σ_i)`` (flat contiguous ``score``/``grad``)."""
    rows = inv_sigma_rows.shape[0]
    if rows == 0 or row_size == 0:
        return grad
    interpreted = score.device.type == "cpu"
    block, n_chunks, _, _, kwargs = row_launch(row_size, elem_offset, interpreted, MIN_ROW_BLOCK)
    vec, aligned = row_vec(row_size, elem_offset, score, grad)
    _dsm_loss_backward_kernel[(rows, n_chunks)](
        score,
        grad,
        seed,
        injected_noise if injected_noise is not None else inv_sigma_rows,
        inv_sigma_rows,
        coef_rows,
        row_size,
        elem_offset,
        NOISE_FROM_PTR=injected_noise is not None,
        ROWS_ALIGNED=aligned,
        COMPUTE=_compute(inv_sigma_rows.dtype),
        BLOCK=block,
        VEC=vec,
        **kwargs,
    )
    return grad
