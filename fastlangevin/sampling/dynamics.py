"""Plain (ULA) and annealed (NCSN) Langevin dynamics on the fused update.

ULA, step ε (or any affine pair a, b):

    x ← x + a · s(x) + b · z,     b = √(2a) by default,   z ~ N(0, I)

Annealed Langevin dynamics (Song & Ermon 2019), noise levels σ₁ > … > σ_L, T steps per level:

    αᵢ = ε · σᵢ² / σ_L²,     x ← x + αᵢ · s(x, σᵢ) + √(2αᵢ) · z

with an optional final denoising step x ← x + σ_L² · s(x, σ_L) (Tweedie's formula, NCSNv2).
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch

from .._validate import check_scale, check_state
from ..ops.langevin_step import InplaceStepper, langevin_step_
from .checkpoint import Checkpointer, fingerprint
from .loop import Loop, LoopOptions, Slot, Trace, check_n, compute_dtype, eval_score, labels_on, op_kwargs, phase
from .stats import RunningStats

_COMMON_DOC = """
    Common options (every sampler):
        clamp: ``(lo, hi)`` applied after every update (``None`` for an open side).
        generator: torch generator the noise seeds are drawn from (one draw per fused-op call,
            whatever the batch size: runs are reproducible from a seed and batch-invariant).
        callback: ``callback(step, x)`` after each step (``step`` = steps done, from 1); ``x`` is
            the live state — clone it to keep it.
        progress: show a tqdm progress bar (steps, rate, ETA); when stderr is not a terminal it
            writes a plain line every 30 s and at the end instead of `\\r` updates.
        trace: a :class:`fastlangevin.Trace`; records the state every ``trace.every`` steps into
            one preallocated device tensor (no host copy).
        stats: a :class:`fastlangevin.RunningStats`; streams per chain and dimension mean,
            variance and batch-means ESS/MCSE of the recorded steps (no trajectory stored, no
            host sync).
        on_nonfinite: "ignore" (default) or "raise": check the state after each step and raise
            :class:`fastlangevin.NonFiniteError` naming the first step that produced NaN/Inf.
            The check is a host sync per step (``isfinite(x).all()``): it stalls the launch
            queue, so leave it off in production runs.
        cuda_graph: capture one full step (score network + update) in a CUDA graph and replay
            it; every replay draws a fresh seed on the device, so noise stays fresh. CUDA only
            (ValueError otherwise); the score function must be capturable (no host syncs,
            no data-dependent shapes).
        backend, rng: as in :func:`fastlangevin.langevin_step`.
        checkpoint, checkpoint_every: write the whole run state to the file ``checkpoint`` after
            every ``checkpoint_every`` steps, atomically (see :mod:`fastlangevin.sampling.checkpoint`).
        resume: a checkpoint file of the same call: continue from it; the result is bitwise the
            uninterrupted run's. A checkpoint of a different call is refused (``ValueError``
            naming what differs).
        sample_offset: global index of ``x[0]``: noise is keyed by the global sample index, so a
            shard ``x[i:j]`` with ``sample_offset=i`` reproduces those rows of the whole batch.
"""


def _start_state(x0: torch.Tensor) -> torch.Tensor:
    check_state("x0", x0)
    return x0.detach().clone(memory_format=torch.contiguous_format)


def langevin(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    *,
    step_size,
    n_steps: int,
    noise_scale=None,
    clamp=None,
    generator: Optional[torch.Generator] = None,
    callback=None,
    progress: bool = False,
    trace: Optional[Trace] = None,
    stats: Optional[RunningStats] = None,
    on_nonfinite: str = "ignore",
    cuda_graph: bool = False,
    backend: Optional[str] = None,
    rng: Optional[str] = None,
    sample_offset: int = 0,
    checkpoint=None,
    checkpoint_every: Optional[int] = None,
    resume=None,
) -> torch.Tensor:
    """Unadjusted Langevin algorithm: ``n_steps`` of ``x ← x + a s(x) + b z``.

    Args:
        score_fn: ``score_fn(x) -> s`` shaped like x (``[B, ...]``).
        x0: starting state ``[B, ...]`` (not modified).
        step_size: a — float, 0-d or per-sample ``[B]`` tensor.
        n_steps: number of steps (>= 1).
        noise_scale: b — same forms; default √(2a).

    There is no step-size adaptation for ULA (no accept/reject step, so no observable statistic
    measures its bias; see :mod:`fastlangevin.sampling.adapt`): tune ε with ``mala(adapt_steps=…)``.
    """
    x = _start_state(x0)
    n = check_n("n_steps", n_steps)
    check_scale("step_size", step_size, batch=x.shape[0], device=x.device)
    if noise_scale is not None:
        check_scale("noise_scale", noise_scale, batch=x.shape[0], device=x.device)
    kw = op_kwargs(x, clamp=clamp, generator=generator, backend=backend, rng=rng, sample_offset=sample_offset)
    opts = LoopOptions(generator, callback, progress, trace, on_nonfinite, cuda_graph, stats).validate(x)
    ckpt = Checkpointer.from_args(
        checkpoint,
        checkpoint_every,
        resume,
        lambda: fingerprint(
            "langevin",
            score_fn=score_fn,
            x0=x0,
            step_size=step_size,
            n_steps=n,
            noise_scale=noise_scale,
            clamp=clamp,
            generator=generator,
            cuda_graph=cuda_graph,
            backend=backend,
            rng=rng,
            sample_offset=sample_offset,
            trace=trace,
            stats=stats,
        ),
    )

    step = InplaceStepper(x, noise_scale, **kw)  # checked once: per step only the score and the step size

    def body(last: bool) -> None:
        s = eval_score(score_fn, x)
        if labels_on():
            with phase("fastlangevin.update"):
                step(s, step_size)
        else:
            step(s, step_size)

    with torch.no_grad():
        Loop("langevin", opts, [x], n, lambda j: "ULA", checkpointer=ckpt).run(lambda j: None, body)
    return x


def check_sigmas(sigmas) -> list:
    """Noise levels as Python floats: 1-D, finite, > 0, strictly decreasing.

    A device tensor is read once (one host sync at the start of sampling, none per step).
    """
    if isinstance(sigmas, torch.Tensor):
        if sigmas.dim() != 1:
            raise ValueError(f"sigmas must be a 1-D sequence of noise levels, got shape {tuple(sigmas.shape)}")
        values = sigmas.detach().to("cpu", torch.float64).tolist()
    elif isinstance(sigmas, (list, tuple)):
        values = []
        for v in sigmas:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"sigmas must hold numbers, got {type(v).__name__}")
            values.append(float(v))
    else:
        raise TypeError(f"sigmas must be a list, tuple or 1-D tensor, got {type(sigmas).__name__}")
    if not values:
        raise ValueError("sigmas must hold at least one noise level")
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"sigmas must all be finite and > 0, got {values[:8]}{'…' if len(values) > 8 else ''}")
    if any(b >= a for a, b in zip(values, values[1:])):
        i = next(k for k, (a, b) in enumerate(zip(values, values[1:])) if b >= a)
        raise ValueError(
            f"sigmas must be strictly decreasing (σ₁ > σ₂ > … > σ_L), "
            f"but sigmas[{i}]={values[i]} <= sigmas[{i + 1}]={values[i + 1]}"
        )
    return values


def annealed_langevin(
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    sigmas: Sequence[float],
    *,
    n_steps_each: int = 100,
    step_lr=2e-5,
    denoise: bool = True,
    clamp=None,
    generator: Optional[torch.Generator] = None,
    callback=None,
    progress: bool = False,
    trace: Optional[Trace] = None,
    stats: Optional[RunningStats] = None,
    on_nonfinite: str = "ignore",
    cuda_graph: bool = False,
    backend: Optional[str] = None,
    rng: Optional[str] = None,
    sample_offset: int = 0,
    checkpoint=None,
    checkpoint_every: Optional[int] = None,
    resume=None,
) -> torch.Tensor:
    """Annealed Langevin dynamics (NCSN): T = ``n_steps_each`` steps at each noise level.

        αᵢ = step_lr · σᵢ² / σ_L²,    x ← x + αᵢ s(x, σᵢ) + √(2αᵢ) z

    then, if ``denoise``, x ← x + σ_L² s(x, σ_L) (not counted as a step).

    Args:
        score_fn: ``score_fn(x, sigma) -> s``; ``sigma`` is a per-sample ``[B]`` tensor (fp32,
            fp64 for fp64 states) holding the current level.
        x0: starting state ``[B, ...]`` (not modified).
        sigmas: σ₁ > … > σ_L > 0 (list or 1-D tensor; read once on the host).
        n_steps_each: T >= 1. Steps are counted over all levels (L·T in total).
        step_lr: ε — float, or a per-sample ``[B]`` tensor (per-sample step sizes).
        denoise: final Tweedie step.
    """
    x = _start_state(x0)
    sig = check_sigmas(sigmas)
    T = check_n("n_steps_each", n_steps_each)
    B, device = x.shape[0], x.device
    lr = check_scale("step_lr", step_lr, batch=B, device=device, allow_zero=False)
    kw = op_kwargs(x, clamp=clamp, generator=generator, backend=backend, rng=rng, sample_offset=sample_offset)
    opts = LoopOptions(generator, callback, progress, trace, on_nonfinite, cuda_graph, stats).validate(x)
    ckpt = Checkpointer.from_args(
        checkpoint,
        checkpoint_every,
        resume,
        lambda: fingerprint(
            "annealed_langevin",
            score_fn=score_fn,
            x0=x0,
            sigmas=sig,
            n_steps_each=T,
            step_lr=step_lr,
            denoise=denoise,
            clamp=clamp,
            generator=generator,
            cuda_graph=cuda_graph,
            backend=backend,
            rng=rng,
            sample_offset=sample_offset,
            trace=trace,
            stats=stats,
        ),
    )
    cdt = compute_dtype(x.dtype)
    L = len(sig)
    ratio = [(s / sig[-1]) ** 2 for s in sig]

    sigma_slot = Slot(opts.cuda_graph, device, cdt, shape=(B,))
    step_slot = Slot(opts.cuda_graph, device, cdt, shape=(B,) if lr.per_row else ())
    level = [-1]

    def prepare(j: int) -> None:
        i = j // T
        if i == level[0]:
            return
        level[0] = i
        sigma_slot.set(sig[i])
        step_slot.set(lr.value * ratio[i] if lr.tensor is None else lr.tensor * ratio[i])

    step = InplaceStepper(x, **kw)

    def body(last: bool) -> None:
        s = eval_score(score_fn, x, sigma_slot.get())
        if labels_on():
            with phase("fastlangevin.update"):
                step(s, step_slot.get())
        else:
            step(s, step_slot.get())

    def describe(j: int) -> str:
        i = j // T
        return f"noise level {i + 1}/{L}, sigma={sig[i]:.6g}, step {j % T + 1}/{T} of the level"

    with torch.no_grad():
        Loop("annealed_langevin", opts, [x], L * T, describe, checkpointer=ckpt).run(prepare, body)
        if denoise:
            with phase("fastlangevin.denoise"):
                sigma_slot.set(sig[-1])
                s = eval_score(score_fn, x, sigma_slot.get())
                langevin_step_(x, s, sig[-1] ** 2, 0.0, **kw)
            if on_nonfinite == "raise" and not bool(torch.isfinite(x).all()):
                from .loop import NonFiniteError

                raise NonFiniteError(
                    f"annealed_langevin: non-finite values after the final denoising step (after step {L * T})",
                    L * T + 1,
                )
    return x


langevin.__doc__ += _COMMON_DOC
annealed_langevin.__doc__ += _COMMON_DOC
