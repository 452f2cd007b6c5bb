"""What the benchmark runs: workloads, the providers that implement them, and run options.

A :class:`Workload` (the Langevin step, the DSM loss, ...) owns its inputs, its correctness
check and the number of bytes its op must move; a :class:`Provider` is one implementation of it
(fastlangevin's Triton kernel, the PyTorch fallback, the textbook eager expression,
``torch.compile``, a peer library). The CLI (``fastlangevin bench``) and the pytest-benchmark
files under ``bench/`` both read the same registry (:data:`WORKLOADS`), so a number in a table
and a number in a pytest-benchmark report come from the same code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

DTYPES: Dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp64": torch.float64,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
MODES = ("out", "inplace")  # out-of-place / in-place


class ProviderUnavailable(Exception):
    """A provider cannot run this case (missing library, wrong device/dtype); the message says why."""


@dataclass(frozen=True)
class Provider:
    """One implementation of a workload.

    ``make`` is the workload-specific factory (its signature is documented by the workload).
    ``unavailable(case, opts)`` returns a reason string when the provider cannot run ``case``
    (the runner prints it and skips), or None.
    """

    name: str  # command-line key, e.g. "triton"
    label: str  # human-readable, e.g. "fastlangevin Triton"
    make: Callable[..., Any]
    kind: str = "baseline"  # "ours" | "baseline" | "peer"
    unavailable: Callable[["Case", "BenchOptions"], Optional[str]] = lambda case, opts: None
    default: bool = True  # part of the default provider set
    #: In an in-place case, the provider returns the new state as a new tensor (``x = f(x)``, as a
    #: user's loop does with an out-of-place expression) instead of writing into ``x``.
    rebinds: bool = False


@dataclass(frozen=True)
class Case:
    """One measured configuration: a workload at one size, dtype and mode on one device."""

    workload: str
    numel: int  # elements of the state tensor (the size axis of the plots)
    dtype: torch.dtype
    mode: str
    device: torch.device

    @property
    def dtype_name(self) -> str:
        return DTYPE_NAMES.get(self.dtype, str(self.dtype))

    @property
    def size_label(self) -> str:
        n = self.numel
        return f"2^{n.bit_length() - 1}" if n > 0 and n & (n - 1) == 0 else str(n)

    @property
    def key(self) -> str:
        return f"{self.workload}/{self.dtype_name}/{self.mode}/{self.size_label}"


@dataclass
class BenchOptions:
    """Everything a run needs besides the registry (the CLI fills it from its flags)."""

    device: torch.device = field(default_factory=lambda: torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    workloads: Sequence[str] = ("langevin_step",)
    dtypes: Sequence[str] = ("fp32", "bf16")
    modes: Sequence[str] = MODES
    sizes: Optional[Sequence[int]] = None  # log2 of the element count; None: the device default
    providers: Optional[Sequence[str]] = None  # None: every default provider
    eps: float = 0.5  # step size; large enough that bf16 rounding stays small next to the noise
    rep_ms: float = 100.0  # timed budget per measurement
    warmup_ms: float = 25.0
    min_reps: int = 5
    interpret: bool = False  # let the Triton provider run under the interpreter on CPU (tiny sizes)
    seed: int = 0
    quiet: bool = False
    extra_providers: Dict[str, List[Provider]] = field(default_factory=dict)  # workload -> more providers (tests)

    def replace(self, **kw) -> "BenchOptions":
        return dataclasses.replace(self, **kw)

    @classmethod
    def from_env(cls, environ=None) -> "BenchOptions":
        """Options from ``FASTLANGEVIN_BENCH_*`` variables (used by the pytest-benchmark files):
        ``DEVICE``, ``WORKLOADS``, ``DTYPES``, ``MODES``, ``SIZES`` (log2, "16,20" or "16:28:2"),
        ``PROVIDERS`` (comma-separated)."""
        import os

        from .cli import parse_sizes

        env = os.environ if environ is None else environ

        def lst(name):
            v = env.get(f"FASTLANGEVIN_BENCH_{name}")
            return None if not v else [t.strip() for t in v.split(",") if t.strip()]

        opts = cls()
        if env.get("FASTLANGEVIN_BENCH_DEVICE"):
            opts.device = torch.device(env["FASTLANGEVIN_BENCH_DEVICE"])
        opts.workloads = lst("WORKLOADS") or list(opts.workloads)
        opts.dtypes = lst("DTYPES") or list(opts.dtypes)
        opts.modes = lst("MODES") or list(opts.modes)
        opts.sizes = parse_sizes(env.get("FASTLANGEVIN_BENCH_SIZES")) if env.get("FASTLANGEVIN_BENCH_SIZES") else None
        opts.providers = lst("PROVIDERS")
        if opts.workloads == ["all"]:
            opts.workloads = list(all_workloads())
        return opts


class Workload:
    """Base class. Subclasses define the inputs, the check, the timed call and the byte count.

    Methods the runner calls, in order, for each case:

    * ``setup(case, opts)`` → inputs (anything; built once per case, shared by providers);
    * ``copy_baseline(case, inputs)`` → ``(src, dst)`` tensors whose ``dst.copy_(src)`` is the
      bandwidth reference of this case (or None);
    * ``check(provider, case, inputs, opts)`` → dict of check figures; raises
      :class:`~fastlangevin.benchmarking.checks.CheckFailed` when the provider is wrong;
    * ``timed(provider, case, inputs, opts)`` → ``(fn, extra)``: a no-argument callable to time
      (warm-up such as compilation already done) and a dict of extra figures (compile time);
    * ``bytes_moved(case)`` → bytes the op must read + write at minimum (for effective GB/s), or
      None with ``items(case)`` → ``(items per call, unit)`` (e.g. sampler steps per second).
    """

    name: str = ""
    description: str = ""
    bytes_note: str = ""  # how bytes_moved counts, printed under the table
    default_sizes_cuda: Tuple[int, ...] = ()
    default_sizes_cpu: Tuple[int, ...] = ()
    dtypes: Tuple[str, ...] = ("fp32", "bf16")
    modes: Tuple[str, ...] = ("out",)

    def __init__(self) -> None:
        self._providers: Dict[str, Provider] = {}

    # -- providers -----------------------------------------------------------------------
    def add_provider(self, provider: Provider) -> Provider:
        if provider.name in self._providers:
            raise ValueError(f"workload {self.name!r} already has a provider named {provider.name!r}")
        self._providers[provider.name] = provider
        return provider

    def providers(self, opts: Optional[BenchOptions] = None) -> List[Provider]:
        """The providers selected by ``opts.providers`` (all defaults when None), in registry order,
        followed by ``opts.extra_providers`` for this workload."""
        extra = list((opts.extra_providers or {}).get(self.name, [])) if opts is not None else []
        wanted = None if opts is None else opts.providers
        if wanted is None:
            chosen = [p for p in self._providers.values() if p.default]
        else:
            chosen = [p for p in self._providers.values() if p.name in wanted]
        return chosen + extra

    @property
    def provider_names(self) -> List[str]:
        return list(self._providers)

    # -- cases ---------------------------------------------------------------------------
    def memory_per_element(self, dtype: torch.dtype) -> int:
        """Rough peak bytes per state element (inputs, outputs, provider temporaries)."""
        return 12 * torch.empty((), dtype=dtype).element_size()

    def cases(self, opts: BenchOptions) -> List[Case]:
        dev = opts.device
        sizes = (
            opts.sizes
            if opts.sizes is not None
            else (self.default_sizes_cuda if dev.type == "cuda" else self.default_sizes_cpu)
        )
        out = []
        for dname in opts.dtypes:
            if dname not in self.dtypes:
                continue
            for mode in opts.modes:
                if mode not in self.modes:
                    continue
                for e in sizes:
                    out.append(Case(self.name, 1 << int(e), DTYPES[dname], mode, dev))
        return out

    def setup(self, case: Case, opts: BenchOptions) -> Any:
        raise NotImplementedError

    def copy_baseline(self, case: Case, inputs: Any) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        return None

    def check(self, provider: Provider, case: Case, inputs: Any, opts: BenchOptions) -> Dict[str, Any]:
        raise NotImplementedError

    def timed(
        self, provider: Provider, case: Case, inputs: Any, opts: BenchOptions
    ) -> Tuple[Callable[[], Any], Dict[str, Any]]:
        raise NotImplementedError

    def bytes_moved(self, case: Case) -> Optional[int]:
        """Bytes the op must move; None for workloads measured in ``items`` per second instead."""
        raise NotImplementedError

    def items(self, case: Case) -> Optional[Tuple[float, str]]:
        """``(items per call, unit)`` for workloads whose throughput is not a bandwidth, e.g.
        ``(50, "steps/s")``; None for bandwidth workloads."""
        return None


WORKLOADS: Dict[str, Workload] = {}


def register_workload(workload: Workload) -> Workload:
    WORKLOADS[workload.name] = workload
    return workload


def get_workload(name: str) -> Workload:
    from . import workloads  # noqa: F401  (registers the built-in workloads)

    try:
        return WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; choose from {sorted(WORKLOADS)}") from None


def all_workloads() -> Dict[str, Workload]:
    from . import workloads  # noqa: F401

    return dict(WORKLOADS)
