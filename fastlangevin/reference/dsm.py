"""Reference denoising score matching (Vincent 2011; NCSN weighting of Song & Ermon 2019).

    x̃   = α x + σ z
    ℓ_i  = ½ λ_i Σ_j (s_ij + z_ij / σ_i)²,        s = score_fn(x̃, σ)
    ∂ℓ_i / ∂s_ij = λ_i (s_ij + z_ij / σ_i)

σ, α, λ: floats, 0-d or per-sample ``[B]`` tensors. Default α = 1 and λ = σ² (NCSN).
``reduction``: "mean" over samples, "sum", or "none" (the ``[B]`` per-sample losses).
"""

from __future__ import annotations

import torch

from .step import rows


def dsm_perturb(x: torch.Tensor, z: torch.Tensor, sigma, alpha=1.0) -> torch.Tensor:
    return rows(alpha, x) * x + rows(sigma, x) * z.to(x.dtype)


def _weight(sigma, weight, like):
    lam = sigma**2 if weight is None else weight
    return torch.as_tensor(lam, dtype=like.dtype, device=like.device).expand(like.shape[0])


def dsm_loss_rows(s: torch.Tensor, z: torch.Tensor, sigma, weight=None) -> torch.Tensor:
    """The ``[B]`` per-sample losses ½ λ_i ‖s_i + z_i / σ_i‖²."""
    residual = s + z.to(s.dtype) / rows(sigma, s)
    return 0.5 * _weight(sigma, weight, s) * residual.flatten(1).pow(2).sum(1)


def dsm_score_grad(s: torch.Tensor, z: torch.Tensor, sigma, weight=None) -> torch.Tensor:
    """∂ℓ_i/∂s = λ_i (s + z / σ_i) (per-sample losses, not reduced)."""
    return rows(_weight(sigma, weight, s), s) * (s + z.to(s.dtype) / rows(sigma, s))


def dsm_loss(score_fn, x, sigma, z, alpha=1.0, weight=None, reduction: str = "mean") -> torch.Tensor:
    s = score_fn(dsm_perturb(x, z, sigma, alpha), sigma)
    per = dsm_loss_rows(s, z, sigma, weight)
    return {"mean": per.mean, "sum": per.sum, "none": lambda: per}[reduction]()
