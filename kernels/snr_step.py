"""Triton kernel for the corrector's SNR step size (installed as ``fastlangevin.kernels.snr_step``).

    ε = 2 α (r ‖z‖ / ‖s‖)²

from pass 1's ``[B, 2]`` squared norms ``(‖s_i‖², ‖z_i‖²)`` (``fastlangevin.kernels.corrector``), in
one program, so the corrector's step size is one launch between its two passes instead of ~9 small
torch ops (each a launch on a GPU). Shapes and modes:

* ``norm="batch"`` (published code): ‖s‖ = mean_i √(‖s_i‖²), ‖z‖ = mean_i √(‖z_i‖²), one ratio for the
  batch; ε is 0-d, or ``[B]`` when r or α is per-sample;
* ``norm="per_sample"``: each row's own ratio √(‖z_i‖²) / √(‖s_i‖²); ε is ``[B]``.

r and α are each a scalar argument, a 0-d tensor or a ``[B]`` tensor (the ``SCALE_*`` modes of
``fastlangevin.modes``). Arithmetic in the norms' dtype (fp32, fp64 for float64 states) with IEEE
square roots and divisions; the batch means sum per lane, then across lanes, so they differ from
``torch.mean`` in summation order only (the reference, ``fastlangevin.reference.corrector``, is met
within a few fp32 ulps). No noise is drawn here: the stream contract is that of pass 1 and pass 2.
A zero ‖s‖ gives an infinite ε, as the torch formula does.
"""

import functools

import torch
import triton
import triton.language as tl

from .. import modes
from .tiles import launch_options

SCALE_ARG: tl.constexpr = tl.constexpr(modes.SCALE_ARG)
SCALE_TENSOR: tl.constexpr = tl.constexpr(modes.SCALE_TENSOR)
SCALE_ROWS: tl.constexpr = tl.constexpr(modes.SCALE_ROWS)

#: Rows per loop iteration of the one program (a batch of B rows takes ceil(B / BLOCK) iterations).
MAX_BLOCK = 1024


@triton.jit
def _sqrt(v, COMPUTE: tl.constexpr):
    if COMPUTE == tl.float32:
        r = tl.sqrt_rn(v)  # tl.sqrt is the approximate one in fp32
    else:
        r = tl.sqrt(v)
    return r


@triton.jit
def _div(a, b, COMPUTE: tl.constexpr):
    if COMPUTE == tl.float32:
        r = tl.div_rn(a, b)  # `/` is the approximate division in fp32
    else:
        r = a / b
    return r


@triton.jit
def _scale(val, ptr, idx, mask, MODE: tl.constexpr, COMPUTE: tl.constexpr):
    if MODE == SCALE_ARG:
        r = val
    elif MODE == SCALE_TENSOR:
        r = tl.load(ptr).to(COMPUTE)
    else:
        r = tl.load(ptr + idx, mask=mask, other=0.0).to(COMPUTE)
    return r


@triton.jit
def _eps(ratio, snr_val, snr_ptr, alpha_val, alpha_ptr, idx, mask, SNR_MODE: tl.constexpr,
         ALPHA_MODE: tl.constexpr, HAS_ALPHA: tl.constexpr, COMPUTE: tl.constexpr):  # fmt: skip
    """((r · ratio)²) · 2 · α: the torch formula's operations in its order."""
    t = ratio * _scale(snr_val, snr_ptr, idx, mask, SNR_MODE, COMPUTE)
    e = t * t * 2.0
    if HAS_ALPHA:
        e = e * _scale(alpha_val, alpha_ptr, idx, mask, ALPHA_MODE, COMPUTE)
    return e


@triton.jit
def _snr_step_kernel(
    norms_ptr,  # [B, 2] contiguous: (‖s_i‖², ‖z_i‖²)
    snr_ptr,  # 0-d or [B] when SNR_MODE is a tensor mode, else unused
    alpha_ptr,  # same for α
    out_ptr,  # 0-d (one ε) or [B]
    snr_val,
    alpha_val,
    batch,
    count,  # float(batch): the means' divisor (a float argument: exact for batches below 2**24)
    SNR_MODE: tl.constexpr,
    ALPHA_MODE: tl.constexpr,
    HAS_ALPHA: tl.constexpr,  # False: α = 1 as a Python float (x * 1.0 == x: the multiply is skipped)
    PER_SAMPLE: tl.constexpr,
    OUT_ROWS: tl.constexpr,
    COMPUTE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    lanes = tl.arange(0, BLOCK)
    if PER_SAMPLE:
        for start in range(0, batch, BLOCK):
            idx = start + lanes
            mask = idx < batch
            ss = tl.load(norms_ptr + 2 * idx, mask=mask, other=1.0).to(COMPUTE)
            zz = tl.load(norms_ptr + 2 * idx + 1, mask=mask, other=0.0).to(COMPUTE)
            ratio = _div(_sqrt(zz, COMPUTE), _sqrt(ss, COMPUTE), COMPUTE)
            e = _eps(ratio, snr_val, snr_ptr, alpha_val, alpha_ptr, idx, mask, SNR_MODE, ALPHA_MODE, HAS_ALPHA, COMPUTE)
            tl.store(out_ptr + idx, e.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        s_acc = tl.zeros([BLOCK], dtype=COMPUTE)
        z_acc = tl.zeros([BLOCK], dtype=COMPUTE)
        for start in range(0, batch, BLOCK):
            idx = start + lanes
            mask = idx < batch
            ss = tl.load(norms_ptr + 2 * idx, mask=mask, other=0.0).to(COMPUTE)
            zz = tl.load(norms_ptr + 2 * idx + 1, mask=mask, other=0.0).to(COMPUTE)
            s_acc += _sqrt(ss, COMPUTE)
            z_acc += _sqrt(zz, COMPUTE)
        n = tl.zeros([], dtype=COMPUTE) + count  # count may arrive as a Python float (interpreter)
        s_mean = _div(tl.sum(s_acc, axis=0), n, COMPUTE)
        z_mean = _div(tl.sum(z_acc, axis=0), n, COMPUTE)
        ratio = _div(z_mean, s_mean, COMPUTE)
        if OUT_ROWS:  # a per-sample r or α: one ε per row from the batch's ratio
            for start in range(0, batch, BLOCK):
                idx = start + lanes
                mask = idx < batch
                e = _eps(
                    ratio, snr_val, snr_ptr, alpha_val, alpha_ptr, idx, mask, SNR_MODE, ALPHA_MODE, HAS_ALPHA, COMPUTE
                )
                tl.store(out_ptr + idx, e.to(out_ptr.dtype.element_ty), mask=mask)
        else:
            e = _eps(ratio, snr_val, snr_ptr, alpha_val, alpha_ptr, 0, True, SNR_MODE, ALPHA_MODE, HAS_ALPHA, COMPUTE)
            tl.store(out_ptr, e.to(out_ptr.dtype.element_ty))


@functools.lru_cache(maxsize=256)
def _plan(batch: int, snr_mode: int, alpha_mode: int, has_alpha: bool, per_sample: bool, fp64: bool, interpreted: bool):
    """(whether ε is ``[B]``, the constexpr and launch keywords): cached, a sampler launches the same every step."""
    out_rows = per_sample or modes.SCALE_ROWS in (snr_mode, alpha_mode)
    block = max(16, min(MAX_BLOCK, triton.next_power_of_2(max(batch, 1))))
    consts = dict(
        SNR_MODE=snr_mode,
        ALPHA_MODE=alpha_mode,
        HAS_ALPHA=has_alpha,
        PER_SAMPLE=per_sample,
        OUT_ROWS=out_rows,
        COMPUTE=tl.float64 if fp64 else tl.float32,
        BLOCK=block,
        **launch_options(interpreted, 4 if block >= 512 else 1),
    )
    return out_rows, consts


def _scale_args(value, tensor, fp64: bool, device):
    """(mode, scalar, pointer tensor or None): a Python float as a kernel scalar (fp32); float64 runs
    pass it as a 0-d float64 tensor instead, so it keeps its double value."""
    if tensor is None:
        if not fp64:
            return modes.SCALE_ARG, value, None
        tensor = torch.tensor(value, dtype=torch.float64, device=device)
    return modes.scale_mode(tensor), 0.0, tensor


def launch_snr_step(norms, snr_value, snr_tensor, alpha_value, alpha_tensor, *, per_sample: bool, out=None):
    """ε from contiguous ``[B, 2]`` ``norms`` (fp32 or fp64): a new 0-d or ``[B]`` tensor in their dtype.

    r is ``snr_value`` (float) when ``snr_tensor`` is None, else that 0-d or ``[B]`` tensor on the norms'
    device; the same for α (``alpha_value == 1.0`` with no tensor skips the multiply, as the torch
    formula does). ``per_sample``: each row's own norms; else the batch means (see the module docstring).
    ``out``: a buffer of ε's shape and dtype to write instead of a new tensor.
    """
    batch = norms.shape[0]
    fp64 = norms.dtype is torch.float64
    device = norms.device
    has_alpha = alpha_tensor is not None or alpha_value != 1.0
    if fp64 or snr_tensor is not None or alpha_tensor is not None:
        snr_mode, snr_val, snr_t = _scale_args(snr_value, snr_tensor, fp64, device)
        alpha_mode, alpha_val, alpha_t = _scale_args(alpha_value, alpha_tensor, fp64 and has_alpha, device)
    else:  # the common case: both Python floats, kernel scalars
        snr_mode = alpha_mode = modes.SCALE_ARG
        snr_val, snr_t, alpha_val, alpha_t = snr_value, None, alpha_value, None
    out_rows, consts = _plan(batch, snr_mode, alpha_mode, has_alpha, per_sample, fp64, norms.is_cpu)
    if out is None:
        out = norms.new_empty((batch,) if out_rows else ())  # (new_empty: no dtype/device to parse)
    _snr_step_kernel[(1,)](
        norms,
        snr_t if snr_t is not None else norms,  # unused slots get the norms (never dereferenced)
        alpha_t if alpha_t is not None else norms,
        out,
        snr_val,
        alpha_val,
        batch,
        float(batch),
        **consts,
    )
    return out
