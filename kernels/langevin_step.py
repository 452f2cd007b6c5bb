"""Triton kernel for the fused Langevin update (installed as ``fastlangevin.kernels.langevin_step``).

    out = clamp(x + a * s + b * z, lo, hi),    z ~ N(0, I) drawn in-kernel

One pass: reads x and s (any float dtypes), writes out in x's dtype, never materialises z.
``a``/``b`` are a scalar argument, a 0-d device tensor, or a per-row ``[B]`` device tensor;
``b`` may also be derived in-kernel as ``sqrt(2 a)`` (the Langevin default), so annealed
schedules pass a single ``[B]`` tensor and no host sync happens.

Noise: element with global logical index ``i = elem_offset + local`` gets output ``i % 4`` of
``tl.randn4x(seed, i // 4)``. Tiles are aligned to groups of four in the *global* index, so
one Philox call feeds four consecutive elements whatever ``elem_offset`` is, and the stream
never depends on BLOCK, the grid or the batch size.
"""

import triton
import triton.language as tl

from .. import modes
from .tiles import flat_tile, launch_options, normal_tile, vec_for

# The modes of fastlangevin.modes as constexpr globals: Triton lets a @jit body read a module
# global only when it is a tl.constexpr. The Python launchers use the plain ints of `modes`.
SCALE_ARG: tl.constexpr = tl.constexpr(modes.SCALE_ARG)
SCALE_TENSOR: tl.constexpr = tl.constexpr(modes.SCALE_TENSOR)
SCALE_ROWS: tl.constexpr = tl.constexpr(modes.SCALE_ROWS)
NOISE_NONE: tl.constexpr = tl.constexpr(modes.NOISE_NONE)
NOISE_SQRT2A: tl.constexpr = tl.constexpr(modes.NOISE_SQRT2A)

# GPU launch defaults: 4096 elements per program = 1024 Philox groups; 8 warps give each
# thread 4 groups (16 contiguous fp32), enough bytes in flight to saturate HBM.
BLOCK_GPU = 4096
NUM_WARPS_GPU = 8
# The interpreter runs each program in Python: few, large programs.
BLOCK_INTERPRETER = 1 << 16


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
    local, mask, first_group = flat_tile(group_offset, n_elements, HEAD, BLOCK, VEC)

    x = tl.load(x_ptr + local, mask=mask, other=0.0).to(COMPUTE)
    s = tl.load(score_ptr + local, mask=mask, other=0.0).to(COMPUTE)
    rows = local // row_size
    a = _load_scale(step_val, step_ptr, rows, STEP_MODE, mask, COMPUTE)
    out = x + a * s
    if NOISE_MODE != NOISE_NONE:
        if NOISE_MODE == NOISE_SQRT2A:
            b = tl.sqrt(2.0 * a)
        else:
            b = _load_scale(noise_val, noise_scale_ptr, rows, NOISE_MODE, mask, COMPUTE)
        if NOISE_FROM_PTR:
            z = tl.load(noise_ptr + local, mask=mask, other=0.0).to(tl.float32)
        else:
            z = normal_tile(seed_ptr, first_group, BLOCK // 4, VEC)
        out = out + b * z.to(COMPUTE)
    if HAS_CLAMP:
        out = tl.clamp(out, lo, hi, propagate_nan=tl.PropagateNan.ALL)
    tl.store(out_ptr + local, out.to(out_ptr.dtype.element_ty), mask=mask)


def _scale_args(scale, mode_if_tensor_0d=modes.SCALE_TENSOR):
    """(mode, scalar value, pointer tensor or None) for a fastlangevin Scale."""
    if scale.tensor is None:
        return modes.SCALE_ARG, scale.value, None
    return (modes.SCALE_ROWS if scale.per_row else mode_if_tensor_0d), 0.0, scale.tensor


def _as_tensor_scale(scale, device):
    import torch

    if scale.tensor is not None:
        return scale
    return type(scale)(tensor=torch.tensor(scale.value, dtype=torch.float64, device=device))


def launch_langevin_step(
    x, score, out, seed, step, noise, clamp, *, row_size, elem_offset, injected_noise=None, block=None, vec=None
):
    """Run the kernel. ``x``, ``score``, ``out`` (and ``injected_noise``) contiguous, same numel.

    ``step``: Scale; ``noise``: Scale, or the strings "none" / "sqrt2a".
    ``out`` may alias ``x`` (each element is read before it is written, by the same program).
    """
    import torch

    n = x.numel()
    if n == 0:
        return out
    interpreted = x.device.type == "cpu"
    if block is None:
        block = BLOCK_INTERPRETER if interpreted else BLOCK_GPU
    compute = tl.float64 if x.dtype == torch.float64 else tl.float32
    if x.dtype == torch.float64:
        # Kernel scalar arguments are fp32; keep float64 runs in float64 by passing 0-d tensors.
        step = _as_tensor_scale(step, x.device)
        noise = noise if isinstance(noise, str) else _as_tensor_scale(noise, x.device)
    step_mode, step_val, step_t = _scale_args(step)
    if noise == "none":
        noise_mode, noise_val, noise_t = modes.NOISE_NONE, 0.0, None
    elif noise == "sqrt2a":
        noise_mode, noise_val, noise_t = modes.NOISE_SQRT2A, 0.0, None
    else:
        noise_mode, noise_val, noise_t = _scale_args(noise)
    lo, hi = clamp if clamp is not None else (0.0, 0.0)
    # Unused pointer slots get x (never dereferenced: their constexpr mode disables the load).
    grid = (triton.cdiv(n + elem_offset % 4, block),)
    kwargs = launch_options(interpreted, NUM_WARPS_GPU)
    _langevin_step_kernel[grid](
        x,
        score,
        out,
        seed,
        injected_noise if injected_noise is not None else x,
        step_t if step_t is not None else x,
        noise_t if noise_t is not None else x,
        step_val,
        noise_val,
        lo,
        hi,
        n,
        row_size,
        elem_offset // 4,
        HEAD=elem_offset % 4,
        STEP_MODE=step_mode,
        NOISE_MODE=noise_mode,
        NOISE_FROM_PTR=injected_noise is not None,
        HAS_CLAMP=clamp is not None,
        COMPUTE=compute,
        BLOCK=block,
        VEC=vec or vec_for(x, score),
        **kwargs,
    )
    return out
