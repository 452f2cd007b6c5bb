"""Model adapters: every sampler takes every kind of network (score, noise prediction, denoiser).

With the perturbation x_t = m(t) x_data + std(t) z of a score SDE (m = 1, std = σ(t) for VE;
m(t), √(1 − m²) for VP) and EDM's x̃ = x_data + σ z (σ = std/m, x̃ = x/m):

* score from a denoiser D(x̃, σ):     s(x̃, σ) = (D(x̃, σ) − x̃) / σ²;   at SDE time t:
  s(x, t) = (D(x/m, σ) − x/m) / (σ² m)                       (:func:`score_from_denoiser`)
* score from a noise predictor ε(x, t):  s(x, t) = −ε(x, t) / std(t)  (:func:`score_from_eps`)
* the reverse ones: :func:`denoiser_from_score` (D = x̃ + σ² s, evaluated at the SDE time with
  std(t)/m(t) = σ when an SDE is given) and :func:`eps_from_score` (ε = −std(t) s).

All are plain functions of per-sample ``[B]`` noise levels / times; shapes ``[B, ...]`` like x.
No random numbers. The optional diffusers adapter is :mod:`fastlangevin.adapters_diffusers`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .sde import VESDE, VPSDE


def _rows(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape((-1,) + (1,) * (x.dim() - 1)).to(x.dtype)


def _check_callable(name: str, fn) -> None:
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}")


def _check_sde(sde) -> None:
    if sde is not None and not isinstance(sde, (VESDE, VPSDE)):
        raise TypeError(f"sde must be a fastlangevin.VESDE, VPSDE or None, got {type(sde).__name__}")


def _checked(out, x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{name} must return a tensor shaped like x {tuple(x.shape)}, got {got}")
    return out


def time_of_sigma(sde, sigma: torch.Tensor) -> torch.Tensor:
    """The SDE time t with std(t)/m(t) = σ (EDM's noise level of x/m): VE σ(t) = σ, VP m(t)² = 1/(1 + σ²)."""
    s = sigma.double()
    if isinstance(sde, VESDE):
        return torch.log(s / sde.sigma_min) / math.log(sde.sigma_max / sde.sigma_min)
    # -log m = ¼ Δβ t² + ½ β_min t = ½ log(1 + σ²): the positive root of the quadratic
    db, b0 = sde.beta_max - sde.beta_min, sde.beta_min
    c = 0.5 * torch.log1p(s * s)
    return (-0.5 * b0 + torch.sqrt(0.25 * b0 * b0 + db * c)) / (0.5 * db)


def _m_sigma(sde, t: torch.Tensor):
    m = sde.marginal_mean_scale(t.double())
    return m, sde.marginal_std(t.double()) / m


def score_from_denoiser(denoiser: Callable, sde=None) -> Callable:
    """Score function of a denoiser ``denoiser(x̃, sigma)`` (EDM convention, x̃ = x_data + σ z).

    Without ``sde`` the result is ``score_fn(x, sigma)`` (for :func:`fastlangevin.annealed_langevin`
    and other σ-parametrised samplers); with an SDE it is ``score_fn(x, t)`` at SDE time t."""
    _check_callable("denoiser", denoiser)
    _check_sde(sde)

    def score_fn(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        if sde is None:
            sig = _rows(level, x)
            return (_checked(denoiser(x, level), x, "denoiser").to(x.dtype) - x) / (sig * sig)
        m, sig = _m_sigma(sde, level)
        xs = x / _rows(m, x)
        d = _checked(denoiser(xs, sig.to(level.dtype)), x, "denoiser").to(x.dtype)
        return (d - xs) / (_rows(sig, x) ** 2 * _rows(m, x))

    return score_fn


def denoiser_from_score(score_fn: Callable, sde=None) -> Callable:
    """Denoiser ``D(x̃, sigma) = x̃ + σ² s`` of a score function, for :func:`fastlangevin.edm_sample`.

    Without ``sde``, ``score_fn(x, sigma)`` is σ-parametrised; with an SDE it is ``score_fn(x, t)``,
    evaluated at x = m(t) x̃ and the time t with std(t)/m(t) = σ (:func:`time_of_sigma`)."""
    _check_callable("score_fn", score_fn)
    _check_sde(sde)

    def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sig = _rows(sigma.double(), x)
        if sde is None:
            return x + sig * sig * _checked(score_fn(x, sigma), x, "score_fn").to(x.dtype)
        t = time_of_sigma(sde, sigma)
        m = _rows(sde.marginal_mean_scale(t), x)
        s = _checked(score_fn(x * m, t.to(sigma.dtype)), x, "score_fn").to(x.dtype)
        return x + sig * sig * m * s

    return denoiser


def score_from_eps(eps_model: Callable, sde) -> Callable:
    """Score function ``s(x, t) = −ε(x, t) / std(t)`` of a noise-prediction model ``eps_model(x, t)``."""
    _check_callable("eps_model", eps_model)
    if not isinstance(sde, (VESDE, VPSDE)):
        raise TypeError(f"sde must be a fastlangevin.VESDE or VPSDE, got {type(sde).__name__}")

    def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = _checked(eps_model(x, t), x, "eps_model").to(x.dtype)
        return -eps / _rows(sde.marginal_std(t.double()), x)

    return score_fn


def eps_from_score(score_fn: Callable, sde) -> Callable:
    """Noise predictor ``ε(x, t) = −std(t) s(x, t)`` of a score function (e.g. for an ε-loss or a DDIM step)."""
    _check_callable("score_fn", score_fn)
    if not isinstance(sde, (VESDE, VPSDE)):
        raise TypeError(f"sde must be a fastlangevin.VESDE or VPSDE, got {type(sde).__name__}")

    def eps_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = _checked(score_fn(x, t), x, "score_fn").to(x.dtype)
        return -s * _rows(sde.marginal_std(t.double()), x)

    return eps_model
