"""Timing: CUDA events through ``triton.testing.do_bench`` on a GPU, wall clock on the CPU.

GPU: ``do_bench(fn, warmup, rep, return_mode="all")`` (Triton 3.9 signature:
``do_bench(fn, warmup=25, rep=100, grad_to_none=None, quantiles=None, return_mode="mean")``,
``warmup``/``rep`` in milliseconds). It runs ``fn`` once, estimates its time over 5 calls,
runs the warm-up calls, then times each repetition with a pair of CUDA events, flushing the
L2 cache (a 256 MB buffer write) before every repetition — so even inputs smaller than L2 are
read from HBM. We keep all per-repetition times and summarise them as median and 20/80 %
quantiles (older Triton without ``return_mode="all"``: ask for the quantiles directly).

CPU: one untimed call, then warm-up calls for ``warmup_ms``, then at least ``min_reps`` timed
calls (``time.perf_counter`` around each) until ``rep_ms`` is spent; median and quantiles
of those. Results a call returns are released outside the timed region. The runner times the
providers of a CPU case interleaved (:func:`time_cpu_interleaved`), round-robin.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Sequence

import torch


@dataclass
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float
    reps: int
    method: str
    samples_ms: List[float] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), ``0 <= q <= 1``."""
    v = sorted(values)
    if not v:
        return math.nan
    pos = q * (len(v) - 1)
    lo, hi = int(math.floor(pos)), int(math.ceil(pos))
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def _summary(samples: Sequence[float], method: str) -> Timing:
    return Timing(
        quantile(samples, 0.5), quantile(samples, 0.2), quantile(samples, 0.8), len(samples), method, list(samples)
    )


def time_cuda(fn: Callable[[], Any], warmup_ms: float = 25.0, rep_ms: float = 100.0) -> Timing:
    from triton.testing import do_bench

    try:
        samples = do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="all")
    except (AssertionError, TypeError, ValueError):  # Triton without return_mode="all"
        med, p20, p80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
        return Timing(float(med), float(p20), float(p80), -1, "triton.testing.do_bench (CUDA events, L2 flushed)")
    return _summary([float(t) for t in samples], "triton.testing.do_bench (CUDA events, L2 flushed)")


def time_cpu(
    fn: Callable[[], Any], warmup_ms: float = 25.0, rep_ms: float = 100.0, min_reps: int = 5, max_reps: int = 10_000
) -> Timing:
    r = fn()  # first call: allocator / lazy-init effects, never timed
    del r
    t_end = time.perf_counter() + warmup_ms / 1e3
    while time.perf_counter() < t_end:
        r = fn()
        del r
    samples: List[float] = []
    deadline = time.perf_counter() + rep_ms / 1e3
    while len(samples) < min_reps or (time.perf_counter() < deadline and len(samples) < max_reps):
        t0 = time.perf_counter()
        r = fn()
        t1 = time.perf_counter()
        del r  # freeing the result is not part of the call being timed
        samples.append((t1 - t0) * 1e3)
    return _summary(samples, "time.perf_counter, median of repeats")


def time_cpu_interleaved(
    fns: Dict[str, Callable[[], Any]],
    warmup_ms: float = 25.0,
    rep_ms: float = 100.0,
    min_reps: int = 5,
    max_reps: int = 10_000,
) -> Dict[str, Timing]:
    """Time several callables round-robin (one call of each per round), so that a change of
    load on a shared machine hits all of them alike. At least ``min_reps`` rounds, and rounds
    until ``rep_ms`` per callable is spent. Warm-up: one untimed call each, then whole rounds
    for ``warmup_ms`` per callable (at least two rounds: in a VM the first touches of fresh
    memory are slow)."""
    names = list(fns)
    for name in names:
        r = fns[name]()
        del r
    t_end = time.perf_counter() + len(names) * warmup_ms / 1e3
    rounds = 0
    while rounds < 2 or time.perf_counter() < t_end:
        for name in names:
            r = fns[name]()
            del r
        rounds += 1
    samples: Dict[str, List[float]] = {name: [] for name in names}
    deadline = time.perf_counter() + len(names) * rep_ms / 1e3
    rounds = 0
    while rounds < min_reps or (time.perf_counter() < deadline and rounds < max_reps):
        for name in names:
            fn = fns[name]
            t0 = time.perf_counter()
            r = fn()
            t1 = time.perf_counter()
            del r
            samples[name].append((t1 - t0) * 1e3)
        rounds += 1
    return {
        name: _summary(v, "time.perf_counter, median of repeats (providers interleaved)") for name, v in samples.items()
    }


def time_fn(
    fn: Callable[[], Any], device: torch.device, warmup_ms: float = 25.0, rep_ms: float = 100.0, min_reps: int = 5
) -> Timing:
    if device.type == "cuda":
        return time_cuda(fn, warmup_ms=warmup_ms, rep_ms=rep_ms)
    return time_cpu(fn, warmup_ms=warmup_ms, rep_ms=rep_ms, min_reps=min_reps)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
