"""Triton kernel for the fused Langevin update (installed as ``fastlangevin.kernels.langevin_step``).

    out = clamp(x + a * s + b * z, lo, hi),    z ~ N(0, I) drawn in-kernel

One pass: reads x and s (any float dtypes), writes out in x's dtype, never materialises z.
``a``/``b`` are a scalar argument, a 0-d device tensor, or a per-row ``[B]`` device tensor;
``b`` may also be derived in-kernel as ``sqrt(2 a)`` (the Langevin default), so annealed
schedules pass a single ``[B]`` tensor and no host sync happens.

Noise: element with global logical index ``i = elem_offset + local`` gets output ``i % 4`` of
``fast_randn4x(seed, i // 4)`` (tiles). Tiles are aligned to groups of four in the *global* index, so
one Philox call feeds four consecutive elements whatever ``elem_offset`` is, and the stream
never depends on BLOCK, the grid or the batch size.
"""

import triton
import triton.language as tl

from .. import modes
from .tiles import BLOCK_INTERPRETER, FLAT_BLOCK_GPU, FLAT_WARPS_GPU, flat_launch, flat_tile, normal_tile, vec_for

# The modes of fastlangevin.modes as constexpr globals: Triton lets a @jit body read a module
# global only when it is a tl.constexpr. The Python launchers use the plain ints of `modes`.
SCALE_ARG: tl.constexpr = tl.constexpr(modes.SCALE_ARG)
SCALE_TENSOR: tl.constexpr = tl.constexpr(modes.SCALE_TENSOR)
SCALE_ROWS: tl.constexpr = tl.constexpr(modes.SCALE_ROWS)
NOISE_NONE: tl.constexpr = tl.constexpr(modes.NOISE_NONE)
NOISE_SQRT2A: tl.constexpr = tl.constexpr(modes.NOISE_SQRT2A)

# Launch shapes (BLOCK, warps, VEC, grids) live in .tiles; re-exported for older imports.
BLOCK_GPU, NUM_WARPS_GPU, BLOCK_INTERPRETER = FLAT_BLOCK_GPU, FLAT_WARPS_GPU, BLOCK_INTERPRETER


@triton.jit
def _load_scale(val, ptr, rows, MODE: tl.constexpr, mask, COMPUTE: tl.constexpr):
    if MODE == SCALE_ARG:
        r = val
    elif MODE == SCALE_TENSOR:
        r = tl.load(ptr).to(COMPUTE)
    else:
        r = tl.load(ptr + rows, mask=mask, other=0.0).to(COMPUTE)
    return r


@triton.jit
def _langevin_step_kernel(
    x_ptr,
    score_ptr,
    out_ptr,
    seed_ptr,
    noise_ptr,  # injected noise (test hook) when NOISE_FROM_PTR, else unused
    step_ptr,
    noise_scale_ptr,
    step_val,
    noise_val,
    lo,
    hi,
    n_elements,
    row_size,
    group_offset,
    HEAD: tl.constexpr,
    STEP_MODE: tl.constexpr,
    NOISE_MODE: tl.constexpr,
    NOISE_FROM_PTR: tl.constexpr,
    HAS_CLAMP: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK: tl.constexpr,
    VEC: tl.constexpr,
):
    start, offs, mask, first_group = flat_tile(group_offset, n_elements, HEAD, BLOCK, VEC)

    # No `other=`: masked lanes are never stored, so they need no defined value (zeroing costs a move).
    x = tl.load(x_ptr + start + offs, mask=mask).to(COMPUTE)
    s = tl.load(score_ptr + start + offs, mask=mask).to(COMPUTE)
    rows = (start + offs) // row_size  # per-row scales only (dead code otherwise)
    a = _load_scale(step_val, step_ptr, rows, STEP_MODE, mask, COMPUTE)
    out = x + a * s
    if NOISE_MODE != NOISE_NONE:
        if NOISE_MODE == NOISE_SQRT2A:
            b = tl.sqrt(2.0 * a)
        else:
            b = _load_scale(noise_val, noise_scale_ptr, rows, NOISE_MODE, mask, COMPUTE)
        if NOISE_FROM_PTR:
            z = tl.load(noise_ptr + start + offs, mask=mask).to(tl.float32)
        else:
            z = normal_tile(seed_ptr, first_group, BLOCK // 4, VEC)
        out = out + b * z.to(COMPUTE)
    if HAS_CLAMP:
        out = tl.clamp(out, lo, hi, propagate_nan=tl.PropagateNan.ALL)
    tl.store(out_ptr + start + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


def _scale_launch_args(value, tensor, as_tensor: bool, device):
    """(mode, scalar value, pointer tensor or None) for a scale given as ``value`` or ``tensor``.

    ``as_tensor``: pass a scalar as a 0-d float64 tensor (kernel scalar arguments are fp32;
    float64 runs keep float64 scales that way)."""
    if tensor is None:
        if not as_tensor:
            return modes.SCALE_ARG, value, None
        import torch

        tensor = torch.tensor(value, dtype=torch.float64, device=device)
    return modes.scale_mode(tensor), 0.0, tensor


def launch_langevin_step(
    x,
    score,
    out,
    seed,
    *,
    step_value,
    step_tensor,
    noise_mode,
    noise_value,
    noise_tensor,
    lo,
    hi,
    row_size,
    elem_offset,
    injected_noise=None,
    block=None,
    vec=None,
):
    """Run the kernel. ``x``, ``score``, ``out`` (and ``injected_noise``) contiguous, same numel.

    Scales: ``*_value`` (float) when ``*_tensor`` is None, else a 0-d or ``[B]`` tensor;
    ``noise_mode``: :data:`modes.NOISE_NONE`, :data:`modes.NOISE_SQRT2A` or a ``SCALE_*``
    mode; ``lo``/``hi``: the clamp (None: none). ``out`` may alias ``x`` (each element is read
    before it is written, by the same program).
    """
    n = x.numel()
    if n == 0:
        return out
    fp64 = x.element_size() == 8  # float64 states: the only 8-byte float dtype
    step_mode, step_val, step_t = _scale_launch_args(step_value, step_tensor, fp64, x.device)
    if noise_mode in (modes.NOISE_NONE, modes.NOISE_SQRT2A):
        noise_val, noise_t = 0.0, None
    else:
        noise_mode, noise_val, noise_t = _scale_launch_args(noise_value, noise_tensor, fp64, x.device)
    cfg = flat_launch(x.device.type == "cpu", n, elem_offset, block, vec or vec_for(x, score))
    # Unused pointer slots get x (never dereferenced: their constexpr mode disables the load).
    _langevin_step_kernel[cfg.grid](
        x,
        score,
        out,
        seed,
        injected_noise if injected_noise is not None else x,
        step_t if step_t is not None else x,
        noise_t if noise_t is not None else x,
        step_val,
        noise_val,
        0.0 if lo is None else lo,
        0.0 if hi is None else hi,
        n,
        row_size,
        elem_offset // 4,
        HEAD=elem_offset % 4,
        STEP_MODE=step_mode,
        NOISE_MODE=noise_mode,
        NOISE_FROM_PTR=injected_noise is not None,
        HAS_CLAMP=lo is not None,
        COMPUTE=tl.float64 if fp64 else tl.float32,
        BLOCK=cfg.block,
        VEC=cfg.vec,
        **cfg.options,
    )
    return out
