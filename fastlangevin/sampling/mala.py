"""Metropolis-adjusted Langevin (MALA), and scores from energies by autograd.

MALA with step ε: propose x' = x + ε s(x) + √(2ε) z (the fused op), accept with probability

    min(1, p(x') q(x | x') / (p(x) q(x' | x))),    log q(x' | x) = -‖x' - x - ε s(x)‖² / (4ε)

per chain. The Metropolis test removes ULA's discretisation bias: the stationary law is p.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch

from .._validate import check_scale
from ..ops.langevin_step import langevin_step, langevin_step_
from .adapt import GAMMA_FINAL, KAPPA_FINAL, DualAveraging, check_adapt_steps, check_target_accept
from .checkpoint import Checkpointer, fingerprint
from .dynamics import _COMMON_DOC, _start_state
from .loop import Loop, LoopOptions, Trace, check_n, compute_dtype, op_kwargs, phase
from .stats import RunningStats


class MalaResult(tuple):
    """``(samples, accept_rate)``, unpacks as before; ``.step_size`` holds the per-chain step
    sizes ``[B]`` the kept steps used (the adapted ones after a warm-up), ``.inv_metric`` the
    diagonal metric M shaped like the samples (``precondition=True``) or ``None``."""

    def __new__(cls, samples: torch.Tensor, accept_rate: torch.Tensor, step_size: torch.Tensor, inv_metric=None):
        self = super().__new__(cls, (samples, accept_rate))
        self.step_size = step_size
        self.inv_metric = inv_metric
        return self

    @property
    def samples(self) -> torch.Tensor:
        return self[0]

    @property
    def accept_rate(self) -> torch.Tensor:
        return self[1]


def score_from_energy(energy_fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Score function ``s(x, *args) = -∇ₓ E(x, *args)`` of an energy ``E`` (p ∝ exp(-E)).

    ``energy_fn(x, *args)`` returns per-sample energies ``[B]`` (or their sum as a scalar);
    sample i's energy must depend on ``x[i]`` only (as for any batched score). The gradient is
    taken with autograd even inside the samplers' ``torch.no_grad()``; the result is detached.
    Works with every sampler (extra arguments such as ``sigma`` or ``t`` are passed through).
    """
    if not callable(energy_fn):
        raise TypeError(f"energy_fn must be callable, got {type(energy_fn).__name__}")

    def score_fn(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            e = energy_fn(xr, *args, **kwargs)
            if not isinstance(e, torch.Tensor) or e.shape not in ((), (x.shape[0],)):
                got = tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
                raise ValueError(f"energy_fn must return per-sample energies [{x.shape[0]}] or a scalar, got {got}")
            if not e.requires_grad:
                raise ValueError("energy_fn's output does not depend on x through autograd (no gradient to take)")
            (g,) = torch.autograd.grad(e.sum(), xr)
        return g.neg_()

    score_fn.__name__ = f"score_from_energy({getattr(energy_fn, '__name__', 'energy_fn')})"
    return score_fn


def _log_prob_and_score(log_prob_fn, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(log p(x) ``[B]``, ∇ log p(x)) by autograd."""
    with phase("fastlangevin.score"), torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        lp = log_prob_fn(xr)
        if not isinstance(lp, torch.Tensor) or lp.shape != (x.shape[0],):
            got = tuple(lp.shape) if isinstance(lp, torch.Tensor) else type(lp).__name__
            raise ValueError(f"log_prob_fn must return per-sample log-densities of shape [{x.shape[0]}], got {got}")
        if not lp.requires_grad:
            raise ValueError("log_prob_fn's output does not depend on x through autograd (MALA needs its gradient)")
        (g,) = torch.autograd.grad(lp.sum(), xr)
    return lp.detach(), g


def _sq_rows(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).square().sum(dim=1)


def mala(
    log_prob_fn: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    *,
    step_size,
    n_steps: int,
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
    clamp=None,
    adapt_steps: int = 0,
    target_accept: float = 0.574,
    precondition: bool = False,
) -> "MalaResult":
    """Metropolis-adjusted Langevin algorithm.

    Args:
        log_prob_fn: ``log_prob_fn(x) -> [B]`` log-density up to a constant (differentiable;
            the score is taken by autograd). Return -inf outside a support: such proposals are
            rejected.
        x0: starting state ``[B, ...]`` (not modified).
        step_size: ε — float, 0-d or per-sample ``[B]`` tensor.
        n_steps: number of proposals per chain (>= 1).
        clamp: not supported (clamping the proposal breaks detailed balance): encode
            constraints in ``log_prob_fn`` instead.
        adapt_steps: K >= 0 warm-up proposals before the ``n_steps`` kept ones, during which
            each chain's step size is tuned by dual averaging (Hoffman & Gelman 2014, see
            :mod:`fastlangevin.sampling.adapt`) towards ``target_accept``, starting from
            ``step_size``; frozen afterwards (at the averaged iterate), so the kept chain is a
            valid MCMC. Trace, stats and callback see the kept steps only.
        target_accept: δ in (0, 1), the mean Metropolis acceptance probability aimed at (0.574
            is optimal for MALA in high dimension, Roberts & Rosenthal 1998).
        precondition: with ``adapt_steps >= 8``: a diagonal metric M per chain and element from
            the warm-up — the variance of the states over the second quarter of the warm-up,
            regularised as Stan does, M = n/(n+5)·var + 1e-3·5/(n+5) — set at mid-warm-up; the
            proposals are then y = x + ε M s(x) + √(2ε) M^{1/2} z (MALA in the coordinates
            u = M^{-1/2} x, where the fused op runs), the step size re-adapted under M (restarted
            at ε̄ / min M so the narrowest direction keeps its step). Frozen with ε afterwards.
            ``MalaResult.inv_metric`` holds M (``None`` without preconditioning).

    Returns:
        a :class:`MalaResult`, a 2-tuple ``(samples, accept_rate)`` as before (final states
        shaped like ``x0`` and the per-chain acceptance rate ``[B]`` over the kept steps, fp32;
        fp64 for fp64 states) with the attribute ``step_size``: the per-chain step sizes the
        kept steps used, ``[B]`` (the adapted ones when ``adapt_steps > 0``).

    Each step draws two seeds: one for the proposal noise, one for the acceptance uniforms
    (a standard normal per chain from the fused op, u = Φ(z), keyed by global sample index).
    """
    if clamp is not None:
        raise ValueError(
            "mala does not support clamp (a clamped proposal breaks detailed balance); "
            "return -inf from log_prob_fn outside the support instead"
        )
    x = _start_state(x0)
    n = check_n("n_steps", n_steps)
    K = check_adapt_steps(adapt_steps)
    if not isinstance(precondition, bool):
        raise TypeError(f"precondition must be a bool, got {type(precondition).__name__}")
    if precondition and K < 8:
        raise ValueError(f"precondition=True estimates the metric in the warm-up: needs adapt_steps >= 8, got {K}")
    delta = check_target_accept(target_accept)
    B, device = x.shape[0], x.device
    eps = check_scale("step_size", step_size, batch=B, device=device, allow_zero=False)
    kw = op_kwargs(x, clamp=None, generator=generator, backend=backend, rng=rng, sample_offset=sample_offset)
    opts = LoopOptions(generator, callback, progress, trace, on_nonfinite, cuda_graph, stats).validate(x)
    ckpt = Checkpointer.from_args(
        checkpoint,
        checkpoint_every,
        resume,
        lambda: fingerprint(
            "mala",
            log_prob_fn=log_prob_fn,
            x0=x0,
            step_size=step_size,
            n_steps=n,
            adapt_steps=K,
            target_accept=delta,
            precondition=precondition,
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
    eps_rows = eps.value if eps.tensor is None else eps.tensor.to(cdt)  # [B] / 0-d / float

    with torch.no_grad():
        logp, score = _log_prob_and_score(log_prob_fn, x)
        logp = logp.to(cdt)
        accepted = torch.zeros(B, dtype=cdt, device=device)
        unif_normal = torch.zeros(B, 1, dtype=cdt, device=device)
        log_alpha_out = [None]  # the last step's log acceptance ratios [B], for the adaptation

        def body(last: bool) -> None:
            with phase("fastlangevin.update"):
                y = langevin_step(x, score, step_size, **kw)
            logp_y, score_y = _log_prob_and_score(log_prob_fn, y)
            with phase("fastlangevin.update"):
                # log q(y|x) - log q(x|y), both with the 1/(4ε) of the Gaussian proposal
                fwd = _sq_rows(y.to(cdt) - x.to(cdt) - eps_rows_b(score))
                bwd = _sq_rows(x.to(cdt) - y.to(cdt) - eps_rows_b(score_y))
                log_alpha = logp_y.to(cdt) - logp + (fwd - bwd) / (4 * eps_rows)
                log_alpha_out[0] = log_alpha
                # u = Φ(z) with z ~ N(0, 1) per chain: accept iff log Φ(z) < log α
                unif_normal.zero_()
                langevin_step_(unif_normal, unif_normal, 0.0, 1.0, **kw)
                acc = torch.special.log_ndtr(unif_normal[:, 0]) < log_alpha  # NaN log α: rejected
                m = acc.reshape((B,) + (1,) * (x.dim() - 1))
                x.copy_(torch.where(m, y, x))
                score.copy_(torch.where(m, score_y, score))
                logp.copy_(torch.where(acc, logp_y.to(cdt), logp))
                accepted.add_(acc.to(cdt))

        def eps_rows_b(s: torch.Tensor) -> torch.Tensor:
            e = (
                eps_rows
                if not isinstance(eps_rows, torch.Tensor) or eps_rows.dim() == 0
                else eps_rows.reshape((B,) + (1,) * (s.dim() - 1))
            )
            return s.to(cdt) * e

        if K == 0:
            loop = Loop("mala", opts, [x, score, logp, accepted], n, lambda j: "MALA", checkpointer=ckpt)
            loop.run(lambda j: None, body)
            kept = eps.tensor.to(cdt).expand(B) if eps.tensor is not None else torch.full((B,), eps.value, dtype=cdt)
            return MalaResult(x, accepted / n, kept.to(device))

        # Adaptive run: the step size is a per-chain device tensor that dual averaging rewrites
        # in place during the warm-up, and frozen at the averaged iterate for the kept steps.
        da = DualAveraging(eps_rows, B, delta, device=device, dtype=cdt)
        eps_t = da.step_size  # [B], updated in place
        eps_rows, step_size = eps_t, eps_t
        adapt_m = [0]

        def prepare(j: int) -> None:
            adapt_m[0] = j + 1 if j < K else 0
            if j == K:
                accepted.zero_()  # acceptance over the kept steps only

        half = K // 2  # two windows (see fastlangevin.sampling.adapt)
        quarter = K // 4
        extra = []
        if precondition:
            # sqrt_m = M^{1/2}: ones until mid-warm-up (plain MALA, exactly), then the estimated metric
            sqrt_m = torch.ones(x.shape, dtype=cdt, device=device)
            w_mean, w_m2 = torch.zeros_like(sqrt_m), torch.zeros_like(sqrt_m)
            extra = [sqrt_m, w_mean, w_m2]
            rows = (B,) + (1,) * (x.dim() - 1)

            def step_body(last: bool) -> None:
                # MALA on u = x / M^{1/2}: score_u = M^{1/2} s, an isotropic proposal for the fused op
                u = x.to(cdt) / sqrt_m
                su = score.to(cdt) * sqrt_m
                with phase("fastlangevin.update"):
                    yu = langevin_step(u, su, eps_t, **kw)
                y = (yu * sqrt_m).to(x.dtype)
                logp_y, score_y = _log_prob_and_score(log_prob_fn, y)
                with phase("fastlangevin.update"):
                    syu = score_y.to(cdt) * sqrt_m
                    e = eps_t.reshape(rows)
                    fwd = _sq_rows(yu - u - e * su)
                    bwd = _sq_rows(u - yu - e * syu)
                    log_alpha = logp_y.to(cdt) - logp + (fwd - bwd) / (4 * eps_t)
                    log_alpha_out[0] = log_alpha
                    unif_normal.zero_()
                    langevin_step_(unif_normal, unif_normal, 0.0, 1.0, **kw)
                    acc = torch.special.log_ndtr(unif_normal[:, 0]) < log_alpha
                    mask = acc.reshape(rows)
                    x.copy_(torch.where(mask, y, x))
                    score.copy_(torch.where(mask, score_y, score))
                    logp.copy_(torch.where(acc, logp_y.to(cdt), logp))
                    accepted.add_(acc.to(cdt))

        else:
            step_body = body

        def set_metric() -> None:
            n_w = half - quarter
            var = w_m2 / max(n_w - 1, 1)
            inv_metric = (n_w / (n_w + 5.0)) * var + 1e-3 * (5.0 / (n_w + 5.0))
            sqrt_m.copy_(inv_metric.sqrt())
            # continue at the first window's ε̄ in the narrowest direction: ε_u · min M = ε̄
            da.log_eps_bar.sub_(inv_metric.reshape(B, -1).min(dim=1).values.log())

        def adaptive_body(last: bool) -> None:
            step_body(last)
            m = adapt_m[0]
            if not m:
                return
            if precondition and quarter < m <= half:  # Welford over the second quarter's states
                k = m - quarter
                xf = x.to(cdt)
                d = xf - w_mean
                w_mean.add_(d, alpha=1.0 / k)
                w_m2.addcmul_(d, xf - w_mean)
            if m <= half:
                da.update(m, log_alpha_out[0], final=m == half)
                if m == half:
                    if precondition:
                        set_metric()
                    da.restart()
            else:
                da.update(m - half, log_alpha_out[0], final=m == K, kappa=KAPPA_FINAL, gamma=GAMMA_FINAL)

        state = [x, score, logp, accepted] + da.tensors() + extra
        Loop("mala", opts, state, n, lambda j: "MALA warm-up" if j < K else "MALA", warm_up=K, checkpointer=ckpt).run(
            prepare, adaptive_body
        )
    inv = sqrt_m.square() if precondition else None
    return MalaResult(x, accepted / n, eps_t.clone(), inv)


mala.__doc__ += _COMMON_DOC.replace(
    "        clamp: ``(lo, hi)`` applied after every update (``None`` for an open side).\n", ""
)
