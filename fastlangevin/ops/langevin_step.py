"""The fused Langevin update as torch custom ops, and its public functions.

    out = clamp(x + step_size * score + noise_scale * z, lo, hi),    z ~ N(0, I)

``fastlangevin::langevin_step`` (out-of-place, differentiable) and ``fastlangevin::langevin_step_``
(in-place on ``x``) are registered with ``torch.library.custom_op``; each dispatches to the Triton
kernel (``fastlangevin.kernels.langevin_step``) or the PyTorch fallback
(``fastlangevin.fallback.langevin_step``). The noise seed is an int64 tensor input to the op, so
the op is a pure function of its inputs: opcheck, AOTAutograd and CUDA graphs all see fresh
noise exactly when the seed tensor changes (noise convention: :mod:`fastlangevin._rng`).

The ops' arguments are :class:`StepArgs`, built by keyword in one place (:func:`step_args`),
which the corrector and the samplers reuse. Modes are those of :mod:`fastlangevin.modes`.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence

import torch

from .. import _backend, modes
from .._backend import _dispatch_modes, _function_mode_on, _is_compiling
from .._rng import SEED_HIGH, TORCH_RNG_CHUNK, chunk_seed, draw_seed, draw_seed_reused, draw_seed_value
from .._validate import (
    FLOAT_DTYPES,
    Scale,
    check_clamp,
    check_generator,
    check_like,
    check_offset,
    check_scale,
    check_state,
)
from ..fallback.chunks import _SCRATCH as _THREAD
from ..fallback.chunks import RNG_STREAMS, thread_scratch
from ..fallback.langevin_step import _FP32 as _FP32_SCALARS
from ..fallback.langevin_step import FP32_ONE, _serial_chunks, _serial_cpu, fp32_scalar, langevin_step_torch

RNG_ENV_VAR = "FASTLANGEVIN_RNG"


def resolve_rng(rng: Optional[str], backend: str, device: torch.device) -> str:
    """The noise stream: Triton always uses Philox; the fallback defaults to the fast
    chunk-keyed torch stream on CPU and to Philox elsewhere (``FASTLANGEVIN_RNG`` overrides;
    read once, see :func:`fastlangevin._backend.reload_environment`)."""
    if rng is None:
        rng = _backend.env_setting(RNG_ENV_VAR)
    if rng is None:
        return "torch" if backend == "torch" and _backend.device_type(device) == "cpu" else "philox"
    if rng not in RNG_STREAMS:
        raise ValueError(f"rng must be 'torch', 'philox' or None, got {rng!r}")
    if rng == "torch" and (backend != "torch" or _backend.device_type(device) != "cpu"):
        raise ValueError(
            "rng='torch' (torch's CPU generator) is only available with backend='torch' on CPU tensors; "
            "use rng='philox'"
        )
    return rng


class StepArgs(NamedTuple):
    """The arguments of ``fastlangevin::langevin_step`` / ``langevin_step_``, in schema order.

    Build it by keyword (:func:`step_args`, or ``StepArgs(x=..., ...)``) and call the op with
    ``*args``. A scale is ``*_value`` (a float) when ``*_tensor`` is None, else the 0-d or
    ``[B]`` tensor. ``noise_mode``: :data:`modes.NOISE_NONE`, :data:`modes.NOISE_SQRT2A`
    (b = sqrt(2 a)), or the ``SCALE_*`` mode of the noise scale (:func:`modes.scale_mode`).
    ``lo``/``hi``: the clamp, both None for none.
    """

    x: torch.Tensor
    score: torch.Tensor
    seed: torch.Tensor
    step_value: float = 0.0
    step_tensor: Optional[torch.Tensor] = None
    noise_value: float = 0.0
    noise_tensor: Optional[torch.Tensor] = None
    noise_mode: int = modes.NOISE_NONE
    lo: Optional[float] = None
    hi: Optional[float] = None
    sample_offset: int = 0
    backend: str = "torch"
    rng: str = "torch"
    injected_noise: Optional[torch.Tensor] = None


def _row_size(x: torch.Tensor) -> int:
    batch = x.shape[0]
    return x.numel() // batch if batch else math.prod(x.shape[1:])


_LAUNCHER = []
#: ``increment_version(t)``: what an in-place torch op does to ``t``'s version counter, so autograd still
#: refuses a backward through a tensor a kernel overwrote after it was saved.
_bump_version = torch.autograd.graph.increment_version


def _triton_launcher():
    """The kernel launcher, imported on first use (importing it imports Triton)."""
    if not _LAUNCHER:
        from ..kernels.langevin_step import launch_langevin_step

        _LAUNCHER.append(launch_langevin_step)
    return _LAUNCHER[0]


def _dispatch(a: StepArgs, x, score, out, injected) -> None:
    """Run the backend on contiguous ``x``, ``score``, ``out`` (and ``injected``): the kernel
    takes them as they are (it only needs their pointers); the fallback gets flat views."""
    if _backend._RECORDERS:
        _backend.record("langevin_step", a.backend)
    row_size = _row_size(a.x)
    kw = dict(
        step_value=a.step_value,
        step_tensor=a.step_tensor,
        noise_mode=a.noise_mode,
        noise_value=a.noise_value,
        noise_tensor=a.noise_tensor,
        lo=a.lo,
        hi=a.hi,
        row_size=row_size,
        elem_offset=a.sample_offset * row_size,
        injected_noise=injected,
    )
    if a.backend == "triton":
        _triton_launcher()(x, score, out, a.seed, **kw)
        if out is x:  # a kernel's write is invisible to autograd: bump x's version as an in-place torch op does
            _bump_version(x)
    else:
        flat_out = out.view(-1)
        flat_x = flat_out if x is out else x.view(-1)
        if injected is not None:
            kw["injected_noise"] = injected.view(-1)
        langevin_step_torch(flat_x, score.view(-1), flat_out, a.seed, rng=a.rng, **kw)


def _step_out(a: StepArgs) -> torch.Tensor:
    """The out-of-place op's body: a new contiguous tensor."""
    xc, sc = a.x.contiguous(), a.score.contiguous()
    out = torch.empty_like(xc)
    inj = None if a.injected_noise is None else a.injected_noise.contiguous()
    _dispatch(a, xc, sc, out, inj)
    return out


def _step_in_place(a: StepArgs) -> None:
    """The in-place op's body: the update lands in ``a.x`` (through a contiguous copy if needed)."""
    x = a.x
    target = x if x.is_contiguous() else x.contiguous()
    inj = None if a.injected_noise is None else a.injected_noise.contiguous()
    _dispatch(a, target, a.score.contiguous(), target, inj)
    if target is not x:
        x.copy_(target)


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
    return _step_out(StepArgs(**locals()))  # locals() are exactly the op's arguments here


_langevin_step_op = torch.library.custom_op("fastlangevin::langevin_step", mutates_args=())(_langevin_step_impl)


@_langevin_step_op.register_fake
def _(x, score, *_args):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    a = StepArgs(*inputs)
    ctx.step_value = a.step_value
    ctx.clamp = None if a.lo is None else (a.lo, a.hi)
    ctx.score_dtype = a.score.dtype
    ctx.save_for_backward(a.step_tensor, output if a.lo is not None else None)


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
    return (grad_x, grad_s) + (None,) * (len(StepArgs._fields) - 2)


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
    _step_in_place(StepArgs(**locals()))  # locals() are exactly the op's arguments here


_langevin_step_inplace_op = torch.library.custom_op("fastlangevin::langevin_step_", mutates_args=("x",))(
    _langevin_step_inplace_impl
)


@_langevin_step_inplace_op.register_fake
def _(x, score, *_args):
    return None


def run_inplace_op(args: StepArgs) -> None:
    """``fastlangevin::langevin_step_(*args)``, skipping the dispatcher when nothing needs it
    (see :func:`fastlangevin._backend.can_call_directly`): same function, ~100 µs less a call."""
    if _backend.can_call_directly(args.x, args.score, args.step_tensor, args.noise_tensor):
        _step_in_place(args)
    else:
        torch.ops.fastlangevin.langevin_step_(*args)


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------
def _noise_scale(step: Scale, noise_scale, batch: int, device: torch.device):
    """(noise Scale, noise_mode) for the ``noise_scale=`` argument (None: sqrt(2 step))."""
    if noise_scale is None:
        if step.tensor is None:
            b = math.sqrt(2.0 * step.value)
            return Scale(b), (modes.NOISE_NONE if b == 0.0 else modes.SCALE_ARG)
        return Scale(), modes.NOISE_SQRT2A
    noise = check_scale("noise_scale", noise_scale, batch=batch, device=device)
    if noise.is_zero:
        return noise, modes.NOISE_NONE
    return noise, modes.scale_mode(noise.tensor)


_CHOICES = _backend.derived_cache()  # (device, backend, rng) arguments -> (backend, stream)
_ZERO_SEEDS: dict = {}  # device -> int64 [1] zeros, never written (the seed of calls without a draw)


def _choices(device: torch.device, backend, rng) -> tuple:
    """``(resolve_backend(device, backend), resolve_rng(rng, ...))``, cached once resolved."""
    try:
        return _CHOICES[(device, backend, rng)]
    except (KeyError, TypeError):  # TypeError: unhashable arguments, refused below
        pass
    chosen = _backend.resolve_backend(device, backend)
    got = _CHOICES[(device, backend, rng)] = (chosen, resolve_rng(rng, chosen, device))
    return got


def check_call_options(device: torch.device, clamp, generator, sample_offset, backend, rng) -> tuple:
    """The checks every fused op makes of its options (metadata only, nothing drawn):
    ``(clamp as (lo, hi) or None, backend, noise stream)``; raises naming the bad argument."""
    lo_hi = check_clamp(clamp) if clamp is not None else None
    if generator is not None:
        check_generator(generator, device)
    if type(sample_offset) is not int or sample_offset < 0:
        check_offset("sample_offset", sample_offset)
    return (lo_hi, *_choices(device, backend, rng))


def _zero_seed(device: torch.device) -> torch.Tensor:
    seed = _ZERO_SEEDS.get(device)
    if seed is None:
        with torch.inference_mode(False):  # kept across calls (see _backend.KEPT)
            seed = _ZERO_SEEDS[device] = torch.zeros(1, dtype=torch.int64, device=device)
    return seed


def draw_cpu_seed(generator) -> torch.Tensor:
    """The :func:`draw_seed` draw on CPU into this thread's reused int64 ``[1]`` buffer (returned):
    for calls that use the seed tensor only before they return (CPU ops are synchronous)."""
    st = getattr(_THREAD, "st", None) or thread_scratch()
    if generator is None:
        return st.seed.random_(0, SEED_HIGH)
    return st.seed.random_(0, SEED_HIGH, generator=generator)


def _build(
    x, score, step_size, noise_scale, clamp, generator, backend, rng, sample_offset, injected_noise, inplace
) -> tuple:
    """Validate everything — metadata only, before any write or generator draw — then draw the
    seed and build the op's :class:`StepArgs`. Returns ``(args, direct)``: ``direct`` when the
    call may skip the dispatcher (:func:`fastlangevin._backend.can_call_directly`); on the CPU
    fallback the seed is then drawn as a Python int (no tensor: see :func:`draw_seed_value`)."""
    check_state("x", x)
    check_like("score", score, x, "x")
    batch, device = x.shape[0], x.device
    step = check_scale("step_size", step_size, batch=batch, device=device)
    noise, noise_mode = _noise_scale(step, noise_scale, batch, device)
    lo_hi, chosen, stream = check_call_options(device, clamp, generator, sample_offset, backend, rng)
    if injected_noise is not None:
        check_like("injected_noise", injected_noise, x, "x")
    if inplace and torch.is_grad_enabled() and (x.requires_grad or score.requires_grad):
        raise RuntimeError(
            "langevin_step_ (in-place) does not support autograd; use langevin_step, or run under torch.no_grad()"
        )
    st = step.tensor if step.tensor is None or step.tensor.is_contiguous() else step.tensor.contiguous()
    nt = noise.tensor if noise.tensor is None or noise.tensor.is_contiguous() else noise.tensor.contiguous()
    direct = _backend.can_call_directly(x, score, st, nt)
    # validated: only now touch the generator (a refused call leaves it as it was)
    if noise_mode == modes.NOISE_NONE or injected_noise is not None:
        seed = _zero_seed(device)  # unused: no draw, generator untouched
    elif direct and device.type == "cpu":
        # CPU ops run synchronously: the thread's seed buffer is free again when the call returns
        if chosen == "torch" and stream == "torch":
            seed = draw_seed_value(generator)
        else:
            seed = draw_cpu_seed(generator)
    else:
        seed = draw_seed(device, generator)
    lo, hi = (None, None) if lo_hi is None else lo_hi
    args = StepArgs(
        x=x,
        score=score,
        seed=seed,
        step_value=step.value,
        step_tensor=st,
        noise_value=noise.value,
        noise_tensor=nt,
        noise_mode=noise_mode,
        lo=lo,
        hi=hi,
        sample_offset=sample_offset,
        backend=chosen,
        rng=stream,
        injected_noise=injected_noise,
    )
    return args, direct


_CPU = torch.device("cpu")
_TENSOR, _FP32, _INF = torch.Tensor, torch.float32, math.inf


_FLOAT_SET = frozenset(FLOAT_DTYPES)


def lean_triton_case(x, score, backend, rng, sample_offset) -> bool:
    """Whether an in-place update of ``x`` by ``score`` can take a lean Triton path (the step's, the
    corrector's): plain contiguous tensors of one float dtype family, same shape and device, nothing
    intercepting, no autograd graph to record, ``(device, backend, rng)`` already resolved to Triton by
    an earlier call, and a non-negative int offset. Checks only: nothing is drawn or written."""
    if (
        type(x) is not _TENSOR
        or type(score) is not _TENSOR
        or _is_compiling()
        or _function_mode_on()
        or _dispatch_modes()
        or (torch.is_grad_enabled() and (x.requires_grad or score.requires_grad))
    ):
        return False
    shape, device = x.shape, x.device
    try:
        chosen = _CHOICES[(device, backend, rng)][0]  # resolved by an earlier call (else: general path)
    except (KeyError, TypeError):
        return False
    return not (
        chosen != "triton"
        or not shape
        or x.dtype not in _FLOAT_SET
        or score.dtype not in _FLOAT_SET
        or score.shape != shape
        or score.device != device
        or not x.is_contiguous()
        or not score.is_contiguous()
        or type(sample_offset) is not int
        or sample_offset < 0
    )


def _lean_triton_step(x, score, step_size, noise_scale, clamp, generator, backend, rng, sample_offset, inplace: bool):
    """The step on the Triton path for plain contiguous tensors with nothing intercepting and no
    autograd graph to record: :func:`_build`'s checks (same order, same messages) and its seed draw,
    then the launch, without StepArgs, the dispatcher or the generic body. Returns ``x`` (in place) or
    the new tensor; None when the call is not that case (the general path then runs it, raising where
    it must). Nothing is drawn or written before every check has passed; same seed, same launch, so
    bitwise the general path's result."""
    if not lean_triton_case(x, score, backend, rng, sample_offset):
        return None
    shape, device = x.shape, x.device
    if type(step_size) is float and 0.0 < step_size < _INF:
        a, st = step_size, None
        if noise_scale is None:
            b, noise_mode = math.sqrt(2.0 * a), modes.SCALE_ARG  # > 0 for every a > 0
        elif type(noise_scale) is float and 0.0 < noise_scale < _INF:
            b, noise_mode = noise_scale, modes.SCALE_ARG
        else:
            return None
    elif type(step_size) is _TENSOR and noise_scale is None:
        st = check_scale("step_size", step_size, batch=shape[0], device=device).tensor
        if st is None:  # a 0-d CPU tensor for a device x: a float now (the general path's case)
            return None
        a, b, noise_mode = 0.0, 0.0, modes.NOISE_SQRT2A
        if not st.is_contiguous():
            st = st.contiguous()
    else:
        return None
    lo_hi = check_clamp(clamp) if clamp is not None else None
    if generator is not None:
        check_generator(generator, device)
    # validated: only now touch the generator (CPU ops are synchronous: the thread's buffer is free again)
    seed = draw_cpu_seed(generator) if x.is_cpu else draw_seed_reused(device, generator)
    if _backend._RECORDERS:
        _backend.record("langevin_step", "triton")
    batch = shape[0]
    row_size = x.numel() // batch if batch else math.prod(shape[1:])
    out = x if inplace else torch.empty_like(x)
    lo, hi = (None, None) if lo_hi is None else lo_hi
    (_LAUNCHER[0] if _LAUNCHER else _triton_launcher())(
        x,
        score,
        out,
        seed,
        step_value=a,
        step_tensor=st,
        noise_mode=noise_mode,
        noise_value=b,
        noise_tensor=None,
        lo=lo,
        hi=hi,
        row_size=row_size,
        elem_offset=sample_offset * row_size,
    )
    if inplace:
        _bump_version(x)
    return out


# (backend, rng) arguments -> whether they select the CPU fallback with the torch stream
_SMALL_CHOICE = _backend.derived_cache()
# id -> generator already checked to be a CPU torch.Generator (the strong reference keeps the id unique)
_CPU_GENERATORS: dict = {}
# torch.compiler.is_compiling() is two Python calls (it asks torch.jit.is_scripting() first), ~0.2
# µs in the straight path's loop. In eager code it returns torch.compiler._is_compiling_flag, and
# Dynamo folds is_dynamo_compiling() to True while it traces, so `_is_dynamo_compiling() or
# _COMPILER._is_compiling_flag` is is_compiling() with one call (inside a traced frame the flag
# is never read, so never guarded on). A torch without them asks is_compiling() itself.
_is_dynamo_compiling = getattr(torch.compiler, "is_dynamo_compiling", None)
if _is_dynamo_compiling is not None and isinstance(getattr(torch.compiler, "_is_compiling_flag", None), bool):
    _COMPILER = torch.compiler
else:  # pragma: no cover - older torch

    class _AskIsCompiling:
        @property
        def _is_compiling_flag(self) -> bool:
            return _is_compiling()

    _is_dynamo_compiling, _COMPILER = (lambda: False), _AskIsCompiling()


def _small_choice(backend, rng) -> bool:
    """Whether ``backend``/``rng`` (and the environment) give the CPU fallback with the torch
    stream; invalid values give False (the general path then raises with its message)."""
    try:
        return _SMALL_CHOICE[(backend, rng)]
    except KeyError:
        pass
    except TypeError:  # unhashable: not a valid backend / rng anyway
        return False
    try:
        ok = _backend.resolve_backend(_CPU, backend) == "torch" and resolve_rng(rng, "torch", _CPU) == "torch"
    except Exception:  # refused: the general path raises it
        return False
    _SMALL_CHOICE[(backend, rng)] = ok
    if backend is None and rng is None:  # the defaults, also under None: the caller's one-lookup fast case
        _SMALL_CHOICE[None] = ok
    return ok


def _cpu_generator(generator) -> bool:
    if _CPU_GENERATORS.get(id(generator)) is generator:
        return True
    if type(generator) is not torch.Generator or generator.device != _CPU:
        return False
    if len(_CPU_GENERATORS) >= 64:
        _CPU_GENERATORS.clear()
    _CPU_GENERATORS[id(generator)] = generator
    return True


def _small_cpu_step_(
    x, score, step_size, noise_scale, clamp, generator, backend, rng, sample_offset, out_of_place: bool = False
):
    """The step for the common small CPU case, straight through: True (in place on x) or the new
    tensor (``out_of_place``); False when the call is not that case (the general path then
    validates and runs it, raising where it must).

    The case: fp32 ``x`` and ``score``, contiguous, same shape, inside one noise chunk
    (:mod:`fastlangevin.fallback.chunks`; several chunks go to :func:`_walk_run`), Python-float
    scales, the CPU fallback with the torch stream, nothing that needs the dispatcher. The same
    operations in the same order as the general path (``(x + a*s) + fl(b*z)``, z prescaled
    inside ``normal_``), so bitwise the same result and the same generator draw; it only skips
    the generic machinery around them. That machinery costs more than its count of Python
    lines suggests at mid sizes: after a 2**16-element ``normal_`` and three passes the
    interpreter's objects are out of the caches, and each small function call of the general
    path then costs ~10 µs (measured at 2**16: ~60 µs of a ~250 µs call).

    Cost floor (256x2, 1 thread). Per op, µs (shared machine): seed ``random_`` 0.83 + ``item``
    0.08 (through the numpy view; 0.23 as ``Tensor.item``), ``chunk_seed`` 0.36,
    ``Generator.manual_seed`` 1.15, ``normal_`` (512) 2.55, ``mul`` 1.1, ``add_`` 0.95 x 2: ~8 µs
    of torch ops that the fixed stream (a per-call seed drawn from the caller's generator, a
    reseeded chunk generator) and the no-FMA order ``(x + a*s) + b*z`` need, against ~6 µs for
    the whole hand-written ``x.add_(s, alpha=eps).add_(randn_like(x), alpha=b)`` (3 ops, FMA, the
    global generator): the bitwise ceiling is ~0.6x the hand-written loop (reproduce: ``python
    tests/speed_check.py step --cpu-time``, whose ``floor`` row runs the ops alone). The checks
    below are ~25 metadata reads of 40-90 ns each measured alone, ~1.5 µs in the loop (the torch
    ops around them evict the interpreter's caches). The arithmetic stays torch ops: a numpy
    view of the caller's ``x`` costs 0.7 µs a call (it must not be cached: the tensor may be
    resized or freed), more than the ufuncs save; see also :class:`InplaceStepper`.
    """
    if (
        type(x) is not _TENSOR
        or type(score) is not _TENSOR
        or type(step_size) is not float
        or clamp is not None
        or type(sample_offset) is not int
        or x.dtype is not _FP32
        or score.dtype is not _FP32
        or not x.is_cpu
        or not score.is_cpu
        or not (0.0 < step_size < _INF)
        or not ((backend is None and rng is None and _SMALL_CHOICE.get(None)) or _small_choice(backend, rng))
        or _is_dynamo_compiling()
        or _COMPILER._is_compiling_flag
        or _function_mode_on()
        or _dispatch_modes()
    ):
        return False
    shape = x.shape
    if shape != score.shape or not x.is_contiguous() or not score.is_contiguous():
        return False
    if noise_scale is None:
        b = math.sqrt(2.0 * step_size)
    elif type(noise_scale) is float and 0.0 < noise_scale < _INF:
        b = noise_scale
    else:
        return False
    if generator is not None and not _cpu_generator(generator):
        return False
    if (x.requires_grad or score.requires_grad) and torch.is_grad_enabled():
        return False  # the general path raises (in place) or records the autograd graph
    st = getattr(_THREAD, "st", None) or thread_scratch()
    plan = st.views.get((shape, sample_offset))
    if plan is None:
        plan = _small_plan(st, shape, sample_offset)
    if not plan:
        return False
    if plan[0] is None:  # several pieces: the serial chunk walk, when one thread walks them
        return _walk_run(st, plan, x, score, step_size, b, generator, out_of_place)
    # the operations (inline: a call more costs ~0.15 µs here); InplaceStepper.__call__ runs the same
    if generator is None:
        st.seed.random_(0, SEED_HIGH)  # the draw draw_seed_value makes, into the thread's seed buffer
    else:
        st.seed.random_(0, SEED_HIGH, generator=generator)
    if _backend._RECORDERS:
        _backend.record("langevin_step", "torch")
    gen = st.gen
    gen.manual_seed(chunk_seed(st.seed_np.item(), plan[0]))
    plan[1].normal_(0.0, b, generator=gen)  # z prescaled: bitwise fl(b * z)
    # x + fl(a*s) in one pass, bitwise the general path's mul then add (see FP32_ONE)
    if out_of_place:  # a new tensor: (x + a*s) + b*z, the general path's out-of-place arithmetic
        return torch.addcdiv(x, score, FP32_ONE, value=step_size).add_(plan[2])
    x.addcdiv_(score, FP32_ONE, value=step_size)
    x.add_(plan[2])
    return True


def _small_plan(st, shape, sample_offset: int):
    """What the straight path needs for a state of ``shape`` at ``sample_offset``, cached in
    ``st.views``: ``(chunk, noise fill view, noise view shaped like x)`` of ``st``'s buffers for
    a state inside one noise chunk (up to 2**16 elements: above ``CPU_PIECE`` the general path
    walks it as one piece too, with the same operations); ``(None, element offset, n)`` for a
    state over several chunks: the serial chunk walk's case; False when the state is not the
    straight path's at all (0-d, empty, a negative offset)."""
    if len(st.views) > 256:
        st.views.clear()
    n = math.prod(shape)
    plan = False
    if shape and n > 0 and sample_offset >= 0:
        start = sample_offset * (n // shape[0])
        chunk, head = divmod(start, TORCH_RNG_CHUNK)
        if head + n <= TORCH_RNG_CHUNK:  # one chunk: the walk's operations for it, on the thread's buffers
            fill = min(TORCH_RNG_CHUNK, max(16, -(-(head + n) // 16) * 16))  # normal_ fills groups of 16
            plan = (chunk, st.noise[:fill], st.noise[head : head + n].view(shape))
        else:
            plan = (None, start, n)
    st.views[(shape, sample_offset)] = plan
    return plan


def _walk_run(st, plan: tuple, x, score, a: float, b: float, generator, out_of_place: bool):
    """A multi-piece fp32 state, everything validated: when one thread walks its chunks (see
    :func:`fastlangevin.fallback.langevin_step._serial_cpu`), draw the seed as the straight path
    does and run the walk the general path runs for it (:func:`_serial_chunks`, same arguments:
    bitwise the same). False, before any draw, when the walk would be threaded: the general path
    runs it. Skipping the general path's Python is worth more than its ~30 µs alone suggests: it
    runs after megabytes of arithmetic have evicted the interpreter's objects from the caches
    (measured at 2**20, 1 thread: ~150 µs of the call)."""
    _, start, n = plan
    xf = x.view(-1)
    if not _serial_cpu(xf, n, start):
        return False
    if generator is None:
        st.seed.random_(0, SEED_HIGH)
    else:
        st.seed.random_(0, SEED_HIGH, generator=generator)
    seed = st.seed_np.item()
    if _backend._RECORDERS:
        _backend.record("langevin_step", "torch")
    a_t = _FP32_SCALARS.get(a)
    a_t = a_t if a_t is not None else fp32_scalar(a)
    if out_of_place:  # the general path's _step_out: a new contiguous tensor
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
        _serial_chunks(xf, score.view(-1), out.view(-1), seed, a_t, b, start, False)
        return out
    _serial_chunks(xf, score.view(-1), xf, seed, a_t, b, start, True)
    return True


class InplaceStepper:
    """``langevin_step_(x, s, a, noise_scale, **kw)`` for a sampler's state ``x``, with everything
    but the score and the step size checked once per run instead of once per step.

    ``stepper(s, a)`` is bitwise that call (same seed draw, same arithmetic); ``s`` must come from
    :func:`fastlangevin.sampling.loop.eval_score` (shaped like x, on its device, floating) and
    ``x`` must stay the sampler's own contiguous state. The small fp32 CPU case runs the
    operations of :func:`_small_cpu_step_` after the per-step checks (score dtype and layout, a
    float step, no interception); anything else goes through :func:`langevin_step_` unchanged.

    Why the adds stay torch ops even though the stepper owns ``x`` (a numpy ufunc on a cached
    view of x costs ~0.4 µs against ~1 µs): where x and s are both NaN, IEEE leaves the payload
    of ``x + a*s`` to the implementation and numpy's differs from torch's (not bitwise), and
    numpy warns (or raises, under ``np.seterr``) on overflow where torch is silent;
    ``np.errstate`` around the add costs the ~1 µs the ufunc saves.
    """

    __slots__ = ("x", "noise_scale", "kw", "generator", "st", "plan")

    def __init__(self, x, noise_scale=None, *, clamp=None, generator=None, backend=None, rng=None, sample_offset=0):
        self.x, self.noise_scale, self.generator = x, noise_scale, generator
        self.kw = dict(clamp=clamp, generator=generator, backend=backend, rng=rng, sample_offset=sample_offset)
        self.st, self.plan = None, False
        small = (
            type(x) is _TENSOR
            and x.dtype is _FP32
            and x.is_cpu
            and x.is_contiguous()
            and clamp is None
            and type(sample_offset) is int
            and (noise_scale is None or (type(noise_scale) is float and 0.0 < noise_scale < _INF))
            and (generator is None or _cpu_generator(generator))
            and _small_choice(backend, rng)
        )
        if small:
            self.st = st = thread_scratch()
            plan = st.views.get((x.shape, sample_offset))
            if plan is None:
                plan = _small_plan(st, x.shape, sample_offset)
            self.plan = plan if plan and plan[0] is not None else False  # a walk: langevin_step_ runs it

    def __call__(self, s, a) -> None:
        if (
            self.plan
            and type(a) is float
            and type(s) is _TENSOR
            and s.dtype is _FP32
            and 0.0 < a < _INF
            and s.is_contiguous()
            and not (s.requires_grad and torch.is_grad_enabled())
            and not (_is_dynamo_compiling() or _COMPILER._is_compiling_flag or _function_mode_on() or _dispatch_modes())
        ):
            # _small_cpu_step_'s operations, inline (a call more costs ~0.15 µs a step)
            st, plan, generator = self.st, self.plan, self.generator
            if generator is None:
                st.seed.random_(0, SEED_HIGH)
            else:
                st.seed.random_(0, SEED_HIGH, generator=generator)
            if _backend._RECORDERS:
                _backend.record("langevin_step", "torch")
            gen = st.gen
            gen.manual_seed(chunk_seed(st.seed_np.item(), plan[0]))
            plan[1].normal_(0.0, math.sqrt(2.0 * a) if self.noise_scale is None else self.noise_scale, generator=gen)
            x = self.x
            x.addcdiv_(s, FP32_ONE, value=a)
            x.add_(plan[2])
        else:
            langevin_step_(self.x, s, a, self.noise_scale, **self.kw)


def step_args(
    x,
    score,
    step_size,
    noise_scale=None,
    *,
    clamp=None,
    generator=None,
    backend=None,
    rng=None,
    sample_offset: int = 0,
    injected_noise=None,
) -> StepArgs:
    """Validate the arguments of :func:`langevin_step` and draw the call's seed: the op's
    :class:`StepArgs` (seed an int64 ``[1]`` tensor), ready for ``torch.ops.fastlangevin.*``."""
    args, _ = _build(
        x, score, step_size, noise_scale, clamp, generator, backend, rng, sample_offset, injected_noise, False
    )
    if isinstance(args.seed, int):
        args = args._replace(seed=torch.tensor([args.seed], dtype=torch.int64))
    elif args.seed is thread_scratch().seed:  # the caller keeps these args: a seed of its own
        args = args._replace(seed=args.seed.clone())
    return args


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
    if backend != "triton":  # (_small_cpu_step_ refuses "triton" anyway: one call less on that path)
        out = _small_cpu_step_(x, score, step_size, noise_scale, clamp, generator, backend, rng, sample_offset, True)
        if out is not False:
            return out
    out = _lean_triton_step(x, score, step_size, noise_scale, clamp, generator, backend, rng, sample_offset, False)
    if out is not None:
        return out
    args, direct = _build(x, score, step_size, noise_scale, clamp, generator, backend, rng, sample_offset, None, False)
    if direct:
        return _step_out(args)
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
    if backend != "triton" and _small_cpu_step_(
        x, score, step_size, noise_scale, clamp, generator, backend, rng, sample_offset
    ):  # (it refuses "triton" anyway: one call less on that path)
        return x
    if (
        _lean_triton_step(x, score, step_size, noise_scale, clamp, generator, backend, rng, sample_offset, True)
        is not None
    ):
        return x
    args, direct = _build(x, score, step_size, noise_scale, clamp, generator, backend, rng, sample_offset, None, True)
    if direct:
        _step_in_place(args)
    else:
        torch.ops.fastlangevin.langevin_step_(*args)
    return x


def langevin_step_with_noise(
    x, score, noise, step_size, noise_scale=None, *, clamp=None, backend=None, inplace=False
) -> torch.Tensor:
    """Test hook: the same op with the noise ``z`` supplied instead of drawn (kernel included)."""
    args = step_args(x, score, step_size, noise_scale, clamp=clamp, backend=backend, injected_noise=noise)
    if inplace:
        torch.ops.fastlangevin.langevin_step_(*args)
        return x
    return torch.ops.fastlangevin.langevin_step(*args)
