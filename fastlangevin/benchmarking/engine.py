"""The benchmark engine: cases, providers, the check-before-timing loop, timing and raw results.

Per case: build the inputs once; for each provider ask whether it can run, then run the workload's
correctness check (a wrong output is REJECTED, never timed); time all that passed with the bandwidth
reference ``dst.copy_(src)``: on a CPU round-robin (a load change on a shared machine hits all alike),
on a GPU with ``triton.testing.do_bench`` (CUDA events, L2 flushed before each repetition).
"""

import datetime
import importlib.metadata
import itertools
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from ..cli_info import collect_info

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}
MODES = ("out", "inplace")
PEERS = ("torchebm", "posteriors")  # the peer libraries some workloads compare against
WORKLOADS: dict[str, "Workload"] = {}  # the registry: name -> workload, filled in order by the package's ``__init__``


class ProviderUnavailable(Exception):
    """A provider cannot run this case (missing library, wrong device/dtype); the message says why."""


class CheckFailed(Exception):
    """A provider's output is wrong; the message says which figure is off and by how much."""


@dataclass(frozen=True)
class Provider:
    """One implementation: ``make`` the workload's factory (signature in its module docstring); ``unavailable(case,
    opts)`` a reason to skip, or None; ``rebinds``: returns the new state even in place (``x = f(x)``)."""

    name: str
    label: str
    make: Callable[..., Any]
    kind: str = "baseline"  # "ours" | "baseline" | "peer"
    unavailable: Callable[["Case", "BenchOptions"], str | None] = lambda case, opts: None
    rebinds: bool = False


@dataclass(frozen=True)
class Case:
    """One measured configuration. ``params``: workload options as sorted ``(name, value)`` pairs
    (e.g. the score model); ``threads``: CPU threads while this case runs (None: leave as is)."""

    workload: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    mode: str
    device: torch.device
    params: tuple[tuple[str, Any], ...] = ()
    threads: int | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def param(self, name: str, default: Any = None) -> Any:
        return dict(self.params).get(name, default)

    @property
    def dtype_name(self) -> str:
        return next((k for k, v in DTYPES.items() if v == self.dtype), str(self.dtype))

    @property
    def size_label(self) -> str:
        n, sh = self.numel, self.shape  # 2^k for the size sweeps (rows of 1024), else the explicit shape
        sweep = len(sh) == 1 or sh[0] == 1 or sh[-1] == 1024
        return f"2^{n.bit_length() - 1}" if n & (n - 1) == 0 and sweep else "x".join(map(str, sh))

    @property
    def key(self) -> str:
        extra = "".join(f"/{k}={v}" for k, v in self.params) + (f"/{self.threads}t" if self.threads else "")
        return f"{self.workload}/{self.dtype_name}/{self.mode}/{self.size_label}{extra}"


@dataclass
class BenchOptions:
    device: torch.device = field(default_factory=lambda: torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    workloads: Sequence[str] = ("langevin_step",)
    dtypes: Sequence[str] = ("fp32", "bf16")
    modes: Sequence[str] = MODES
    sizes: Sequence[int] | None = None  # log2 element counts; None: the workload's default
    shapes: Sequence[tuple[int, ...]] | None = None  # explicit shapes (instead of sizes)
    params: tuple[tuple[str, Any], ...] = ()
    providers: Sequence[str] | None = None  # None: every provider of the workload
    eps: float = 0.5  # step size; large enough that bf16 rounding stays small next to the noise
    rep_ms: float = 100.0
    warmup_ms: float = 25.0
    min_reps: int = 5
    interpret: bool = False  # let the Triton provider run under the interpreter on CPU (tiny sizes)
    seed: int = 0
    quiet: bool = False
    extra_providers: dict[str, list[Provider]] = field(default_factory=dict)  # workload -> more (tests)

    def replace(self, **kw) -> "BenchOptions":
        return replace(self, **kw)


class Workload:
    """A subclass sets ``name``, ``description``, ``bytes_note``, ``provider_list`` and defines ``setup(case,
    opts)`` → inputs (shared by the providers), ``check(provider, case, inputs, opts)`` → figures (or raises
    :class:`CheckFailed`), ``timed(...)`` → ``(fn, extra)``: a no-argument callable to time, extra figures.
    Bandwidth workloads charge ``bytes_moved`` and time the copy of ``inputs["x"]`` beside; one with a
    ``unit`` (e.g. ``"steps/s"``) reports ``items`` per call per second instead."""

    name = ""
    description = ""
    bytes_note = ""
    default_sizes_cuda: tuple[int, ...] = tuple(range(16, 29, 2))  # log2 element counts
    default_sizes_cpu: tuple[int, ...] = (12, 16, 20)
    dtypes: tuple[str, ...] = ("fp32", "bf16", "fp16")
    modes: tuple[str, ...] = ("out",)
    provider_list: Sequence[Provider] = ()
    unit: str | None = None  # None: a bandwidth workload (GB/s)
    bytes_per_element = 3  # bytes_moved = this x numel x itemsize
    memory_per_element = 12  # rough peak bytes per element / itemsize (skip cases that do not fit)

    def shape_for(self, numel: int) -> tuple[int, ...]:
        row = min(1024, numel)
        return (numel // row, row)

    def providers(self, opts: BenchOptions) -> list[Provider]:
        """The selected providers (all by default), then the options' extra ones (tests)."""
        chosen = [p for p in self.provider_list if opts.providers is None or p.name in opts.providers]
        return chosen + list(opts.extra_providers.get(self.name, []))

    def cases(self, opts: BenchOptions) -> list[Case]:
        sizes = opts.sizes or (self.default_sizes_cuda if opts.device.type == "cuda" else self.default_sizes_cpu)
        shapes = opts.shapes or [self.shape_for(1 << int(e)) for e in sizes]
        params = tuple(sorted(opts.params))
        dtypes, modes = [d for d in opts.dtypes if d in self.dtypes], [m for m in opts.modes if m in self.modes]
        grid = itertools.product(dtypes, modes, shapes)
        return [Case(self.name, tuple(sh), DTYPES[d], m, opts.device, params) for d, m, sh in grid]

    def bytes_moved(self, case: Case) -> int | None:
        return None if self.unit else self.bytes_per_element * case.numel * case.dtype.itemsize

    def items(self, case: Case) -> float:  # per call, for ``unit`` workloads: e.g. the sampler steps of one run
        return 1


def get_workload(name: str) -> Workload:
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; choose from {sorted(WORKLOADS)}")
    return WORKLOADS[name]


@dataclass
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float
    reps: int
    method: str
    samples_ms: list[float] = field(default_factory=list)


def summarize_samples(samples: Sequence[float], method: str) -> Timing:
    """Median and 20/80 % quantiles (linear interpolation, numpy's default) and the raw times (to 10 ns)."""
    few = (list(samples) or [math.nan]) * 9  # statistics.quantiles needs two points
    q = statistics.quantiles(samples, n=10, method="inclusive") if len(samples) > 1 else few
    return Timing(q[4], q[1], q[7], len(samples), method, [round(v, 5) for v in samples])


def time_cpu_interleaved(fns: dict[str, Callable], warmup_ms, rep_ms, min_reps, max_reps=1000) -> dict[str, Timing]:
    """Round-robin, one call of each per round: at least ``min_reps`` rounds and until ``rep_ms`` per
    callable is spent (at most ``max_reps``), after warm-up rounds for ``warmup_ms`` each (at least two:
    in a VM the first touches of fresh memory are slow). What a call returns is freed outside its timing."""
    names, samples = list(fns), {n: [] for n in fns}
    for timed, budget, least in ((False, warmup_ms, 2), (True, rep_ms, min_reps)):
        deadline, rounds = time.perf_counter() + len(names) * budget / 1e3, 0
        while rounds < least or (time.perf_counter() < deadline and rounds < max_reps):
            for n in names:
                t0 = time.perf_counter()
                r = fns[n]()
                t1 = time.perf_counter()
                del r
                if timed:
                    samples[n].append((t1 - t0) * 1e3)
            rounds += 1
    return {n: summarize_samples(v, "time.perf_counter, median of interleaved rounds") for n, v in samples.items()}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class ProviderResult:
    name: str
    label: str
    kind: str
    status: str  # "ok" | "skipped" | "rejected" | "error"
    reason: str = ""
    check: dict[str, Any] = field(default_factory=dict)
    timing: Timing | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class CaseResult:
    case: Case
    bytes_moved: int | None
    items: float | None = None  # per call, for a throughput in ``unit`` (e.g. steps/s)
    unit: str = "GB/s"
    copy_bytes: int | None = None
    copy: Timing | None = None
    providers: list[ProviderResult] = field(default_factory=list)
    skipped: str = ""

    @property
    def copy_gbps(self) -> float | None:
        return self.copy_bytes / self.copy.median_ms / 1e6 if self.copy and self.copy_bytes else None

    def timed(self) -> list[ProviderResult]:
        return [p for p in self.providers if p.status == "ok" and p.timing is not None]

    def throughput(self, p: ProviderResult) -> float | None:
        """GB/s for bandwidth workloads, else ``items`` per second."""
        per_call = self.bytes_moved / 1e9 if self.bytes_moved is not None else self.items
        return None if p.timing is None or per_call is None else per_call / (p.timing.median_ms * 1e-3)

    def speedup(self, ours: str, other: str) -> float | None:
        """How many times faster ``ours`` ran than ``other`` (median times), or None."""
        t = {p.name: p.timing.median_ms for p in self.timed()}
        return t[other] / t[ours] if ours in t and other in t and t[ours] > 0 else None

    def to_dict(self) -> dict[str, Any]:
        c, cg, bw = self.case, self.copy_gbps, self.bytes_moved is not None
        provs = []
        for p in self.providers:
            tp, row = self.throughput(p), asdict(p)
            row["timing_ms"] = row.pop("timing")
            pct = 100 * tp / cg if tp is not None and cg and bw else None
            provs.append(row | {"throughput": tp, "pct_of_copy": pct, "gbps": tp if bw else None})
        names = [p.name for p in self.timed()]
        d = {"key": c.key, "workload": c.workload, "dtype": c.dtype_name, "mode": c.mode, "shape": list(c.shape)}
        d |= {"numel": c.numel, "params": dict(c.params), "threads": c.threads or torch.get_num_threads()}
        d |= {"bytes_moved": self.bytes_moved, "items_per_call": self.items, "throughput_unit": self.unit}
        copy = self.copy and {"bytes": self.copy_bytes, "timing_ms": asdict(self.copy), "gbps": cg}
        speedups = {a: {b: self.speedup(a, b) for b in names if b != a} for a in names}
        return d | {"skipped": self.skipped, "copy": copy, "providers": provs, "speedups": speedups}


@dataclass
class BenchResult:
    meta: dict[str, Any]
    cases: list[CaseResult]
    bytes_notes: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, "bytes_notes": self.bytes_notes, "cases": [c.to_dict() for c in self.cases]}


def environment(opts: BenchOptions) -> dict[str, Any]:
    """``fastlangevin info`` (versions, platform, environment, each device's backend) plus the device, date, CPU,
    argv, options and the peers' installed versions (None: not installed): the header of every raw result."""
    dev, cpu = opts.device, platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), cpu)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "device": str(dev)}
    meta |= {"device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu} | collect_info()
    peers = {m: next((d.version for d in importlib.metadata.distributions(name=m)), None) for m in PEERS}
    meta |= {"cuda": torch.version.cuda, "peers": peers, "argv": list(sys.argv)}
    meta |= {"cpu_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    meta["options"] = {k: v for k, v in asdict(opts).items() if k not in ("device", "extra_providers")}
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        meta["gpu"] = {"total_memory": props.total_memory, "capability": f"{props.major}.{props.minor}"}
    return meta


def first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def run_case(w: Workload, case: Case, opts: BenchOptions, say) -> CaseResult:
    """Availability and the correctness check of every provider, then the timing of those that passed, each
    after one untimed first call (its time, compilation included, is ``first_call_ms``; ``extra`` read after it)."""
    cr = CaseResult(case, w.bytes_moved(case), *((w.items(case), w.unit) if w.unit else (None, "GB/s")))
    if case.device.type == "cuda":
        free = torch.cuda.mem_get_info(case.device)[0]
        need = w.memory_per_element * case.numel * case.dtype.itemsize
        if need > 0.9 * free:
            cr.skipped = f"needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"
            return cr
    inputs, fns = w.setup(case, opts), {}
    if cr.bytes_moved is not None:  # the 100% reference: a copy of the state, timed with the providers
        src, dst = inputs["x"], torch.empty_like(inputs["x"])
        cr.copy_bytes, fns["__copy__"] = src.nbytes + dst.nbytes, lambda: dst.copy_(src)
    for p in w.providers(opts):
        res = ProviderResult(p.name, p.label, p.kind, "ok")
        cr.providers.append(res)
        try:
            if reason := p.unavailable(case, opts):
                raise ProviderUnavailable(reason)
            res.check = w.check(p, case, inputs, opts)
            synchronize(case.device)
            fn, extra = w.timed(p, case, inputs, opts)
            t0 = time.perf_counter()
            fn()
            synchronize(case.device)
            rebinds = {"rebinds": True} if p.rebinds and case.mode == "inplace" else {}
            res.extra = {**extra, **rebinds, "first_call_ms": (time.perf_counter() - t0) * 1e3}
            fns[p.name] = fn
        except ProviderUnavailable as exc:
            res.status, res.reason = "skipped", str(exc)
        except CheckFailed as exc:
            res.status, res.reason = "rejected", str(exc)
        except Exception as exc:  # a provider crashing must not end the run
            res.status, res.reason = "error", first_line(exc)
        verdict = "passed the check" if res.status == "ok" else f"{res.status.upper()}: {res.reason}"
        say(f"{case.key:34s} {p.name:16s} {verdict}")
    try:
        if case.device.type == "cuda":
            from triton.testing import do_bench

            how = "triton.testing.do_bench (CUDA events, L2 flushed)"
            kw = dict(warmup=opts.warmup_ms, rep=opts.rep_ms, return_mode="all")
            timings = {n: summarize_samples([float(t) for t in do_bench(f, **kw)], how) for n, f in fns.items()}
        else:
            timings = time_cpu_interleaved(fns, opts.warmup_ms, opts.rep_ms, opts.min_reps)
    except Exception as exc:
        for res in cr.providers:
            if res.status == "ok":
                res.status, res.reason = "error", "while timing: " + first_line(exc)
        return cr
    cr.copy = timings.pop("__copy__", None)
    for res in cr.providers:
        res.timing = timings.get(res.name)
        if res.timing is not None:
            say(f"{case.key:34s} {res.name:16s} {res.timing.median_ms:10.4f} ms {cr.throughput(res):9.2f} {cr.unit}")
    return cr


def run(opts: BenchOptions, cases: Sequence[Case] | None = None) -> BenchResult:
    """Run ``cases`` (default: every case of the selected workloads); progress on stderr."""
    plan = list(cases) if cases is not None else [c for n in opts.workloads for c in get_workload(n).cases(opts)]
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        if not opts.quiet:
            print(f"{time.perf_counter() - t0:7.1f}s {msg}", file=sys.stderr, flush=True)

    meta, results = environment(opts), []
    say(f"fastlangevin bench on {meta['device']} ({meta['device_name']}): {len(plan)} cases")
    for case in plan:
        threads = torch.get_num_threads()
        torch.set_num_threads(case.threads or threads)
        try:
            results.append(run_case(get_workload(case.workload), case, opts, say))
        finally:
            torch.set_num_threads(threads)
        if case.device.type == "cuda":
            torch.cuda.empty_cache()
    return BenchResult(meta, results, {c.workload: get_workload(c.workload).bytes_note for c in plan})
