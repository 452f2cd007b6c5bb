"""EDM samplers (Karras et al. 2022, "Elucidating the design space of diffusion-based generative models").

    dx/dσ = (x − D(x, σ)) / σ        (the PF-ODE of x = x_data + σ z, with D the denoiser)

x: ``[B, ...]``, already at the first noise level (``x0 = sigmas[0] · N(0, I)``, k-diffusion's
convention); ``denoiser(x, sigma)`` returns the denoised estimate shaped like x, ``sigma`` a
per-sample ``[B]`` tensor (fp32; fp64 for fp64 states). ``sigmas``: decreasing noise levels, the
last usually 0 (:func:`karras_sigmas`).

Per step i (σ_i → σ_{i+1}), with h = σ̂ − σ_{i+1} ≥ 0 and k(x, σ) = (D(x, σ) − x)/σ (= σ · score):

* churn (Algorithm 2): γ = min(s_churn/N, √2 − 1) when s_tmin ≤ σ_i ≤ s_tmax, else 0;
  σ̂ = σ_i (1 + γ) and x ← x + √(σ̂² − σ_i²) · s_noise · z (the fused op, noise keyed by the global
  sample index; no noise drawn when γ = 0);
* ``"euler"``: x ← x + h k(x, σ̂);  ``"heun"``: the same, then (σ_{i+1} > 0) the trapezoid
  x ← x + h (k(x, σ̂) + k(x', σ_{i+1}))/2;
* ``"euler_ancestral"`` (η = 1; churn does not apply): σ_up = min(σ_{i+1}, √(σ_{i+1}² (σ_i² − σ_{i+1}²)/σ_i²)),
  σ_down = √(σ_{i+1}² − σ_up²), x ← x + (σ_i − σ_down) k(x, σ_i) + σ_up · s_noise · z — one fused op.

Every update is the fused step op (``x + a·k + b·z``); step parameters come from the host list, so
nothing syncs with the host. NFE: Heun 2N − 1 (no correction on the step to 0), Euler N.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from ._validate import check_state
from .ops.langevin_step import langevin_step
from .sampling.loop import _progress_bar, checked_score, compute_dtype, op_kwargs, phase

METHODS = ("heun", "euler", "euler_ancestral")


def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0, *, device=None):
    """σ_i = (σ_max^{1/ρ} + i/(n−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, i = 0 … n−1, then a final 0.

    Returns a float64 tensor of n + 1 decreasing levels (k-diffusion's ``get_sigmas_karras``)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    for name, v in (("sigma_min", sigma_min), ("sigma_max", sigma_max), ("rho", rho)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    if sigma_min >= sigma_max:
        raise ValueError(f"sigma_min must be < sigma_max, got {sigma_min} >= {sigma_max}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    s = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([s, s.new_zeros(1)]).to(device)


def check_sigmas_decreasing(sigmas) -> list:
    """Host list of the levels; must be ≥ 2 finite non-negative values, strictly decreasing."""
    if isinstance(sigmas, torch.Tensor):
        if sigmas.dim() != 1:
            raise ValueError(f"sigmas must be 1-D, got shape {tuple(sigmas.shape)}")
        vals = sigmas.detach().double().cpu().tolist()
    else:
        try:
            vals = [float(v) for v in sigmas]
        except TypeError as exc:
            raise TypeError(
                f"sigmas must be a 1-D tensor or a sequence of numbers, got {type(sigmas).__name__}"
            ) from exc
    if len(vals) < 2:
        raise ValueError(f"sigmas needs at least 2 levels (start and end), got {len(vals)}")
    if not all(math.isfinite(v) and v >= 0 for v in vals):
        raise ValueError(f"sigmas must be finite and >= 0, got {vals[:6]}...")
    bad = [i for i in range(len(vals) - 1) if not vals[i + 1] < vals[i]]
    if bad:
        i = bad[0]
        raise ValueError(f"sigmas must be strictly decreasing; sigmas[{i}]={vals[i]} <= sigmas[{i + 1}]={vals[i + 1]}")
    return vals


def _check_nonneg(name, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or v < 0:
        raise ValueError(f"{name} must be a number >= 0, got {v!r}")
    return float(v)


def edm_sample(
    denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    sigmas,
    *,
    method: str = "heun",
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    generator: Optional[torch.Generator] = None,
    progress: bool = False,
    return_nfe: bool = False,
    backend: Optional[str] = None,
    rng: Optional[str] = None,
    sample_offset: int = 0,
):
    """Sample with the EDM samplers (see module doc). Returns x at ``sigmas[-1]``, or ``(x, nfe)``."""
    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable(x, sigma) -> denoised, got {type(denoiser).__name__}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    check_state("x0", x0)
    sig = check_sigmas_decreasing(sigmas)
    s_churn = _check_nonneg("s_churn", s_churn)
    s_noise = _check_nonneg("s_noise", s_noise)
    s_tmin, s_tmax = _check_nonneg("s_tmin", s_tmin), _check_nonneg("s_tmax", s_tmax)
    if s_tmin > s_tmax:
        raise ValueError(f"s_tmin must be <= s_tmax, got {s_tmin} > {s_tmax}")
    kw = op_kwargs(x0, clamp=None, generator=generator, backend=backend, rng=rng, sample_offset=sample_offset)
    x = x0.detach().clone(memory_format=torch.contiguous_format)
    B, cdt, N = x.shape[0], compute_dtype(x.dtype), len(sig) - 1
    nfe = 0

    def k_of(y: torch.Tensor, sigma: float) -> torch.Tensor:
        nonlocal nfe
        with phase("fastlangevin.score"):
            d = denoiser(y, torch.full((B,), sigma, dtype=cdt, device=y.device))
        d = checked_score(d, y, "denoiser")
        nfe += 1
        return (d.to(y.dtype) - y).div_(sigma)

    bar = _progress_bar(progress, N, "edm_sample")
    with torch.no_grad():
        for i in range(N):
            s_cur, s_next = sig[i], sig[i + 1]
            if method == "euler_ancestral":
                s_up = min(s_next, math.sqrt(max(0.0, s_next**2 * (s_cur**2 - s_next**2) / s_cur**2)))
                s_down = math.sqrt(max(0.0, s_next**2 - s_up**2))
                x = langevin_step(x, k_of(x, s_cur), s_cur - s_down, s_up * s_noise, **kw)
            else:
                gamma = min(s_churn / N, math.sqrt(2.0) - 1.0) if s_tmin <= s_cur <= s_tmax else 0.0
                s_hat = s_cur * (1.0 + gamma)
                if gamma > 0:
                    x = langevin_step(x, x, 0.0, math.sqrt(s_hat**2 - s_cur**2) * s_noise, **kw)
                h = s_hat - s_next
                k1 = k_of(x, s_hat)
                x_next = langevin_step(x, k1, h, 0.0, backend=backend)
                if method == "heun" and s_next > 0:
                    k2 = k_of(x_next, s_next)
                    x_next = langevin_step(x, k1.add_(k2), h / 2, 0.0, backend=backend)
                x = x_next
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return (x, nfe) if return_nfe else x
