"""Benchmarks and profiling for fastlangevin (``fastlangevin bench``, ``pytest bench``, ``fastlangevin profile``).

* :mod:`.engine` — cases, providers, workloads, the check-before-timing loop, timing, raw results;
* :mod:`.checks` — statistical correctness gates (every provider passes one before it is timed);
* :mod:`.workloads` — the built-in workloads; :mod:`.peers` — optional peer-library providers;
* :mod:`.report` — table, JSON, plot; :mod:`.cli` — ``fastlangevin bench``; :mod:`.dropin` — the
  drop-in suite with its targets; :mod:`.profiling` — a sampler under ``torch.profiler``.

Adding a workload (e.g. ODE solvers: NFE and wall time; an SGLD optimizer): write one module in
``workloads/`` with a :class:`Workload` subclass — ``name``, ``provider_list`` (a
:class:`Provider` per implementation, ``make`` its factory), ``setup`` (inputs), ``check`` (raise
:class:`CheckFailed` on a wrong output; compare against :mod:`fastlangevin.reference`), ``timed``
(the callable to time plus extra figures such as an NFE count), and ``bytes_per_element`` (for GB/s)
or a ``unit`` with ``items`` (e.g. ``"steps/s"``, the steps of one call) — then add one
``register_workload(...)`` line to ``workloads/__init__.py``. The CLI, ``pytest bench`` and the JSON
pick it up from the registry.
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
