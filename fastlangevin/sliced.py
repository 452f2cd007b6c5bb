"""Sliced score matching (Song, Garg, Shi & Ermon 2019): score matching without added noise.

    J(θ) = E_x E_v [ vᵀ (∂s_θ(x)/∂x) v + ½ (vᵀ s_θ(x))² ]          (SSM)
    J(θ) = E_x E_v [ vᵀ (∂s_θ(x)/∂x) v ] + ½ E_x ‖s_θ(x)‖²          (SSM-VR, ``variance_reduction=True``)

equal, for E[v vᵀ] = I, to the Fisher divergence ½ E‖s_θ − ∇ log p‖² (the paper's eq. 6 objective) up to a
constant independent of θ. x: ``[B, ...]``; ``score_fn(x) -> s`` shaped like x (per-sample: row i of s
depends on x[i] only); v: ``n_projections`` probes per sample from the counter-based stream of
:mod:`fastlangevin.probes` (Rademacher or Gaussian, keyed by global sample index: one seed per call
from ``generator``). vᵀ(∂s/∂x)v is a vector–Jacobian product with ``create_graph=True``, so the loss is
differentiable in the model's parameters. Pure autograd, no fused op (the cost is the network's
double backward).

Energy models: pass the energy ``E(x) -> [B]`` with ``energy=True`` (s = −∇E, taken with
``create_graph`` so θ gets gradients; :func:`fastlangevin.score_from_energy` detaches its scores,
which suits sampling, not training).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ._validate import check_state
from .probes import check_probe, probe_vectors

REDUCTIONS = ("mean", "sum", "none")


def _score(score_fn, x: torch.Tensor, energy: bool) -> torch.Tensor:
    out = score_fn(x)
    if energy:
        if not isinstance(out, torch.Tensor) or out.shape not in ((), (x.shape[0],)):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the energy must return per-sample energies [{x.shape[0]}] or a scalar, got {got}")
        (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        return -g
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"score_fn must return a tensor shaped like x {tuple(x.shape)}, got {got}")
    return out


def sliced_score_matching_loss(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    n_projections: int = 1,
    variance_reduction: bool = True,
    probe: str = "rademacher",
    generator: Optional[torch.Generator] = None,
    reduction: str = "mean",
    energy: bool = False,
    sample_offset: int = 0,
) -> torch.Tensor:
    """The sliced score-matching loss of ``score_fn`` on data ``x`` (see module doc).

    ``reduction``: "mean" (default, over samples), "sum" or "none" (per-sample ``[B]``)."""
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable(x) -> score, got {type(score_fn).__name__}")
    check_state("x", x)
    check_probe(probe)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    B = x.shape[0]
    v = probe_vectors(
        x.shape, n_projections, probe, generator=generator, device=x.device, dtype=x.dtype, sample_offset=sample_offset
    )
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        s = _score(score_fn, xr, energy)
        sf = s.reshape(B, -1)
        jvp_term = torch.zeros(B, dtype=s.dtype, device=x.device)
        sq_term = 0.5 * (sf * sf).sum(1) if variance_reduction else torch.zeros_like(jvp_term)
        for k in range(n_projections):
            vk = v[k].to(s.dtype)
            (g,) = torch.autograd.grad((s * vk).sum(), xr, create_graph=True)
            jvp_term = jvp_term + (g * vk).reshape(B, -1).sum(1)
            if not variance_reduction:
                proj = (sf * vk.reshape(B, -1)).sum(1)
                sq_term = sq_term + 0.5 * proj * proj
        per_sample = jvp_term / n_projections + (sq_term if variance_reduction else sq_term / n_projections)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample
