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

import triton
import triton.language as tl

from .tiles import (
    FLAT_BLOCK_GPU,
    FLAT_WARPS_GPU,
    flat_launch,
    flat_tile,
    launch_options,
    normal_tile,
    row_launch,
    row_tile,
    vec_for,
)

# Launch shapes live in .tiles: perturb is elementwise (the flat launch); the row kernels cover
# at most FLAT_BLOCK_GPU columns of one row per program, short rows a smaller power-of-two block
# (never below MIN_ROW_BLOCK so a program still feeds a few lanes).
BLOCK_GPU, NUM_WARPS_GPU = FLAT_BLOCK_GPU, FLAT_WARPS_GPU
MIN_ROW_BLOCK = 16


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
):
    if NOISE_FROM_PTR:
        z = tl.load(noise_ptr + local, mask=mask).to(COMPUTE)
    else:
        z = normal_tile(seed_ptr, first_group, GROUPS, VEC).to(COMPUTE)
    return z


@triton.jit
def _dsm_perturb_kernel(
    x_ptr,
    out_ptr,
    seed_ptr,
    noise_ptr,  # injected noise (test hook) when NOISE_FROM_PTR, else unused
    alpha_ptr,  # [B] compute dtype, unused unless HAS_ALPHA
    sigma_ptr,  # [B] compute dtype
    n_elements,
    row_size,
    group_offset,
    HEAD: tl.constexpr,
    HAS_ALPHA: tl.constexpr,
    NOISE_FROM_PTR: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK: tl.constexpr,
    VEC: tl.constexpr,
):
    GROUPS: tl.constexpr = BLOCK // 4
    start, offs, mask, first_group = flat_tile(group_offset, n_elements, HEAD, BLOCK, VEC)
    rows = (start + offs) // row_size

    # No `other=`: masked lanes are never stored, so they need no defined value.
    x = tl.load(x_ptr + start + offs, mask=mask).to(COMPUTE)
    sigma = tl.load(sigma_ptr + rows, mask=mask).to(COMPUTE)
    z = _noise(seed_ptr, noise_ptr + start, offs, mask, first_group, NOISE_FROM_PTR, COMPUTE, GROUPS, VEC)
    if HAS_ALPHA:
        alpha = tl.load(alpha_ptr + rows, mask=mask).to(COMPUTE)
        out = alpha * x + sigma * z
    else:
        out = x + sigma * z
    tl.store(out_ptr + start + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


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
    base, offs, mask, first_group = row_tile(row, chunk, row_size, elem_offset, BLOCK, ROWS_ALIGNED, VEC)

    # Masked lanes are zeroed below (tl.where), so the loads need no `other=`.
    s = tl.load(score_ptr + base + offs, mask=mask).to(COMPUTE)
    inv_sigma = tl.load(inv_sigma_ptr + row).to(COMPUTE)
    z = _noise(seed_ptr, noise_ptr + base, offs, mask, first_group, NOISE_FROM_PTR, COMPUTE, GROUPS, VEC)
    r = s + z * inv_sigma
    r = tl.where(mask, r, 0.0)
    part = tl.sum(tl.sum(r * r, axis=1), axis=0)
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
    base, offs, mask, first_group = row_tile(row, chunk, row_size, elem_offset, BLOCK, ROWS_ALIGNED, VEC)

    s = tl.load(score_ptr + base + offs, mask=mask).to(COMPUTE)  # masked lanes are never stored
    inv_sigma = tl.load(inv_sigma_ptr + row).to(COMPUTE)
    coef = tl.load(coef_ptr + row).to(COMPUTE)
    z = _noise(seed_ptr, noise_ptr + base, offs, mask, first_group, NOISE_FROM_PTR, COMPUTE, GROUPS, VEC)
    g = coef * (s + z * inv_sigma)
    tl.store(grad_ptr + base + offs, g.to(grad_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------
def _compute(dtype):
    import torch

    return tl.float64 if dtype == torch.float64 else tl.float32


def row_launch_shape(row_size: int, elem_offset: int, interpreted: bool):
    """(BLOCK, n_chunks, num_warps, rows_aligned) of the row kernels (see :func:`.tiles.row_launch`)."""
    return row_launch(row_size, elem_offset, interpreted, MIN_ROW_BLOCK)[:4]


def launch_dsm_perturb(
    x, out, seed, alpha_rows, sigma_rows, *, row_size, elem_offset=0, injected_noise=None, block=None
):
    """x̃ = α x + σ z. ``x``, ``out`` (and ``injected_noise``) flat contiguous; rows ``[B]`` tensors."""
    n = x.numel()
    if n == 0:
        return out
    cfg = flat_launch(x.device.type == "cpu", n, elem_offset, block, vec_for(x))
    # Unused pointer slots get sigma_rows (never dereferenced: a constexpr disables the load).
    _dsm_perturb_kernel[cfg.grid](
        x,
        out,
        seed,
        injected_noise if injected_noise is not None else sigma_rows,
        alpha_rows if alpha_rows is not None else sigma_rows,
        sigma_rows,
        n,
        row_size,
        elem_offset // 4,
        HEAD=elem_offset % 4,
        HAS_ALPHA=alpha_rows is not None,
        NOISE_FROM_PTR=injected_noise is not None,
        COMPUTE=_compute(sigma_rows.dtype),
        BLOCK=cfg.block,
        VEC=cfg.vec,
        **cfg.options,
    )
    return out


def launch_dsm_loss_rows(
    score, out, seed, inv_sigma_rows, weight_rows, *, row_size, elem_offset=0, injected_noise=None
):
    """Per-row loss ``out[i] = ½ λ_i Σ_j (s_ij + z_ij / σ_i)²`` (``out``: [B], compute dtype)."""
    import torch

    rows = out.shape[0]
    if rows == 0:
        return out
    interpreted = score.device.type == "cpu"
    block, n_chunks, _, aligned, kwargs = row_launch(row_size, elem_offset, interpreted, MIN_ROW_BLOCK)
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
        VEC=vec_for(score),
        **kwargs,
    )
    _dsm_loss_reduce_kernel[(rows,)](
        partial,
        weight_rows,
        out,
        n_chunks,
        CHUNKS=max(2, triton.next_power_of_2(n_chunks)),
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
    block, n_chunks, _, aligned, kwargs = row_launch(row_size, elem_offset, interpreted, MIN_ROW_BLOCK)
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
        VEC=vec_for(score, grad),
        **kwargs,
    )
    return grad
