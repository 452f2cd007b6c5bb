"""Reference updates of the Langevin optimizers (SGLD, pSGLD, SGHMC): the plain formulas.

With U(θ) = −log p(θ | data), ``grad`` the minibatch gradient (of the mean negative log-likelihood
when ``num_data = N`` is given, then scaled by N; else of U itself), λ the Gaussian prior precision:

    ∇U = N · grad + λ θ
    SGLD  (Welling & Teh 2011):  θ ← θ − lr ∇U + sqrt(2 lr T) z
    pSGLD (Li et al. 2016):      V ← α V + (1 − α) ∇U²,  G = 1 / (eps + sqrt V),
                                 θ ← θ − lr G ∇U + sqrt(2 lr T G) z          (Γ(θ) term dropped)
    SGHMC (Chen et al. 2014, eq. 15; lr = η, friction = α, noise estimate β̂):
                                 v ← (1 − α) v − η ∇U + sqrt(2 (α − β̂) η T) z,  θ ← θ + v

Shapes: θ, grad, z, V, v all alike. ``z`` (standard normal) is given — the oracle never draws;
``z=None`` means no noise. Computes in θ's dtype (use float64 for an exact oracle).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch


def sqrt(t: torch.Tensor) -> torch.Tensor:
    """Correctly rounded square root (torch's vectorised CPU fp32 sqrt can be 1 ulp off)."""
    return t.double().sqrt().to(t.dtype)


def grad_potential(theta: torch.Tensor, grad: torch.Tensor, num_data: Optional[int] = None, prior_precision=0.0):
    scale = 1.0 if num_data is None else float(num_data)
    return scale * grad.to(theta.dtype) + prior_precision * theta


def sgld_step(theta, grad, lr, z=None, *, num_data=None, prior_precision=0.0, temperature=1.0) -> torch.Tensor:
    out = theta - lr * grad_potential(theta, grad, num_data, prior_precision)
    if z is not None:
        out = out + math.sqrt(2.0 * lr * temperature) * z.to(theta.dtype)
    return out


def psgld_step(
    theta, grad, square_avg, lr, z=None, *, alpha=0.99, eps=1e-5, num_data=None, prior_precision=0.0, temperature=1.0
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Returns (θ, V)."""
    g = grad_potential(theta, grad, num_data, prior_precision)
    v = alpha * square_avg + (1.0 - alpha) * (g * g)
    precond = 1.0 / (eps + sqrt(v))
    out = theta - lr * (precond * g)
    if z is not None:
        out = out + sqrt(2.0 * lr * temperature * precond) * z.to(theta.dtype)
    return out, v


def sghmc_step(
    theta,
    grad,
    momentum,
    lr,
    z=None,
    *,
    friction=0.1,
    noise_estimate=0.0,
    num_data=None,
    prior_precision=0.0,
    temperature=1.0,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Returns (θ, v)."""
    g = grad_potential(theta, grad, num_data, prior_precision)
    v = (1.0 - friction) * momentum - lr * g
    if z is not None:
        v = v + math.sqrt(2.0 * (friction - noise_estimate) * lr * temperature) * z.to(theta.dtype)
    return theta + v, v


def cyclical_lr(step: int, total_steps: int, num_cycles: int, lr0: float) -> float:
    """cSGLD (Zhang et al. 2020): lr_k = lr0 / 2 · (cos(π · ((k mod L) / L)) + 1), L = ceil(K / M)."""
    length = math.ceil(total_steps / num_cycles)
    return lr0 / 2.0 * (math.cos(math.pi * (step % length) / length) + 1.0)
