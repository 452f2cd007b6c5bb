"""Predictor–corrector sampling of score SDEs (Song et al. 2020) on the fused ops.

Each of the N steps, at time t_i (from 1 down to eps):

1. corrector (``n_corrector_steps`` times): Langevin with SNR step size,
   ε = 2 α (r ‖z‖ / ‖s‖)²,  x ← x + ε s(x, t_i) + √(2ε) z  (fused two-pass op);
2. predictor: x ← c x + a s(x, t_i) + b z with (c, a, b) from the SDE's discretisation
   (:mod:`fastlangevin.sde`): reverse diffusion or Euler–Maruyama.

With ``denoise=True`` the very last update drops its noise term (the published sampler returns
that noise-free mean). The VP predictors have c ≠ 1: x is scaled in place first (one extra
elementwise pass, ``x.mul_(c)``), then the core fused op adds a s + b z.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from .._validate import check_scale, check_state
from ..ops.corrector import NORM_MODES, langevin_corrector_
from ..ops.langevin_step import langevin_step_
from ..sde import VESDE, VPSDE
from .checkpoint import Checkpointer, fingerprint
from .dynamics import _COMMON_DOC
from .loop import Loop, LoopOptions, Slot, Trace, check_n, compute_dtype, eval_score, op_kwargs, phase
from .stats import RunningStats

PREDICTORS = ("reverse_diffusion", "euler_maruyama", "none")
CORRECTORS = ("langevin", "none")


def _choice(name: str, v, options) -> str:
    v = "none" if v is None else v
    if v not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))} or None, got {v!r}")
    return v


def sample_prior(
    sde,
    shape: Sequence[int],
    *,
    dtype=torch.float32,
    device=None,
    generator=None,
    backend=None,
    rng=None,
    sample_offset: int = 0,
) -> torch.Tensor:
    """x ~ N(0, prior_std² I), drawn by the fused op (one seed, keyed by global sample index)."""
    if isinstance(sde, type):
        raise TypeError(
            f"sde must be an SDE instance, got the class {sde.__name__}: pass an instance, e.g. {sde.__name__}()"
        )
    shape = tuple(int(d) for d in shape)
    if len(shape) < 1 or any(d < 0 for d in shape):
        raise ValueError(f"shape must be a non-empty tuple of sizes (dim 0 the batch), got {shape}")
    x = torch.zeros(shape, dtype=dtype, device=device)
    with torch.no_grad():
        return langevin_step_(
            x, x, 0.0, float(sde.prior_std), generator=generator, backend=backend, rng=rng, sample_offset=sample_offset
        )


def pc_sample(
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sde,
    x0: Optional[torch.Tensor] = None,
    *,
    shape: Optional[Sequence[int]] = None,
    n_steps: int = 1000,
    predictor: Optional[str] = "reverse_diffusion",
    corrector: Optional[str] = "langevin",
    snr=0.16,
    n_corrector_steps: int = 1,
    corrector_norm: str = "batch",
    denoise: bool = True,
    eps: Optional[float] = None,
    dtype: torch.dtype = torch.float32,
    device=None,
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
    corrector_gather_norms: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> torch.Tensor:
    """Predictor–corrector sampling from a score SDE (``VESDE`` or ``VPSDE``).

    Args:
        score_fn: ``score_fn(x, t) -> s``; ``t`` is a per-sample ``[B]`` tensor of times in
            (0, 1] (fp32, fp64 for fp64 states). ``sde.marginal_std(t)`` gives σ(t).
        sde: :class:`fastlangevin.VESDE` or :class:`fastlangevin.VPSDE`.
        x0: starting state ``[B, ...]``; None draws it from the prior N(0, prior_std² I) with
            ``shape`` / ``dtype`` / ``device`` (one seed from ``generator``).
        n_steps: N >= 1 time steps, t from 1 down to ``eps`` (default ``sde.sampling_eps``).
        predictor: "reverse_diffusion" (default), "euler_maruyama" or "none".
        corrector: "langevin" (default) or "none".
        snr: target signal-to-noise ratio r of the corrector (float or per-sample ``[B]``).
        n_corrector_steps: corrector steps before each predictor step (>= 1).
        corrector_norm: "batch" (default; norms averaged over the batch, as in the published
            code) or "per_sample". Batch-averaged norms couple the samples of a batch, so
            with the Langevin corrector a sample is NOT the same alone and inside a batch
            (use "per_sample" or corrector="none" for batch invariance). Per-sample norms are
            unstable in low dimension: a sample whose ‖s‖ is near zero gets a huge step (a 2-D
            Gaussian came out with ~20x the true variance); in high dimension the two agree.
        denoise: drop the noise of the last update ("noise removal").
        corrector_gather_norms: for a batch sharded across processes (set by
            :func:`fastlangevin.distributed.sample_sharded`): maps this shard's ``[b, 2]``
            per-row corrector norms to the whole batch's ``[B, 2]``, so batch-averaged norms
            are those of the whole batch and the shards equal the one-process run (see
            :func:`fastlangevin.langevin_corrector_`'s ``gather_norms``).
    """
    if isinstance(sde, type):
        raise TypeError(
            f"sde must be an SDE instance, got the class {sde.__name__}: pass an instance, e.g. {sde.__name__}()"
        )
    sde_ok = isinstance(sde, (VESDE, VPSDE)) or (hasattr(sde, "schedule") and hasattr(sde, "prior_std"))
    if not sde_ok:
        raise TypeError(f"sde must be a fastlangevin.VESDE or VPSDE, got {type(sde).__name__}")
    pred = _choice("predictor", predictor, PREDICTORS)
    corr = _choice("corrector", corrector, CORRECTORS)
    if pred == "none" and corr == "none":
        raise ValueError("predictor and corrector cannot both be 'none': nothing would update x")
    if corrector_norm not in NORM_MODES:
        raise ValueError(f"corrector_norm must be 'batch' or 'per_sample', got {corrector_norm!r}")
    if corrector_gather_norms is not None and not callable(corrector_gather_norms):
        raise TypeError(
            "corrector_gather_norms must be callable(norms [b, 2]) -> [B, 2] or None, "
            f"got {type(corrector_gather_norms).__name__}"
        )
    n = check_n("n_steps", n_steps)
    n_corr = check_n("n_corrector_steps", n_corrector_steps) if corr == "langevin" else 0
    sch = sde.schedule(n, eps)

    if (x0 is None) == (shape is None):
        raise ValueError("pass exactly one of x0 (a starting state) and shape (to draw from the prior)")
    if x0 is not None:
        check_state("x0", x0)
        x = x0.detach().clone(memory_format=torch.contiguous_format)
    else:
        x = torch.empty(tuple(int(d) for d in shape), dtype=dtype, device=device)  # validated below, filled after
    B, dev = x.shape[0], x.device
    if corr == "langevin":
        check_scale("snr", snr, batch=B, device=dev, allow_zero=False)
    kw = op_kwargs(x, clamp=clamp, generator=generator, backend=backend, rng=rng, sample_offset=sample_offset)
    opts = LoopOptions(generator, callback, progress, trace, on_nonfinite, cuda_graph, stats).validate(x)
    ckpt = Checkpointer.from_args(
        checkpoint,
        checkpoint_every,
        resume,
        lambda: fingerprint(
            "pc_sample",
            score_fn=score_fn,
            sde=sde,
            x0=x0,
            shape=None if shape is None else list(x.shape),
            dtype=x.dtype,
            device=str(x.device),
            n_steps=n,
            predictor=pred,
            corrector=corr,
            snr=snr,
            n_corrector_steps=n_corrector_steps,
            corrector_norm=corrector_norm,
            denoise=denoise,
            eps=eps,
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
    if x0 is None:
        x = sample_prior(
            sde,
            x.shape,
            dtype=x.dtype,
            device=dev,
            generator=generator,
            backend=backend,
            rng=rng,
            sample_offset=sample_offset,
        )

    cdt = compute_dtype(x.dtype)
    static = opts.cuda_graph
    t_list = sch.t.tolist()
    alpha_list = sch.alpha.tolist()
    c_list, a_list, b_list = ([], [], []) if pred == "none" else (v.tolist() for v in sch.predictor(pred))
    scale_x = pred != "none" and any(c != 1.0 for c in c_list)
    t_slot = Slot(static, dev, cdt, shape=(B,))
    alpha_slot, c_slot, a_slot, b_slot = (Slot(static, dev, cdt) for _ in range(4))

    def prepare(j: int) -> None:
        t_slot.set(t_list[j])
        if corr == "langevin":
            alpha_slot.set(alpha_list[j])
        if pred != "none":
            c_slot.set(c_list[j])
            a_slot.set(a_list[j])
            b_slot.set(b_list[j])

    def body(last: bool) -> None:
        t = t_slot.get()
        for k in range(n_corr):
            s = eval_score(score_fn, x, t)
            quiet = last and denoise and pred == "none" and k == n_corr - 1
            with phase("fastlangevin.correct"):
                langevin_corrector_(
                    x,
                    s,
                    snr,
                    alpha=alpha_slot.get(),
                    norm=corrector_norm,
                    add_noise=not quiet,
                    gather_norms=corrector_gather_norms,
                    **kw,
                )
        if pred != "none":
            s = eval_score(score_fn, x, t)
            with phase("fastlangevin.update"):
                if scale_x:
                    x.mul_(c_slot.get())
                langevin_step_(x, s, a_slot.get(), 0.0 if (last and denoise) else b_slot.get(), **kw)

    def describe(j: int) -> str:
        return f"t={t_list[j]:.6g}"

    with torch.no_grad():
        Loop("pc_sample", opts, [x], n, describe, checkpointer=ckpt).run(prepare, body, last_differs=denoise)
    return x


pc_sample.__doc__ += _COMMON_DOC
