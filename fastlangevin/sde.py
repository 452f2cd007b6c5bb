"""Score SDEs (Song et al. 2020) and their discretisations for predictor–corrector sampling.

Two forward SDEs on t ∈ [0, 1]:

* :class:`VESDE` (variance exploding): dx = √(dσ²/dt) dW with σ(t) = σ_min (σ_max/σ_min)^t;
  perturbation kernel x̃ = x + σ(t) z; prior N(0, σ_max² I).
* :class:`VPSDE` (variance preserving): dx = -½ β(t) x dt + √β(t) dW with
  β(t) = β_min + t (β_max - β_min); x̃ = m(t) x + std(t) z with
  log m(t) = -¼ t² (β_max - β_min) - ½ t β_min, std(t) = √(1 - m(t)²); prior N(0, I).

Sampling with N steps walks the time grid t_i = linspace(1, eps, N) (i = 0 … N-1) and uses
discrete level k = N - 1 - i. Every update has the affine form the fused ops run,

    x ← c · x + a · s(x, t_i) + b · z,

and :meth:`schedule` returns c, a, b for each predictor, plus α of the Langevin corrector:

* reverse diffusion (discretised reverse SDE), VE: c = 1, a = σ_k² - σ_{k-1}² (σ_{-1} = 0),
  b = √a, with the discrete ladder σ_k = σ_min (σ_max/σ_min)^{k/(N-1)}.
  VP: c = 2 - √(1 - β_k), a = β_k, b = √β_k, with discrete β_k = linspace(β_min/N, β_max/N, N).
* Euler–Maruyama on the reverse SDE with step 1/N: c = 1 - f-coefficient/N
  (VP: c = 1 + β(t)/(2N); VE: 1), a = g(t)²/N, b = g(t)/√N, with g² = dσ²/dt (VE) or β(t) (VP).
* corrector α: 1 (VE), 1 - β_k (VP).

The discretisation (levels, times, the 1/N step of Euler–Maruyama) follows the published
score-SDE sampler, so results are comparable with it.

Both SDEs have a linear drift f(x, t) = f_t · x (VE: f_t = 0; VP: f_t = -½ β(t)) and a scalar
diffusion g(t) (VE: g² = dσ²/dt = 2 σ(t)² log(σ_max/σ_min); VP: g² = β(t)); ``drift_coeff(t)``
and ``diffusion_sq(t)`` return f_t and g(t)². The probability-flow ODE (used by
:mod:`fastlangevin.probability_flow`) is dx/dt = f_t x − ½ g(t)² s(x, t), so its two
coefficients are :func:`pf_coeffs`. ``prior_logp(z)`` is the log-density of the prior
N(0, prior_std² I) per sample (``[B]``, summed over all non-batch dims).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def _check_positive(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {v}")
    return v


def _as_time(t) -> torch.Tensor:
    return t if isinstance(t, torch.Tensor) else torch.tensor(float(t), dtype=torch.float64)


def _gaussian_logp(z: torch.Tensor, std: float) -> torch.Tensor:
    """log N(z; 0, std² I) per sample: ``[B]`` (fp32 at least), summed over dims 1..."""
    if not isinstance(z, torch.Tensor) or z.dim() < 1:
        raise TypeError("z must be a tensor [B, ...] (dim 0 the batch)")
    zf = z.to(torch.promote_types(z.dtype, torch.float32)).reshape(z.shape[0], -1)
    var = float(std) ** 2
    return -0.5 * (zf * zf).sum(1) / var - 0.5 * zf.shape[1] * math.log(2 * math.pi * var)


@dataclass(frozen=True)
class Schedule:
    """Per-step coefficients (float64 CPU tensors ``[N]``), step i going from t = 1 towards eps.

    ``t``: times handed to the score function; ``rd_*`` / ``em_*``: (c, a, b) of the
    reverse-diffusion and Euler–Maruyama predictors; ``alpha``: the corrector's α.
    """

    t: torch.Tensor
    rd_c: torch.Tensor
    rd_a: torch.Tensor
    rd_b: torch.Tensor
    em_c: torch.Tensor
    em_a: torch.Tensor
    em_b: torch.Tensor
    alpha: torch.Tensor

    def predictor(self, name: str):
        """(c, a, b) tables of predictor ``name`` ("reverse_diffusion" or "euler_maruyama")."""
        if name == "reverse_diffusion":
            return self.rd_c, self.rd_a, self.rd_b
        if name == "euler_maruyama":
            return self.em_c, self.em_a, self.em_b
        raise ValueError(f"unknown predictor {name!r}")


def _time_grid(n_steps: int, eps: float) -> torch.Tensor:
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be an int >= 1, got {n_steps!r}")
    eps = _check_positive("eps", eps)
    if eps >= 1:
        raise ValueError(f"eps must be < 1 (the last sampling time), got {eps}")
    return torch.linspace(1.0, eps, n_steps, dtype=torch.float64)


@dataclass(frozen=True)
class VESDE:
    """Variance-exploding SDE: σ(t) = σ_min (σ_max/σ_min)^t, prior N(0, σ_max² I)."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    #: Last sampling time (published VE setting).
    sampling_eps: float = 1e-5

    def __post_init__(self):
        lo = _check_positive("sigma_min", self.sigma_min)
        hi = _check_positive("sigma_max", self.sigma_max)
        if lo >= hi:
            raise ValueError(f"sigma_min must be < sigma_max, got {lo} >= {hi}")
        _check_positive("sampling_eps", self.sampling_eps)

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def sigma(self, t) -> torch.Tensor:
        """σ(t) (same shape and dtype as ``t``)."""
        t = _as_time(t)
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def marginal_std(self, t) -> torch.Tensor:
        """Std of the perturbation kernel at time t: σ(t)."""
        return self.sigma(t)

    def marginal_mean_scale(self, t) -> torch.Tensor:
        """Scale of x in the perturbation kernel's mean: 1."""
        return torch.ones_like(_as_time(t))

    def drift_coeff(self, t) -> torch.Tensor:
        """f_t of the drift f(x, t) = f_t x: 0 for VE."""
        return torch.zeros_like(_as_time(t))

    def diffusion_sq(self, t) -> torch.Tensor:
        """g(t)² = dσ²/dt = 2 σ(t)² log(σ_max/σ_min)."""
        return self.sigma(t) ** 2 * (2 * math.log(self.sigma_max / self.sigma_min))

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, σ_max² I) per sample ``[B]``, summed over dims 1..."""
        return _gaussian_logp(z, self.prior_std)

    def discrete_sigmas(self, n: int) -> torch.Tensor:
        """σ_k = σ_min (σ_max/σ_min)^{k/(N-1)}, k = 0 … N-1 (float64, increasing)."""
        return torch.exp(torch.linspace(math.log(self.sigma_min), math.log(self.sigma_max), n, dtype=torch.float64))

    def schedule(self, n_steps: int, eps=None) -> Schedule:
        t = _time_grid(n_steps, self.sampling_eps if eps is None else eps)
        ds = self.discrete_sigmas(n_steps).flip(0)  # level of step i: k = N-1-i
        prev = torch.cat([ds[1:], ds.new_zeros(1)])  # σ_{k-1}, 0 below the ladder
        rd_a = ds**2 - prev**2
        g2 = self.sigma(t) ** 2 * (2 * math.log(self.sigma_max / self.sigma_min))
        one = torch.ones_like(t)
        return Schedule(
            t=t,
            rd_c=one,
            rd_a=rd_a,
            rd_b=rd_a.sqrt(),
            em_c=one,
            em_a=g2 / n_steps,
            em_b=(g2 / n_steps).sqrt(),
            alpha=one,
        )


@dataclass(frozen=True)
class VPSDE:
    """Variance-preserving SDE: β(t) = β_min + t (β_max - β_min), prior N(0, I)."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    #: Last sampling time (published VP setting).
    sampling_eps: float = 1e-3

    def __post_init__(self):
        lo = _check_positive("beta_min", self.beta_min)
        hi = _check_positive("beta_max", self.beta_max)
        if lo >= hi:
            raise ValueError(f"beta_min must be < beta_max, got {lo} >= {hi}")
        _check_positive("sampling_eps", self.sampling_eps)

    @property
    def prior_std(self) -> float:
        return 1.0

    def beta(self, t) -> torch.Tensor:
        t = _as_time(t)
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def marginal_mean_scale(self, t) -> torch.Tensor:
        """m(t) with log m(t) = -¼ t² (β_max - β_min) - ½ t β_min."""
        t = _as_time(t)
        return torch.exp(-0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min)

    def marginal_std(self, t) -> torch.Tensor:
        """std(t) = √(1 - m(t)²)."""
        return torch.sqrt(1.0 - self.marginal_mean_scale(t) ** 2)

    def drift_coeff(self, t) -> torch.Tensor:
        """f_t of the drift f(x, t) = f_t x: -½ β(t) for VP."""
        return -0.5 * self.beta(t)

    def diffusion_sq(self, t) -> torch.Tensor:
        """g(t)² = β(t)."""
        return self.beta(t)

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, I) per sample ``[B]``, summed over dims 1..."""
        return _gaussian_logp(z, self.prior_std)

    def discrete_betas(self, n: int) -> torch.Tensor:
        """β_k = linspace(β_min/N, β_max/N, N)[k] (float64)."""
        return torch.linspace(self.beta_min / n, self.beta_max / n, n, dtype=torch.float64)

    def schedule(self, n_steps: int, eps=None) -> Schedule:
        t = _time_grid(n_steps, self.sampling_eps if eps is None else eps)
        if self.beta_max / n_steps >= 1:
            raise ValueError(
                f"VPSDE with n_steps={n_steps} has a discrete β = beta_max/n_steps = "
                f"{self.beta_max / n_steps:.3g} >= 1 "
                f"(its step would scale x by √(1-β) of a negative number); use n_steps > {int(self.beta_max)}"
            )
        b = self.discrete_betas(n_steps).flip(0)  # level of step i: k = N-1-i
        bt = self.beta(t)
        return Schedule(
            t=t,
            rd_c=2.0 - torch.sqrt(1.0 - b),
            rd_a=b,
            rd_b=b.sqrt(),
            em_c=1.0 + bt / (2 * n_steps),
            em_a=bt / n_steps,
            em_b=(bt / n_steps).sqrt(),
            alpha=1.0 - b,
        )


SDE = (VESDE, VPSDE)


def pf_coeffs(sde, t: float):
    """(c_x, c_s) of the probability-flow drift c_x x + c_s s(x, t) at a host time ``t`` (floats)."""
    tt = torch.tensor(float(t), dtype=torch.float64)
    return float(sde.drift_coeff(tt)), -0.5 * float(sde.diffusion_sq(tt))


def check_sde(sde) -> None:
    """``sde`` must offer what the ODE solvers use (the two built-in SDEs do)."""
    need = ("drift_coeff", "diffusion_sq", "marginal_std", "marginal_mean_scale", "prior_std", "sampling_eps")
    missing = [n for n in need if not hasattr(sde, n)]
    if missing:
        raise TypeError(
            f"sde must be a fastlangevin.VESDE or VPSDE (missing {', '.join(missing)}), got {type(sde).__name__}"
        )
