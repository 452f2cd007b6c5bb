"""Benchmarks and profiling for fastlangevin (``fastlangevin bench``, ``pytest bench``, ``fastlangevin profile``).

:mod:`.engine` — cases, providers, the check-before-timing loop, timing, raw results; :mod:`.checks` — the
correctness gates; :mod:`.workloads` — the built-in workloads and their peers; :mod:`.report` — table, JSON,
plot; :mod:`.cli` — ``fastlangevin bench`` and its drop-in suite; :mod:`.profiling` — ``fastlangevin profile``.

Adding a workload: a :class:`Workload` subclass in ``workloads/`` (its docstring lists what to define; checks
compare against :mod:`fastlangevin.reference`) and one entry in the tuple below, which registers them in order
for ``--workloads all``, ``--list``, ``pytest bench`` and the JSON (the engine never imports the workloads).
"""

from . import engine
from .engine import BenchOptions, CheckFailed, Provider, ProviderUnavailable, Workload, get_workload, run
from .workloads import dsm, ode, optim, sampler, step

__all__ = ["BenchOptions", "CheckFailed", "Provider", "ProviderUnavailable", "Workload", "get_workload", "run"]
_ALL = (step.LangevinStep(), step.Corrector(), dsm.DSM(), sampler.Sampler(), ode.ODE(), optim.Optim())
engine.WORKLOADS.update((w.name, w) for w in _ALL)
