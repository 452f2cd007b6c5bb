"""Bayesian deep learning: SGLD, pSGLD and SGHMC as fused multi-tensor ``torch.optim`` optimizers.

    ∇U = N · p.grad + λ θ;   SGLD: θ ← θ − lr ∇U + sqrt(2 lr T) z   (pSGLD, SGHMC: see .samplers)

One fused launch per param group (and dtype bucket) per step; noise for element j of parameter i
keyed by (the step's seed, i, j) in the counter-based stream, saved in ``state_dict``.
:class:`CyclicalLR` is cSGLD's cyclical step size.
"""

from .base import LangevinOptimizer
from .samplers import SGHMC, SGLD, pSGLD
from .schedule import CyclicalLR

__all__ = ["CyclicalLR", "LangevinOptimizer", "SGHMC", "SGLD", "pSGLD"]
