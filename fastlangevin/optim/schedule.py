"""cSGLD's cyclical step size (Zhang et al. 2020, "Cyclical stochastic gradient MCMC").

    lr_k = lr0 / 2 · (cos(π · (k mod L) / L) + 1),    L = ceil(K / M)

K total steps, M cycles, k = 0, 1, … the step. The first ``exploration`` fraction of each cycle
is the exploration stage: the optimizer runs noise-free (its group's ``explore`` flag is set);
the rest is the sampling stage, where samples are collected (:meth:`CyclicalLR.is_sampling`).
"""

from __future__ import annotations

import math

import torch


class CyclicalLR(torch.optim.lr_scheduler.LRScheduler):
    """Cosine cyclical step size for a fastlangevin optimizer (works on any optimizer for the lr)."""

    def __init__(self, optimizer, total_steps: int, num_cycles: int, exploration: float = 0.0, last_epoch: int = -1):
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")
        if isinstance(num_cycles, bool) or not isinstance(num_cycles, int) or not 1 <= num_cycles <= total_steps:
            raise ValueError(f"num_cycles must be an int in [1, total_steps], got {num_cycles!r}")
        if not isinstance(exploration, (int, float)) or not 0.0 <= exploration < 1.0:
            raise ValueError(f"exploration must be a fraction in [0, 1), got {exploration!r}")
        self.total_steps, self.num_cycles, self.exploration = total_steps, num_cycles, float(exploration)
        self.cycle_length = math.ceil(total_steps / num_cycles)
        super().__init__(optimizer, last_epoch)

    def cycle_position(self, step=None) -> float:
        """(k mod L) / L in [0, 1) for step k (default: the current step)."""
        k = self.last_epoch if step is None else step
        return (k % self.cycle_length) / self.cycle_length

    def is_sampling(self) -> bool:
        """Whether the current step is in a cycle's sampling stage."""
        return self.cycle_position() >= self.exploration

    def get_lr(self):
        factor = 0.5 * (math.cos(math.pi * self.cycle_position()) + 1.0)
        explore = not self.is_sampling()
        for group in self.optimizer.param_groups:
            if "explore" in group:
                group["explore"] = explore
        return [base * factor for base in self.base_lrs]
