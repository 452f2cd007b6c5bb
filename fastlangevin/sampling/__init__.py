"""Samplers built on the fused ops: ULA, annealed Langevin (NCSN), predictor–corrector (score
SDE) and MALA (with step-size adaptation, :mod:`.adapt`), with the loop options they share (trace,
streaming statistics :mod:`.stats`, checkpoint/resume :mod:`.checkpoint`, callback, CUDA graphs, ...)."""

from .dynamics import annealed_langevin, check_sigmas, langevin
from .loop import PHASES, NonFiniteError, Trace
from .mala import mala, score_from_energy
from .pc import pc_sample, sample_prior
from .stats import RunningStats

__all__ = [
    "PHASES",
    "NonFiniteError",
    "RunningStats",
    "Trace",
    "annealed_langevin",
    "check_sigmas",
    "langevin",
    "mala",
    "pc_sample",
    "sample_prior",
    "score_from_energy",
]
