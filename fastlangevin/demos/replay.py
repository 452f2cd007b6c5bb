"""The EBM demo's replay buffer, kept on the device (no host transfer, no sync per iteration).

Persistent contrastive divergence (Du & Mordatch 2019): each training step takes its negative
samples' starting points from the buffer, re-initialises a small fraction at random (so new
modes keep being explored), runs a short Langevin chain from them, and writes the chains' ends
back where they came from.
"""

from __future__ import annotations

from typing import Tuple

import torch


class ReplayBuffer:
    """``size`` states ``[size, *shape]`` on ``device``, initialised uniform in [low, high].

    ``reinit``: probability that a drawn state is replaced by a fresh uniform one.
    """

    def __init__(self, size: int, shape, *, low: float, high: float, generator: torch.Generator, reinit: float = 0.05):
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if not 0.0 <= reinit <= 1.0:
            raise ValueError(f"reinit must be in [0, 1], got {reinit}")
        self.low, self.high, self.reinit, self.generator = float(low), float(high), float(reinit), generator
        self.device = generator.device
        self.states = self._uniform((size, *tuple(shape)))

    def __len__(self) -> int:
        return self.states.shape[0]

    def _uniform(self, shape) -> torch.Tensor:
        return torch.empty(shape, device=self.device).uniform_(self.low, self.high, generator=self.generator)

    def sample(self, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(x [n, *shape], idx [n])``: states drawn with replacement, a ``reinit`` fraction
        (in expectation) replaced by fresh uniform ones. ``x`` is a copy."""
        idx = torch.randint(0, len(self), (n,), device=self.device, generator=self.generator)
        x = self.states[idx]
        fresh = torch.rand(n, device=self.device, generator=self.generator) < self.reinit
        mask = fresh.view(n, *([1] * (x.dim() - 1)))
        return torch.where(mask, self._uniform(x.shape), x), idx

    def push(self, x: torch.Tensor, idx: torch.Tensor) -> None:
        """Write the chains' ends ``x`` back to the slots ``idx`` they were drawn from."""
        self.states[idx] = x.detach().to(self.states.dtype)
