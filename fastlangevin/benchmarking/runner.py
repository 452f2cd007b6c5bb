"""The benchmark loop: for every case, measure the copy bandwidth, then check and time each provider."""

from __future__ import annotations

import datetime
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, TextIO, Tuple

import torch

from .checks import CheckFailed
from .registry import BenchOptions, Case, Provider, ProviderUnavailable, Workload, get_workload
from .timing import Timing, synchronize, time_cpu_interleaved, time_fn


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

    def gbps(self, nbytes: Optional[int]) -> Optional[float]:
        return None if self.timing is None or nbytes is None else nbytes / (self.timing.median_ms * 1e-3) / 1e9


@dataclass
class CaseResult:
    case: Case
    bytes_moved: Optional[int]  # None: not a bandwidth workload (see items / unit)
    items: Optional[float] = None  # per call, for a throughput in ``unit`` (e.g. steps/s)
    unit: str = "GB/s"
    copy_bytes: Optional[int] = None
    copy: Optional[Timing] = None
    providers: List[ProviderResult] = field(default_factory=list)
    skipped: str = ""  # the whole case was skipped (e.g. does not fit in memory)

    @property
    def copy_gbps(self) -> Optional[float]:
        if self.copy is None or not self.copy_bytes:
            return None
        return self.copy_bytes / (self.copy.median_ms * 1e-3) / 1e9

    def throughput(self, p: ProviderResult) -> Optional[float]:
        """GB/s for bandwidth workloads, else ``items`` per second in ``unit``."""
        if p.timing is None:
            return None
        if self.bytes_moved is not None:
            return p.gbps(self.bytes_moved)
        return None if self.items is None else self.items / (p.timing.median_ms * 1e-3)

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
                    "throughput": self.throughput(p),
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
            "items_per_call": self.items,
            "throughput_unit": self.unit,
            "skipped": self.skipped,
            "copy": None
            if self.copy is None
            else {"bytes": self.copy_bytes, "timing_ms": self.copy.to_dict(), "gbps": self.copy_gbps},
            "providers": provs,
            "speedups": self.speedups(),
        }


@dataclass
class BenchResult:
    meta: Dict[str, Any]
    cases: List[CaseResult]
    bytes_notes: Dict[str, str]

    @property
    def l2_bytes(self) -> Optional[int]:
        return (self.meta.get("gpu") or {}).get("l2_cache_bytes")

    def to_dict(self) -> Dict[str, Any]:
        cases = []
        for c in self.cases:
            d = c.to_dict()
            if self.l2_bytes and c.bytes_moved is not None:
                d["exceeds_l2"] = c.bytes_moved > self.l2_bytes
            cases.append(d)
        return {"meta": self.meta, "bytes_notes": self.bytes_notes, "cases": cases}


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
            print(
                f"[{self.done:{width}d}/{self.total}] {time.perf_counter() - self.t0:6.1f}s {msg}",
                file=self.stream,
                flush=True,
            )


def _fits(workload: Workload, case: Case) -> Optional[str]:
    if case.device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(case.device)
    need = workload.memory_per_element(case.dtype) * case.numel
    if need > 0.9 * free:
        return f"needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"
    return None


def _prepare_provider(
    workload: Workload, provider: Provider, case: Case, inputs: Any, opts: BenchOptions, progress: Progress
):
    """Availability, correctness check, then the callable to time (after one untimed first call,
    whose time — compilation included — is kept as ``first_call_ms``). Returns ``(result, fn)``;
    ``fn`` is None when the provider is skipped, rejected or crashed."""
    res = ProviderResult(provider.name, provider.label, provider.kind, "ok")
    tag = f"{case.key:34s} {provider.name:16s}"
    reason = provider.unavailable(case, opts)
    if reason:
        res.status, res.reason = "skipped", reason
        progress.say(f"{tag} skipped: {reason}", advance=True)
        return res, None
    try:
        res.check = workload.check(provider, case, inputs, opts)
        synchronize(case.device)
    except ProviderUnavailable as exc:
        res.status, res.reason = "skipped", str(exc)
        progress.say(f"{tag} skipped: {exc}", advance=True)
        return res, None
    except CheckFailed as exc:
        res.status, res.reason = "rejected", str(exc)
        progress.say(f"{tag} REJECTED by the correctness check: {exc}", advance=True)
        return res, None
    except Exception as exc:  # a provider crashing must not end the run
        res.status, res.reason = "error", f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        progress.say(f"{tag} ERROR: {res.reason}", advance=True)
        return res, None
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
    except Exception as exc:
        res.status, res.reason = "error", f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        progress.say(f"{tag} ERROR while preparing to time: {res.reason}", advance=True)
        return res, None
    progress.say(f"{tag} passed the check")
    return res, fn


def _time_case(
    cr: CaseResult,
    ready: List[Tuple[ProviderResult, Callable[[], Any]]],
    copy_fn,
    opts: BenchOptions,
    progress: Progress,
) -> None:
    """GPU: ``do_bench`` per provider. CPU: all providers (and the copy) round-robin, so a
    change of load on a shared machine hits every provider alike."""
    case = cr.case
    fns: Dict[str, Callable[[], Any]] = {}
    if copy_fn is not None and cr.copy is None:
        fns["__copy__"] = copy_fn
    for res, fn in ready:
        fns[res.name] = fn
    timings: Dict[str, Timing] = {}
    try:
        if case.device.type == "cuda":
            for name, fn in fns.items():
                timings[name] = time_fn(
                    fn, case.device, warmup_ms=opts.warmup_ms, rep_ms=opts.rep_ms, min_reps=opts.min_reps
                )
        elif fns:
            timings = time_cpu_interleaved(fns, warmup_ms=opts.warmup_ms, rep_ms=opts.rep_ms, min_reps=opts.min_reps)
    except Exception as exc:
        for res, _ in ready:
            res.status, res.reason = "error", f"while timing: {type(exc).__name__}: {exc}".splitlines()[0][:300]
        return
    if "__copy__" in timings:
        cr.copy = timings["__copy__"]
        progress.say(f"{case.key:34s} {'copy y.copy_(x)':16s} {cr.copy.median_ms:10.4f} ms  {cr.copy_gbps:8.1f} GB/s")
    unit = cr.unit
    for res, _ in ready:
        res.timing = timings[res.name]
        progress.say(
            f"{case.key:34s} {res.name:16s} {res.timing.median_ms:10.4f} ms  {cr.throughput(res):8.1f} {unit}",
            advance=True,
        )


def run(opts: BenchOptions, stream: Optional[TextIO] = None) -> BenchResult:
    """Run every selected workload, case and provider; progress goes to ``stream`` (stderr)."""
    stream = sys.stderr if stream is None else stream
    workloads = [get_workload(name) for name in opts.workloads]
    plan = [(w, c) for w in workloads for c in w.cases(opts)]
    total = sum(len(w.providers(opts)) for w, _ in plan)
    progress = Progress(total, stream, opts.quiet)
    meta = environment(opts)
    if not opts.quiet:
        print(
            f"fastlangevin bench on {meta['device']} ({meta['device_name']}): {len(plan)} cases, {total} measurements",
            file=stream,
            flush=True,
        )
    results: List[CaseResult] = []
    copy_cache: Dict[Any, Timing] = {}  # GPU: one copy measurement per (numel, dtype)
    for w, case in plan:
        items = w.items(case)
        cr = CaseResult(case, w.bytes_moved(case), *(items if items else (None, "GB/s")))
        results.append(cr)
        too_big = _fits(w, case)
        if too_big:
            cr.skipped = too_big
            for _ in w.providers(opts):
                progress.say(f"{case.key:34s} skipped: {too_big}", advance=True)
            continue
        inputs = w.setup(case, opts)
        copy_fn = None
        pair = w.copy_baseline(case, inputs)
        if pair is not None:
            src, dst = pair
            cr.copy_bytes = src.numel() * src.element_size() + dst.numel() * dst.element_size()
            ck = (src.numel(), src.dtype, dst.dtype)
            if case.device.type == "cuda" and ck in copy_cache:
                cr.copy = copy_cache[ck]
            else:
                copy_fn = lambda: dst.copy_(src)  # noqa: E731
        ready = []
        for provider in w.providers(opts):
            res, fn = _prepare_provider(w, provider, case, inputs, opts, progress)
            cr.providers.append(res)
            if fn is not None:
                ready.append((res, fn))
        _time_case(cr, ready, copy_fn, opts, progress)
        if case.device.type == "cuda" and cr.copy is not None and pair is not None:
            copy_cache[ck] = cr.copy
        del inputs, ready, copy_fn, pair
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
