"""Benchmarks and profiling for fastlangevin (``fastlangevin bench`` / ``fastlangevin profile``).

* :mod:`.registry` — workloads, providers, options (shared by the CLI and ``bench/``);
* :mod:`.workloads` — the built-in workloads and their providers;
* :mod:`.peers` — optional providers from peer libraries (diffusers, torchebm);
* :mod:`.checks` — the correctness checks every provider passes before it is timed;
* :mod:`.timing` — ``triton.testing.do_bench`` on GPUs, median of repeats on CPUs;
* :mod:`.runner` / :mod:`.report` — the loop, the table, JSON and plot;
* :mod:`.profiling` — a sampler under ``torch.profiler``: Chrome trace + top-kernel table.
"""

from .checks import CheckFailed
from .registry import (
    BenchOptions,
    Case,
    Provider,
    ProviderUnavailable,
    Workload,
    all_workloads,
    get_workload,
    register_workload,
)
from .runner import BenchResult, CaseResult, ProviderResult, run

__all__ = [
    "BenchOptions",
    "BenchResult",
    "Case",
    "CaseResult",
    "CheckFailed",
    "Provider",
    "ProviderResult",
    "ProviderUnavailable",
    "Workload",
    "all_workloads",
    "get_workload",
    "register_workload",
    "run",
]
