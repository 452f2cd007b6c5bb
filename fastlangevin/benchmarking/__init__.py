"""Benchmarks and profiling for fastlangevin (``fastlangevin bench``, ``pytest bench``, ``fastlangevin profile``).

:mod:`.engine` — cases, providers, the check-before-timing loop, timing, raw results; :mod:`.checks` —
the statistical correctness gates; :mod:`.workloads` — the built-in workloads (with their peer-library
providers); :mod:`.report` — table, JSON, plot; :mod:`.cli` — ``fastlangevin bench`` and its drop-in
suite; :mod:`.profiling` — a sampler under ``torch.profiler``.

Adding a workload: one module in ``workloads/`` with a :class:`Workload` subclass (its docstring lists
what to define; checks compare against :mod:`fastlangevin.reference`) and one entry in the tuple below,
which registers them in order (``--workloads all`` and ``--list`` follow it); the CLI, ``pytest bench``
and the JSON pick it up from the registry (the engine never imports the workloads).
"""

from . import engine
from .engine import BenchOptions, CheckFailed, Provider, ProviderUnavailable, Workload, get_workload, run
from .workloads import dsm, ode, optim, sampler, step

__all__ = ["BenchOptions", "CheckFailed", "Provider", "ProviderUnavailable", "Workload", "get_workload", "run"]
_ALL = (step.LangevinStep(), step.Corrector(), dsm.DSM(), sampler.Sampler(), ode.ODE(), optim.Optim())
engine.WORKLOADS.update((w.name, w) for w in _ALL)
