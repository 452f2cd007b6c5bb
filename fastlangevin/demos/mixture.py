"""A 2-D mixture of isotropic Gaussians with its exact score (the demos' and tests' target)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class GaussianMixture2D:
    """p(x) = Σ_k w_k N(x; μ_k, s² I).  ``means [K, 2]``, ``weights [K]`` (sum to 1), ``std`` s."""

    means: torch.Tensor
    weights: torch.Tensor
    std: float = 1.0

    @classmethod
    def default(cls, device="cpu") -> "GaussianMixture2D":
        """The demos' mixture: three unit-variance modes on a triangle of radius 4.5 (side ≈ 7.8,
        so the modes barely overlap) with unequal weights 0.6 / 0.3 / 0.1. Between them the
        density has a local minimum (see :meth:`local_minimum`)."""
        angles = torch.tensor([90.0, 210.0, 330.0], dtype=torch.float64) * math.pi / 180
        means = 4.5 * torch.stack([angles.cos(), angles.sin()], dim=1)
        weights = torch.tensor([0.6, 0.3, 0.1])
        return cls(means.float().to(device), weights.to(device), 1.0)

    def to(self, device) -> "GaussianMixture2D":
        return GaussianMixture2D(self.means.to(device), self.weights.to(device), self.std)

    def _log_components(self, x: torch.Tensor, var: float) -> torch.Tensor:
        d2 = ((x[:, None, :] - self.means[None]) ** 2).sum(-1)  # [N, K]
        return (
            torch.log(self.weights)[None]
            - 0.5 * d2 / var
            - torch.log(torch.tensor(2 * torch.pi * var, device=x.device))
        )

    def log_prob(self, x: torch.Tensor, sigma: float = 0.0) -> torch.Tensor:
        """log p_σ(x) of the mixture convolved with N(0, σ² I) (σ = 0: the mixture itself)."""
        return torch.logsumexp(self._log_components(x, self.std**2 + sigma**2), dim=1)

    def score(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        """∇ log p_σ(x) ``[N, 2]`` of the mixture convolved with N(0, σ² I); ``sigma``: float or ``[N]``.

        With v = s² + σ² and responsibilities r_k(x) = softmax_k(log w_k - ‖x - μ_k‖² / 2v):
        ∇ log p_σ(x) = (Σ_k r_k μ_k - x) / v. The ‖x‖² part of the exponent is the same for
        every k and cancels in the softmax, so the logits are an affine map of x (one matmul):
        (x·μ_k - ‖μ_k‖²/2) / v + log w_k — few ops, which matters in a loop of thousands of steps.
        """
        mu = self.means.to(x.dtype)
        if isinstance(sigma, torch.Tensor) and sigma.dim() == 1:
            var = (self.std**2 + sigma.to(x.dtype) ** 2)[:, None]  # [N, 1]
        else:
            var = self.std**2 + float(sigma) ** 2
        logits = (x @ mu.T - 0.5 * (mu * mu).sum(1)) / var + torch.log(self.weights.to(x.dtype))
        r = torch.softmax(logits, dim=1)  # [N, K]
        return (r @ mu - x) / var

    def local_minimum(self, iters: int = 5000, lr: float = 0.2) -> torch.Tensor:
        """``[2]``: the point between the modes where the density has a local minimum, found by
        gradient *descent* on log p from the means' centroid. There the score is ~0, so which
        mode a Langevin chain started there reaches is decided by the noise alone."""
        x = self.means.mean(0, keepdim=True).double()
        mix64 = GaussianMixture2D(self.means.double(), self.weights.double(), self.std)
        for _ in range(iters):
            x = x - lr * mix64.score(x)
        return x[0].to(self.means.dtype)

    def sample(self, n: int, generator=None) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, 2, device=self.means.device, generator=generator)
        return self.means[k] + self.std * z

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the nearest mean for each point."""
        return torch.cdist(x, self.means).argmin(dim=1)

    def mode_weights(self, x: torch.Tensor) -> torch.Tensor:
        """``[K]``: the fraction of the points ``x [N, 2]`` nearest to each mean."""
        return torch.bincount(self.assign(x), minlength=len(self.weights)).to(x.dtype) / max(x.shape[0], 1)
