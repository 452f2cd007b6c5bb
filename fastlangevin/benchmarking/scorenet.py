"""A small MLP score network ``s_θ(x, σ)`` for the sampler benchmarks and the profiler.

    s_θ(x, σ) = MLP([x, log σ]) / σ        (NCSN's output scaling; without σ: MLP(x))

Random weights (seeded): the benchmarks time the sampling loop, not a trained model.
"""

import torch
from torch import nn


class ScoreMLP(nn.Module):
    """``x [B, dim]`` (and optionally ``sigma``: float, 0-d or ``[B]``) → score ``[B, dim]``."""

    def __init__(self, dim: int, hidden: int = 256, depth: int = 3, conditional: bool = True, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.dim, self.conditional = dim, conditional
        sizes = [dim + (1 if conditional else 0)] + [hidden] * depth + [dim]
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            lin = nn.Linear(a, b)
            with torch.no_grad():
                lin.weight.copy_(torch.randn(b, a, generator=g) / a**0.5)
                lin.bias.zero_()
            layers.append(lin)
            if i < len(sizes) - 2:
                layers.append(nn.SiLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor | None = None) -> torch.Tensor:
        if not self.conditional:
            return self.net(x)
        if sigma is None:
            raise ValueError("sigma: this ScoreMLP is noise-conditional; pass sigma (float, 0-d or [B] tensor)")
        sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        sig = sig.expand(x.shape[0]) if sig.dim() == 0 else sig.reshape(-1)
        h = torch.cat([x, sig.log()[:, None]], dim=1)
        return self.net(h) / sig[:, None]
