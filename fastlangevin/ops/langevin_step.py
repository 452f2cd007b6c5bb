"""The fused Langevin update as torch custom ops, and its public functions.

    out = clamp(x + step_size * score + noise_scale * z, lo, hi),    z ~ N(0, I)

``fastlangevin::langevin_step`` (out-of-place, differentiable) and ``fastlangevin::langevin_step_``
(in-place on ``x``) are registered with ``torch.library.custom_op``; each dispatches to the Triton
kernel (``fastlangevin.kernels.langevin_step``) or the PyTorch fallback
(``fastlangevin.fallback.langevin_step``). The noise seed is an int64 tensor input to the op, so
the op is a pure function of its inputs: opcheck, AOTAutograd and CUDA graphs all see fresh
noise exactly when the seed tensor changes.
"""

from __future__ import annotations

import math
import os
from typing import Optional, Sequence

import torch

from .. import _backend
from .._rng import draw_seed
from .._validate import Scale, check_clamp, check_generator, check_like, check_offset, check_scale, check_state
from ..fallback.langevin_step import langevin_step_torch

RNG_ENV_VAR = "FASTLANGEVIN_RNG"
RNG_STREAMS = ("torch", "philox")

# noise_mode values of the op schema
_NOISE_SCALE, _NOISE_NONE, _NOISE_SQRT2A = 0, 1, 2


def resolve_rng(rng: Optional[str], backend: str, device: torch.device) -> str:
    """The noise stream: Triton always uses Philox; the fallback defaults to the fast
    chunk-keyed torch stream on CPU and to Philox elsewhere (``FASTLANGEVIN_RNG`` overrides)."""
    if rng is None:
        rng = os.environ.get(RNG_ENV_VAR) or None
    if rng is None:
        return "torch" if backend == "torch" and device.type == "cpu" else "philox"
    if rng not in RNG_STREAMS:
        raise ValueError(f"rng must be 'torch', 'philox' or None, got {rng!r}")
    if rng == "torch" and (backend != "torch" or device.type != "cpu"):
        raise ValueError(
            "rng='torch' (torch's CPU generator) is only available with backend='torch' on CPU tensors; use rng='philox'"
        )
    return rng


def _row_size(x: torch.Tensor) -> int:
    return math.prod(x.shape[1:])


def _dispatch(x_flat, score_flat, out_flat, seed, step, noise, clamp, row_size, elem_offset, backend, rng, injected):
    _backend.record("langevin_step", backend)
    if backend == "triton":
        from ..kernels.langevin_step import launch_langevin_step

        return launch_langevin_step(
            x_flat,
            score_flat,
            out_flat,
            seed,
            step,
            noise,
            clamp,
            row_size=row_size,
            elem_offset=elem_offset,
            injected_noise=injected,
        )
    return langevin_step_torch(
        x_flat,
        score_flat,
        out_flat,
        seed,
        step,
        noise,
        clamp,
        row_size=row_size,
        elem_offset=elem_offset,
        rng=rng,
        injected_noise=injected,
    )


def _unpack(step_value, step_tensor, noise_value, noise_tensor, noise_mode, lo, hi):
    step = Scale(value=step_value, tensor=step_tensor)
    if noise_mode == _NOISE_NONE:
        noise = "none"
    elif noise_mode == _NOISE_SQRT2A:
        noise = "sqrt2a"
    else:
        noise = Scale(value=noise_value, tensor=noise_tensor)
    return step, noise, (None if lo is None else (lo, hi))


# ---------------------------------------------------------------------------------------
# Custom ops
# ---------------------------------------------------------------------------------------
def _langevin_step_impl(
    x: torch.Tensor,
    score: torch.Tensor,
    seed: torch.Tensor,
    step_value: float,
    step_tensor: Optional[torch.Tensor],
    noise_value: float,
    noise_tensor: Optional[torch.Tensor],
    noise_mode: int,
    lo: Optional[float],
    hi: Optional[float],
    sample_offset: int,
    backend: str,
    rng: str,
    injected_noise: Optional[torch.Tensor],
) -> torch.Tensor:
    step, noise, clamp = _unpack(step_value, step_tensor, noise_value, noise_tensor, noise_mode, lo, hi)
    xc, sc = x.contiguous(), score.contiguous()
    out = torch.empty_like(xc)
    row_size = _row_size(x)
    inj = None if injected_noise is None else injected_noise.contiguous().reshape(-1)
    _dispatch(
        xc.reshape(-1),
        sc.reshape(-1),
        out.reshape(-1),
        seed,
        step,
        noise,
        clamp,
        row_size,
        sample_offset * row_size,
        backend,
        rng,
        inj,
    )
    return out


_langevin_step_op = torch.library.custom_op("fastlangevin::langevin_step", mutates_args=())(_langevin_step_impl)


@_langevin_step_op.register_fake
def _(
    x,
    score,
    seed,
    step_value,
    step_tensor,
    noise_value,
    noise_tensor,
    noise_mode,
    lo,
    hi,
    sample_offset,
    backend,
    rng,
    injected_noise,
):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    x, score, _seed, step_value, step_tensor, _nv, _nt, _nm, lo, hi = inputs[:10]
    ctx.step_value = step_value
    ctx.clamp = None if lo is None else (lo, hi)
    ctx.score_dtype = score.dtype
    ctx.save_for_backward(step_tensor, output if lo is not None else None)


def _backward(ctx, grad):
    step_tensor, out = ctx.saved_tensors
    if ctx.clamp is not None:  # d out/d pre = 1 strictly inside the clamp range, 0 where clamped
        grad = grad * ((out > ctx.clamp[0]) & (out < ctx.clamp[1])).to(grad.dtype)
    grad_x = grad if ctx.needs_input_grad[0] else None
    grad_s = None
    if ctx.needs_input_grad[1]:
        if step_tensor is None:
            a = ctx.step_value
        else:
            a = step_tensor.reshape((-1,) + (1,) * (grad.dim() - 1)) if step_tensor.dim() == 1 else step_tensor
        grad_s = (grad.to(torch.float32 if ctx.score_dtype != torch.float64 else torch.float64) * a).to(ctx.score_dtype)
    return (grad_x, grad_s) + (None,) * 12


_langevin_step_op.register_autograd(_backward, setup_context=_setup_context)


def _langevin_step_inplace_impl(
    x: torch.Tensor,
    score: torch.Tensor,
    seed: torch.Tensor,
    step_value: float,
    step_tensor: Optional[torch.Tensor],
    noise_value: float,
    noise_tensor: Optional[torch.Tensor],
    noise_mode: int,
    lo: Optional[float],
    hi: Optional[float],
    sample_offset: int,
    backend: str,
    rng: str,
    injected_noise: Optional[torch.Tensor],
) -> None:
    step, noise, clamp = _unpack(step_value, step_tensor, noise_value, noise_tensor, noise_mode, lo, hi)
    sc = score.contiguous().reshape(-1)
    row_size = _row_size(x)
    inj = None if injected_noise is None else injected_noise.contiguous().reshape(-1)
    target = x if x.is_contiguous() else x.contiguous()
    flat = target.reshape(-1)  # a view: the update lands in `target`
    _dispatch(flat, sc, flat, seed, step, noise, clamp, row_size, sample_offset * row_size, backend, rng, inj)
    if target is not x:
        x.copy_(target)


_langevin_step_inplace_op = torch.library.custom_op("fastlangevin::langevin_step_", mutates_args=("x",))(
    _langevin_step_inplace_impl
)


@_langevin_step_inplace_op.register_fake
def _(
    x,
    score,
    seed,
    step_value,
    step_tensor,
    noise_value,
    noise_tensor,
    noise_mode,
    lo,
    hi,
    sample_offset,
    backend,
    rng,
    injected_noise,
):
    return None


def run_inplace_op(args: tuple) -> None:
    """``fastlangevin::langevin_step_(*args)``, skipping the dispatcher when nothing needs it
    (see :func:`fastlangevin._backend.can_call_directly`): same function, ~100 µs less a call."""
    if _backend.can_call_directly(args[0], args[1], args[4], args[6]):
        _langevin_step_inplace_impl(*args)
    else:
        torch.ops.fastlangevin.langevin_step_(*args)


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------
def _prepare(x, score, step_size, noise_scale, clamp, generator, backend, rng, sample_offset, injected_noise=None):
    """Validate everything (before any write) and build the op's argument tuple."""
    check_state("x", x)
    check_like("score", score, x, "x")
    batch, device = x.shape[0], x.device
    step = check_scale("step_size", step_size, batch=batch, device=device)
    if noise_scale is None:
        if step.tensor is None:
            noise = Scale(value=math.sqrt(2.0 * step.value))
            mode = _NOISE_NONE if noise.is_zero else _NOISE_SCALE
        else:
            noise, mode = Scale(), _NOISE_SQRT2A
    else:
        noise = check_scale("noise_scale", noise_scale, batch=batch, device=device)
        mode = _NOISE_NONE if noise.is_zero else _NOISE_SCALE
    lo_hi = check_clamp(clamp)
    generator = check_generator(generator, device)
    sample_offset = check_offset("sample_offset", sample_offset)
    chosen = _backend.resolve_backend(device, backend)
    stream = resolve_rng(rng, chosen, device)
    if injected_noise is not None:
        check_like("injected_noise", injected_noise, x, "x")
    if mode == _NOISE_NONE or injected_noise is not None:
        seed = torch.zeros(1, dtype=torch.int64, device=device)  # unused: no draw, generator untouched
    else:
        seed = draw_seed(device, generator)
    st = None if step.tensor is None else step.tensor.contiguous()
    nt = None if noise.tensor is None else noise.tensor.contiguous()
    lo, hi = (None, None) if lo_hi is None else lo_hi
    return (
        x,
        score,
        seed,
        step.value,
        st,
        noise.value,
        nt,
        mode,
        lo,
        hi,
        sample_offset,
        chosen,
        stream,
        injected_noise,
    )


def langevin_step(
    x: torch.Tensor,
    score: torch.Tensor,
    step_size,
    noise_scale=None,
    *,
    clamp: Optional[Sequence[Optional[float]]] = None,
    generator: Optional[torch.Generator] = None,
    backend: Optional[str] = None,
    rng: Optional[str] = None,
    sample_offset: int = 0,
) -> torch.Tensor:
    """One fused Langevin update, out of place.

        out = clamp(x + step_size * score + noise_scale * z, lo, hi),   z ~ N(0, I) fresh per call

    Args:
        x: state ``[B, ...]`` (float32 / bfloat16 / float16; float64 too). Dim 0 is the batch.
        score: ``s(x)``, same shape and device as ``x``; any float dtype (math is fp32).
        step_size: ``a`` — float, 0-d tensor or per-sample ``[B]`` tensor (may live on the device).
        noise_scale: ``b`` — same forms; default ``sqrt(2 * step_size)``; 0 = deterministic update.
        clamp: optional ``(lo, hi)`` applied after the update (``None`` for an open side).
        generator: torch generator (on x's device type) the noise seed is drawn from.
        backend: "triton", "torch" or None (→ ``FASTLANGEVIN_BACKEND``, else auto).
        rng: fallback noise stream, "torch" (CPU default, fast) or "philox" (the kernel's).
        sample_offset: global index of ``x[0]`` — noise is keyed by the global sample index, so a
            shard ``x[i:j]`` run with ``sample_offset=i`` reproduces rows ``i:j`` of the whole batch.

    Returns:
        a new contiguous tensor shaped and typed like ``x``. Differentiable in ``x`` (1 inside the
        clamp range) and ``score`` (``step_size``); the scales are constants.
    """
    args = _prepare(x, score, step_size, noise_scale, clamp, generator, backend, rng, sample_offset)
    if _backend.can_call_directly(x, score):
        return _langevin_step_impl(*args)
    return torch.ops.fastlangevin.langevin_step(*args)


def langevin_step_(
    x: torch.Tensor,
    score: torch.Tensor,
    step_size,
    noise_scale=None,
    *,
    clamp: Optional[Sequence[Optional[float]]] = None,
    generator: Optional[torch.Generator] = None,
    backend: Optional[str] = None,
    rng: Optional[str] = None,
    sample_offset: int = 0,
) -> torch.Tensor:
    """In-place :func:`langevin_step`: updates ``x`` itself (any strides) and returns it.

    Bit-identical to the out-of-place op for the same generator state. Not differentiable
    (raises if autograd would need it). Every argument is checked before ``x`` is written.
    """
    args = _prepare(x, score, step_size, noise_scale, clamp, generator, backend, rng, sample_offset)
    if torch.is_grad_enabled() and (x.requires_grad or score.requires_grad):
        raise RuntimeError(
            "langevin_step_ (in-place) does not support autograd; use langevin_step, or run under torch.no_grad()"
        )
    run_inplace_op(args)
    return x


def langevin_step_with_noise(
    x, score, noise, step_size, noise_scale=None, *, clamp=None, backend=None, inplace=False
) -> torch.Tensor:
    """Test hook: the same op with the noise ``z`` supplied instead of drawn (kernel included)."""
    args = _prepare(x, score, step_size, noise_scale, clamp, None, backend, None, 0, injected_noise=noise)
    if inplace:
        torch.ops.fastlangevin.langevin_step_(*args)
        return x
    return torch.ops.fastlangevin.langevin_step(*args)
