"""Benchmarks and profiling for fastlangevin (``fastlangevin bench``, ``pytest bench``, ``fastlangevin profile``).

:mod:`.engine` — cases, providers, the check-before-timing loop, timing, raw results; :mod:`.checks` — the
correctness gates; :mod:`.workloads` — the workloads and their peers; :mod:`.report` — table, JSON, plot;
:mod:`.cli` — ``fastlangevin bench``; :mod:`.profiling` — ``fastlangevin profile``. A new workload: a
:class:`Workload` subclass in ``workloads/`` (checks against :mod:`fastlangevin.reference`) and one entry in
the tuple below, which registers them in order (the engine never imports the workloads).
"""

from . import engine
from .engine import BenchOptions, CheckFailed, Provider, ProviderUnavailable, Workload, get_workload, run
from .workloads import dsm, ode, optim, sampler, step

__all__ = ["BenchOptions", "CheckFailed", "Provider", "ProviderUnavailable", "Workload", "get_workload", "run"]
_ALL = (step.LangevinStep(), step.Corrector(), dsm.DSM(), sampler.Sampler(), ode.ODE(), optim.Optim())
engine.WORKLOADS.update((w.name, w) for w in _ALL)
