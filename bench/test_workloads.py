"""Every registered workload x case x provider as a pytest-benchmark test.

Each provider's output is checked (``Workload.check``) before it is timed, exactly as in
``fastlangevin bench``: a wrong provider fails its test instead of producing a number.
Effective GB/s is stored in each benchmark's ``extra_info``.

    pytest bench                                        # CPU defaults / GPU defaults
    FASTLANGEVIN_BENCH_SIZES=24 FASTLANGEVIN_BENCH_DTYPES=fp32 pytest bench -k "out and (torch or eager)"
    pytest bench --benchmark-json=bench.json

``fastlangevin bench`` is the reference measurement on GPUs (CUDA events with an L2 flush via
``triton.testing.do_bench``); pytest-benchmark times wall clock around a synchronised call.
"""

import os

import pytest

from fastlangevin.benchmarking import get_workload
from fastlangevin.benchmarking.cli import options_from_args
from fastlangevin.benchmarking.engine import synchronize
from fastlangevin.cli import build_parser

# FASTLANGEVIN_BENCH_<NAME> is the CLI's --<name>: the same defaults and the same checks of what is asked for.
ENV = ("DEVICE", "WORKLOADS", "DTYPES", "MODES", "SIZES", "PROVIDERS")
ARGV = [
    f"--{k.lower()}={os.environ[f'FASTLANGEVIN_BENCH_{k}']}" for k in ENV if os.environ.get(f"FASTLANGEVIN_BENCH_{k}")
]
OPTS = options_from_args(build_parser().parse_args(["bench", *ARGV]))


def _params():
    out = []
    for wname in OPTS.workloads:
        w = get_workload(wname)
        for case in w.cases(OPTS):
            for prov in w.providers(OPTS):
                out.append(pytest.param(w, case, prov, id=f"{case.key}-{prov.name}"))
    return out


@pytest.mark.parametrize("workload,case,provider", _params())
def test_workload(benchmark, workload, case, provider):
    reason = provider.unavailable(case, OPTS)
    if reason:
        pytest.skip(f"{provider.name}: {reason}")
    inputs = workload.setup(case, OPTS)
    check = workload.check(provider, case, inputs, OPTS)  # raises CheckFailed: the test fails
    fn, extra = workload.timed(provider, case, inputs, OPTS)

    def call():
        r = fn()
        synchronize(case.device)
        return r

    call()  # warm-up (compilation) outside the measurement
    benchmark.group = case.key
    benchmark.extra_info.update(
        {"bytes_moved": workload.bytes_moved(case), "provider": provider.label, "check": repr(check)[:500], **extra}
    )
    benchmark(call)
    if benchmark.stats is not None and workload.bytes_moved(case):  # stats None under --benchmark-disable
        benchmark.extra_info["effective_GBps"] = workload.bytes_moved(case) / benchmark.stats.stats.median / 1e9
