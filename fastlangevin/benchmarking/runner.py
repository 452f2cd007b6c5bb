"""The benchmark loop: for every case, measure the copy bandwidth, then check and time each provider."""

from __future__ import annotations

import datetime
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, TextIO

import torch

from .checks import CheckFailed
from .registry import BenchOptions, Case, Provider, ProviderUnavailable, Workload, get_workload
from .timing import Timing, synchronize, time_fn


@dataclass
class ProviderResult:
    name: str
    label: str
    kind: str
    status: str  # "ok" | "skipped" | "rejected" | "error"
    reason: str = ""
    check: Dict[str, Any] = field(default_factory=dict)
    timing: Optional[Timing] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def gbps(self, nbytes: int) -> Optional[float]:
        return None if self.timing is None else nbytes / (self.timing.median_ms * 1e-3) / 1e9


@dataclass
class CaseResult:
    case: Case
    bytes_moved: int
    copy_bytes: Optional[int] = None
    copy: Optional[Timing] = None
    providers: List[ProviderResult] = field(default_factory=list)
    skipped: str = ""  # the whole case was skipped (e.g. does not fit in memory)

    @property
    def copy_gbps(self) -> Optional[float]:
        if self.copy is None or not self.copy_bytes:
            return None
        return self.copy_bytes / (self.copy.median_ms * 1e-3) / 1e9

    def timed(self) -> List[ProviderResult]:
        return [p for p in self.providers if p.status == "ok" and p.timing is not None]

    def speedups(self) -> Dict[str, Dict[str, float]]:
        """``speedups[a][b]`` = time of b / time of a: how many times faster a is than b."""
        t = {p.name: p.timing.median_ms for p in self.timed()}
        return {a: {b: t[b] / t[a] for b in t if b != a} for a in t}

    def to_dict(self) -> Dict[str, Any]:
        c = self.case
        provs = []
        for p in self.providers:
            gb = p.gbps(self.bytes_moved)
            cg = self.copy_gbps
            provs.append(
                {
                    "name": p.name,
                    "label": p.label,
                    "kind": p.kind,
                    "status": p.status,
                    "reason": p.reason,
                    "check": p.check,
                    "timing_ms": None if p.timing is None else p.timing.to_dict(),
                    "gbps": gb,
                    "pct_of_copy": None if gb is None or not cg else 100.0 * gb / cg,
                    "extra": p.extra,
                }
            )
        return {
            "key": c.key,
            "workload": c.workload,
            "dtype": c.dtype_name,
            "mode": c.mode,
            "numel": c.numel,
            "bytes_moved": self.bytes_moved,
            "skipped": self.skipped,
            "copy": None if self.copy is None else {"bytes": self.copy_bytes, "timing_ms": self.copy.to_dict(), "gbps": self.copy_gbps},
            "providers": provs,
            "speedups": self.speedups(),
        }


@dataclass
class BenchResult:
    meta: Dict[str, Any]
    cases: List[CaseResult]
    bytes_notes: Dict[str, str]

    def to_dict(self) -> Dict[str, Any]:
        return {"meta": self.meta, "bytes_notes": self.bytes_notes, "cases": [c.to_dict() for c in self.cases]}


# ---------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------
def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _version(module: str) -> Optional[str]:
    import importlib

    try:
        return getattr(importlib.import_module(module), "__version__", "unknown")
    except Exception:
        return None


def environment(opts: BenchOptions) -> Dict[str, Any]:
    import fastlangevin

    dev = opts.device
    meta: Dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(dev),
        "device_name": _cpu_name() if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "fastlangevin": fastlangevin.__version__,
        "torch": torch.__version__,
        "triton": _version("triton"),
        "cuda": torch.version.cuda,
        "numpy": _version("numpy"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET", "0"),
        "peers": {"diffusers": _version("diffusers"), "torchebm": _version("torchebm")},
        "argv": list(sys.argv),
        "options": {
            "workloads": list(opts.workloads),
            "dtypes": list(opts.dtypes),
            "modes": list(opts.modes),
            "sizes_log2": None if opts.sizes is None else list(opts.sizes),
            "providers": None if opts.providers is None else list(opts.providers),
            "eps": opts.eps,
            "rep_ms": opts.rep_ms,
            "warmup_ms": opts.warmup_ms,
            "min_reps": opts.min_reps,
            "seed": opts.seed,
        },
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        meta["gpu"] = {
            "total_memory": props.total_memory,
            "l2_cache_bytes": getattr(props, "L2_cache_size", None),
            "multiprocessors": props.multi_processor_count,
            "capability": f"{props.major}.{props.minor}",
        }
    return meta


# ---------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------
class Progress:
    def __init__(self, total: int, stream: TextIO, quiet: bool):
        self.total, self.done, self.stream, self.quiet = total, 0, stream, quiet
        self.t0 = time.perf_counter()

    def say(self, msg: str, advance: bool = False) -> None:
        if advance:
            self.done += 1
        if not self.quiet:
            width = len(str(self.total))
            print(f"[{self.done:{width}d}/{self.total}] {time.perf_counter() - self.t0:6.1f}s {msg}", file=self.stream, flush=True)


def _fits(workload: Workload, case: Case) -> Optional[str]:
    if case.device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(case.device)
    need = workload.memory_per_element(case.dtype) * case.numel
    if need > 0.9 * free:
        return f"needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"
    return None


def _run_provider(workload: Workload, provider: Provider, case: Case, inputs: Any, opts: BenchOptions, progress: Progress) -> ProviderResult:
    res = ProviderResult(provider.name, provider.label, provider.kind, "ok")
    reason = provider.unavailable(case, opts)
    if reason:
        res.status, res.reason = "skipped", reason
        progress.say(f"{case.key:34s} {provider.name:16s} skipped: {reason}", advance=True)
        return res
    try:
        res.check = workload.check(provider, case, inputs, opts)
        synchronize(case.device)
    except ProviderUnavailable as exc:
        res.status, res.reason = "skipped", str(exc)
        progress.say(f"{case.key:34s} {provider.name:16s} skipped: {exc}", advance=True)
        return res
    except CheckFailed as exc:
        res.status, res.reason = "rejected", str(exc)
        progress.say(f"{case.key:34s} {provider.name:16s} REJECTED by the correctness check: {exc}", advance=True)
        return res
    except Exception as exc:  # a provider crashing must not end the run
        res.status, res.reason = "error", f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        progress.say(f"{case.key:34s} {provider.name:16s} ERROR: {res.reason}", advance=True)
        return res
    try:
        fn, extra = workload.timed(provider, case, inputs, opts)
        if provider.rebinds and case.mode == "inplace":
            extra["rebinds"] = True
        synchronize(case.device)
        t0 = time.perf_counter()
        first = fn()
        synchronize(case.device)
        extra["first_call_ms"] = (time.perf_counter() - t0) * 1e3  # includes compilation, if any
        del first
        res.extra = extra
        res.timing = time_fn(fn, case.device, warmup_ms=opts.warmup_ms, rep_ms=opts.rep_ms, min_reps=opts.min_reps)
    except Exception as exc:
        res.status, res.reason = "error", f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        progress.say(f"{case.key:34s} {provider.name:16s} ERROR while timing: {res.reason}", advance=True)
        return res
    gb = res.gbps(workload.bytes_moved(case))
    progress.say(f"{case.key:34s} {provider.name:16s} {res.timing.median_ms:10.4f} ms  {gb:8.1f} GB/s", advance=True)
    return res


def run(opts: BenchOptions, stream: Optional[TextIO] = None) -> BenchResult:
    """Run every selected workload, case and provider; progress goes to ``stream`` (stderr)."""
    stream = sys.stderr if stream is None else stream
    workloads = [get_workload(name) for name in opts.workloads]
    plan = [(w, c) for w in workloads for c in w.cases(opts)]
    total = sum(len(w.providers(opts)) for w, _ in plan)
    progress = Progress(total, stream, opts.quiet)
    meta = environment(opts)
    if not opts.quiet:
        print(f"fastlangevin bench on {meta['device']} ({meta['device_name']}): {len(plan)} cases, {total} measurements", file=stream, flush=True)
    results: List[CaseResult] = []
    copy_cache: Dict[Any, Timing] = {}
    for w, case in plan:
        cr = CaseResult(case, w.bytes_moved(case))
        results.append(cr)
        too_big = _fits(w, case)
        if too_big:
            cr.skipped = too_big
            for _ in w.providers(opts):
                progress.say(f"{case.key:34s} skipped: {too_big}", advance=True)
            continue
        inputs = w.setup(case, opts)
        pair = w.copy_baseline(case, inputs)
        if pair is not None:
            src, dst = pair
            cr.copy_bytes = src.numel() * src.element_size() + dst.numel() * dst.element_size()
            ck = (src.numel(), src.dtype, dst.dtype)
            if ck not in copy_cache:
                copy_cache[ck] = time_fn(lambda: dst.copy_(src), case.device, warmup_ms=opts.warmup_ms, rep_ms=opts.rep_ms, min_reps=opts.min_reps)
                progress.say(f"{case.key:34s} {'copy (y.copy_(x))':16s} {copy_cache[ck].median_ms:10.4f} ms  {cr.copy_bytes / copy_cache[ck].median_ms / 1e6:8.1f} GB/s")
            cr.copy = copy_cache[ck]
            del src, dst, pair
        for provider in w.providers(opts):
            cr.providers.append(_run_provider(w, provider, case, inputs, opts, progress))
        del inputs
        if case.device.type == "cuda":
            torch.cuda.empty_cache()
    return BenchResult(meta, results, {w.name: w.bytes_note for w in workloads})


def headline(cr: CaseResult, ours: str, other: str) -> Optional[float]:
    """Speed-up of provider ``ours`` over ``other`` in a case, or None when either did not run."""
    t = {p.name: p.timing.median_ms for p in cr.timed()}
    if ours in t and other in t and t[ours] > 0:
        return t[other] / t[ours]
    return None


def finite(x: Optional[float]) -> bool:
    return x is not None and math.isfinite(x)
