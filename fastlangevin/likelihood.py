"""Exact log-likelihood of the probability-flow ODE (instantaneous change of variables) and bits/dim.

    log p_eps(x) = log p_T(x_1) + ∫_eps^1 div_x f̃(x_t, t) dt,      f̃(x, t) = f_t x − ½ g(t)² s(x, t)

x: ``[B, ...]`` data at t = eps; x_t solves the PF-ODE forwards (as :func:`fastlangevin.ode_encode`), p_T
is the SDE's prior N(0, prior_std² I), so ``logp`` is the density of the *model* (the prior pushed
through the ODE), in nats, per sample ``[B]``. The divergence is div f̃ = f_t · D − ½ g² · tr(∂s/∂x):

* ``trace="exact"``: tr(∂s/∂x) from D autograd passes (one per dimension; small D only);
* ``trace="hutchinson"``: (1/K) Σ_k v_kᵀ (∂s/∂x) v_k with K = ``n_probes`` probes v (vector–Jacobian
  products), Rademacher or Gaussian, drawn once per call and held fixed along the trajectory, from the
  counter-based stream of :mod:`fastlangevin.probes` (keyed by global sample index: a sample's
  estimate does not depend on its batch — bitwise with the fixed-step methods, within the tolerance
  with rk45, whose step sizes the batch shares). Rademacher probes are exact when ∂s/∂x is a
  multiple of I (vᵀ c I v = c D for v ∈ {±1}^D).

Noise: the probes take one seed from ``generator``; the ODE updates draw none.

``bits_per_dim`` follows score_sde's convention (see its docstring).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional

import torch

from ._validate import check_state
from .ode_solvers import FIXED_METHODS, integrate_fixed, integrate_rk45
from .probability_flow import Counter, _common_checks
from .probes import check_probe, probe_vectors
from .sampling.loop import _progress_bar, checked_score, compute_dtype, phase
from .sde import pf_coeffs

TRACES = ("exact", "hutchinson")


@dataclass
class LikelihoodResult:
    """``logp``: ``[B]`` log-density (nats) of x at t = eps under the model; ``latent``: x at t = 1;
    ``nfe``: score evaluations (each with its trace's autograd passes); ``prior_logp``: log p_T(latent)
    and ``delta_logp``: the divergence integral (``logp = prior_logp + delta_logp``)."""

    logp: torch.Tensor
    latent: torch.Tensor
    nfe: int
    prior_logp: torch.Tensor
    delta_logp: torch.Tensor


def _trace_exact(s: torch.Tensor, xg: torch.Tensor) -> torch.Tensor:
    B = s.shape[0]
    sf = s.reshape(B, -1)
    out = torch.zeros(B, dtype=torch.float64, device=s.device)
    for d in range(sf.shape[1]):
        (g,) = torch.autograd.grad(sf[:, d].sum(), xg, retain_graph=True)
        out += g.reshape(B, -1)[:, d].double()
    return out


def _trace_hutchinson(s: torch.Tensor, xg: torch.Tensor, probes: torch.Tensor) -> torch.Tensor:
    B = s.shape[0]
    out = torch.zeros(B, dtype=torch.float64, device=s.device)
    for v in probes:
        (g,) = torch.autograd.grad((s * v.to(s.dtype)).sum(), xg, retain_graph=True)
        out += (g.double() * v.double()).reshape(B, -1).sum(1)
    return out / probes.shape[0]


def _field(score_fn, sde, x: torch.Tensor, trace: str, probes, nfe: Counter):
    B, D = x.shape[0], x[0].numel()
    tdtype, device = compute_dtype(x.dtype), x.device

    def field(ys: List[torch.Tensor], t: float, sign: float) -> List[torch.Tensor]:
        y = ys[0]
        cx, cs = pf_coeffs(sde, t)
        with torch.enable_grad():
            xg = y.detach().requires_grad_(True)
            with phase("fastlangevin.score"):
                s = score_fn(xg, torch.full((B,), t, dtype=tdtype, device=device))
            s = checked_score(s, y)
            if not s.requires_grad:
                raise ValueError("score_fn's output does not depend on x through autograd: the trace needs it")
            tr = _trace_exact(s, xg) if trace == "exact" else _trace_hutchinson(s, xg, probes)
        nfe.n += 1
        k = s.detach().to(y.dtype) * (sign * cs)
        if cx != 0.0:
            k.add_(y, alpha=sign * cx)
        div = tr * (sign * cs) + sign * cx * D
        return [k, div]

    return field


def log_likelihood(
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sde,
    x: torch.Tensor,
    *,
    method: str = "rk45",
    n_steps: Optional[int] = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: Optional[float] = None,
    trace: str = "hutchinson",
    n_probes: int = 1,
    probe: str = "rademacher",
    generator: Optional[torch.Generator] = None,
    sample_offset: int = 0,
    max_steps: int = 10_000,
    progress: bool = False,
    backend: Optional[str] = None,
) -> LikelihoodResult:
    """Log-likelihood of data ``x`` (at t = eps) under the probability-flow ODE model (see module doc).

    ``score_fn`` must be differentiable in x (autograd). ``method`` / ``n_steps`` / ``rtol`` / ``atol``
    / ``eps`` as :func:`fastlangevin.ode_encode`; the divergence integral is part of the ODE state, so
    rk45 controls its error too. ``trace``: "exact" or "hutchinson" (``n_probes`` probes of kind
    ``probe``, "rademacher" or "gaussian"; ``sample_offset`` is the global index of ``x[0]``).
    """
    method, n, rtol, atol, eps = _common_checks(score_fn, sde, method, n_steps, rtol, atol, eps, max_steps)
    if trace not in TRACES:
        raise ValueError(f"trace must be 'exact' or 'hutchinson', got {trace!r}")
    check_probe(probe)
    check_state("x", x)
    probes = None
    if trace == "hutchinson":
        probes = probe_vectors(
            x.shape, n_probes, probe, generator=generator, device=x.device, dtype=x.dtype, sample_offset=sample_offset
        )
    y = x.detach().clone(memory_format=torch.contiguous_format)
    acc = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    nfe = Counter()
    field = _field(score_fn, sde, y, trace, probes, nfe)
    bar = _progress_bar(progress, n or max_steps, "log_likelihood")
    try:
        with torch.no_grad():
            if method in FIXED_METHODS:
                z, delta = integrate_fixed(field, [y, acc], eps, 1.0, method, n, backend, bar)
            else:
                z, delta = integrate_rk45(field, [y, acc], eps, 1.0, rtol, atol, backend, max_steps, bar)[0]
    finally:
        if bar is not None:
            bar.close()
    prior = sde.prior_logp(z).double()
    return LikelihoodResult(logp=prior + delta, latent=z, nfe=nfe.n, prior_logp=prior, delta_logp=delta)


def bits_per_dim(logp: torch.Tensor, x: torch.Tensor, *, data_range=(0.0, 1.0), n_levels: int = 256) -> torch.Tensor:
    """Bits per dimension of discrete data from the log-density of its (uniformly dequantised) version.

        bpd = −logp / (D ln 2) + log2(n_levels) − log2(hi − lo)

    score_sde's convention: pixels are integers k ∈ {0, …, 255} mapped to [0, 1] with uniform
    dequantisation, x = (k + u) / 256, u ~ U[0, 1) (the caller does this before
    :func:`log_likelihood`; see :func:`dequantize`). ``logp`` is the density of x in the units the
    model sees, which span ``data_range = (lo, hi)`` (``(0, 1)``, or ``(-1, 1)`` for centred data).
    A bin has width (hi − lo)/n_levels, so P(k) ≥ p(x)·(hi − lo)/n_levels by Jensen: the result is an
    upper bound on the discrete model's bits/dim; with [0, 1] data the offset is +8 bits, with
    [-1, 1] data +7, exactly score_sde's ``offset = 7 - inverse_scaler(-1)``.
    """
    if not isinstance(logp, torch.Tensor) or logp.dim() != 1:
        raise ValueError("logp must be a per-sample [B] tensor (LikelihoodResult.logp)")
    check_state("x", x)
    if logp.shape[0] != x.shape[0]:
        raise ValueError(f"logp has {logp.shape[0]} samples but x has {x.shape[0]}")
    lo, hi = (float(v) for v in data_range)
    if not hi > lo:
        raise ValueError(f"data_range must be (lo, hi) with hi > lo, got {data_range!r}")
    if isinstance(n_levels, bool) or not isinstance(n_levels, int) or n_levels < 2:
        raise ValueError(f"n_levels must be an int >= 2, got {n_levels!r}")
    D = x[0].numel()
    return -logp.double() / (D * math.log(2)) + math.log2(n_levels) - math.log2(hi - lo)


def dequantize(k: torch.Tensor, *, n_levels: int = 256, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Integer levels ``k`` ∈ {0, …, n_levels−1} → (k + u) / n_levels ∈ [0, 1), u ~ U[0, 1) (float32)."""
    u = torch.rand(k.shape, generator=generator, device=k.device)
    return (k.float() + u) / n_levels
