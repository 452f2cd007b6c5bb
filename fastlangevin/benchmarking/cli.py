"""``fastlangevin bench``: providers side by side, checked, timed, tabulated (and JSON / plot).

Examples::

    fastlangevin bench                                  # GPU: step, fp32+bf16, 2^16..2^28
    fastlangevin bench --device cpu --sizes 24 --dtypes fp32 --modes out --providers torch,eager
    fastlangevin bench --json out.json --plot out.png
    fastlangevin bench --list                            # workloads and providers
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional, Sequence

import torch

OURS = ("triton", "torch")


def parse_sizes(text: Optional[str]) -> Optional[List[int]]:
    """``"16,20,24"`` or ``"16:28"`` (every exponent) or ``"16:28:2"``: log2 of element counts."""
    if text is None:
        return None
    out: List[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if ":" in part:
            bits = [int(b) for b in part.split(":")]
            if len(bits) not in (2, 3):
                raise ValueError(f"--sizes range {part!r}: use LO:HI or LO:HI:STEP")
            lo, hi = bits[0], bits[1]
            step = bits[2] if len(bits) == 3 else 1
            out.extend(range(lo, hi + 1, step))
        else:
            out.append(int(part))
    for e in out:
        if not 0 <= e <= 34:
            raise ValueError(f"--sizes: exponent {e} out of range 0..34 (sizes are log2 of the element count)")
    return out


def _split(text: Optional[str]) -> Optional[List[str]]:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _enable_interpreter() -> Optional[str]:
    """Switch the Triton interpreter on, which must happen before our kernels are imported."""
    if "fastlangevin.kernels.langevin_step" in sys.modules:
        from .. import _backend

        return None if _backend.kernels_interpreted() else "kernels were already built for the GPU in this process"
    os.environ["TRITON_INTERPRET"] = "1"
    return None


def list_registry() -> str:
    from .registry import all_workloads

    lines = []
    for name, w in all_workloads().items():
        lines.append(f"{name}: {w.description}")
        lines.append(f"  bytes: {w.bytes_note}")
        lines.append(f"  dtypes {','.join(w.dtypes)}; modes {','.join(w.modes)}")
        for p in w.providers():
            lines.append(f"  - {p.name:18s} [{p.kind}] {p.label}")
        hidden = [p for p in w._providers.values() if not p.default]
        for p in hidden:
            lines.append(f"  - {p.name:18s} [{p.kind}, not run by default] {p.label}")
    return "\n".join(lines)


def options_from_args(args):
    from .registry import DTYPES, MODES, BenchOptions, all_workloads

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    workloads = _split(args.workloads) or ["langevin_step"]
    known = all_workloads()
    if workloads == ["all"]:
        workloads = list(known)
    for w in workloads:
        if w not in known:
            raise ValueError(f"--workloads: unknown workload {w!r}; choose from {sorted(known)}")
    dtypes = _split(args.dtypes) or ["fp32", "bf16"]
    for d in dtypes:
        if d not in DTYPES:
            raise ValueError(f"--dtypes: unknown dtype {d!r}; choose from {sorted(DTYPES)}")
    modes = _split(args.modes) or list(MODES)
    for m in modes:
        if m not in MODES:
            raise ValueError(f"--modes: unknown mode {m!r}; choose from {list(MODES)}")
    providers = _split(args.providers)
    if providers is not None:
        names = {p for w in workloads for p in known[w].provider_names}
        bad = [p for p in providers if p not in names]
        if bad:
            raise ValueError(f"--providers: unknown {bad}; choose from {sorted(names)}")
    return BenchOptions(
        device=device,
        workloads=workloads,
        dtypes=dtypes,
        modes=modes,
        sizes=parse_sizes(args.sizes),
        providers=providers,
        eps=args.eps,
        rep_ms=args.rep_ms,
        warmup_ms=args.warmup_ms,
        min_reps=args.min_reps,
        interpret=args.interpret,
        seed=args.seed,
        quiet=args.quiet,
    )


def _run(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.interpret and args.device == "cpu":
        problem = _enable_interpreter()
        if problem:
            print(f"--interpret: {problem}; the Triton provider will be skipped", file=sys.stderr)
    if args.list:
        print(list_registry())
        return 0
    try:
        opts = options_from_args(args)
    except ValueError as exc:
        print(f"fastlangevin bench: error: {exc}", file=sys.stderr)
        return 2
    from . import report
    from .runner import run

    result = run(opts)
    print(report.table(result))
    others = [p for w in opts.workloads for p in _provider_names(w) if p not in OURS]
    lines = report.summary_lines(result, [(o, x) for o in OURS for x in others] + [("triton", "torch")])
    if lines:
        print("\nspeed-ups of fastlangevin (median times, same run):")
        for line in lines:
            print(f"  {line}")
    if args.json:
        report.write_json(result, args.json)
        print(f"\nwrote {args.json}")
    if args.plot:
        report.write_plot(result, args.plot)
        print(f"wrote {args.plot}")
    bad = [
        (cr.case.key, p.name, p.status)
        for cr in result.cases
        for p in cr.providers
        if p.kind == "ours" and p.status in ("rejected", "error")
    ]
    if bad:
        print(f"\nfastlangevin provider(s) failed: {bad}", file=sys.stderr)
        return 1
    return 0


def _provider_names(workload: str) -> Sequence[str]:
    from .registry import get_workload

    return get_workload(workload).provider_names


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmark fastlangevin against eager, torch.compile and peer libraries")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--workloads", default=None, help="comma-separated (default langevin_step; 'all' for every one); see --list"
    )
    p.add_argument("--dtypes", default=None, help="comma-separated: fp32,bf16 (default) ,fp16")
    p.add_argument("--modes", default=None, help="comma-separated: out,inplace (default both)")
    p.add_argument(
        "--sizes",
        default=None,
        help="log2 element counts: '16,20,24', '16:28' or '16:28:2' (default: GPU 16:28:2, CPU 12,16,20)",
    )
    p.add_argument("--providers", default=None, help="comma-separated subset (default: all installed); see --list")
    p.add_argument(
        "--eps",
        type=float,
        default=0.5,
        help="step size (timing does not depend on it; large keeps bf16 rounding small next to the noise in the checks)",
    )
    p.add_argument(
        "--rep-ms", type=float, default=None, help="time budget per measurement (default GPU 100 ms, CPU 500 ms)"
    )
    p.add_argument("--warmup-ms", type=float, default=25.0)
    p.add_argument("--min-reps", type=int, default=5, help="CPU: at least this many timed calls")
    p.add_argument(
        "--interpret",
        action="store_true",
        help="CPU: run the Triton provider under Triton's interpreter (tiny sizes, for testing)",
    )
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="write every raw number, versions, device and date as JSON")
    p.add_argument("--plot", metavar="PATH", help="write throughput against size per provider (matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--list", action="store_true", help="list workloads and providers, then exit")
    p.set_defaults(func=_run_with_defaults)


def _run_with_defaults(args) -> int:
    if args.rep_ms is None:
        args.rep_ms = 100.0 if args.device.startswith("cuda") else 500.0
    return _run(args)
