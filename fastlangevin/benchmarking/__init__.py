"""Benchmarks and profiling for fastlangevin (``fastlangevin bench``, ``pytest bench``, ``fastlangevin profile``).

* :mod:`.engine` — cases, providers, workloads, the check-before-timing loop, timing, raw results;
* :mod:`.checks` — statistical correctness gates (every provider passes one before it is timed);
* :mod:`.workloads` — the built-in workloads (each with its optional peer-library providers);
* :mod:`.report` — table, JSON, plot; :mod:`.cli` — ``fastlangevin bench``; :mod:`.dropin` — the
  drop-in suite with its targets; :mod:`.profiling` — a sampler under ``torch.profiler``.

Adding a workload (e.g. ODE solvers: NFE and wall time; an SGLD optimizer): one module in ``workloads/``
with a :class:`Workload` subclass (its docstring lists what to define; checks compare against
:mod:`fastlangevin.reference`) and one ``register_workload(...)`` line in ``workloads/__init__.py``;
the CLI, ``pytest bench`` and the JSON pick it up from the registry.
"""

from . import workloads  # noqa: F401  (fills the registry; it imports the engine, never the reverse)
from .engine import (  # noqa: F401
    BenchOptions,
    BenchResult,
    Case,
    CaseResult,
    CheckFailed,
    Provider,
    ProviderResult,
    ProviderUnavailable,
    Workload,
    all_workloads,
    get_workload,
    register_workload,
    run,
)
