"""``fastlangevin bench``: providers side by side, checked, timed, tabulated (and JSON / plot); the
README's "Benchmarks and profiling" section lists example command lines."""

import os
import sys

import torch

from .. import _backend
from . import dropin, report
from .engine import DTYPES, MODES, WORKLOADS, BenchOptions, parse_shapes, parse_sizes, run

OURS = ("triton", "torch")


def _split(text):
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _enable_interpreter():
    """Switch the Triton interpreter on, which must happen before our kernels are imported."""
    if "fastlangevin.kernels.langevin_step" in sys.modules and not _backend.kernels_interpreted():
        return "kernels were already built for the GPU in this process"
    os.environ["TRITON_INTERPRET"] = "1"
    return None


def list_registry() -> str:
    lines = []
    for name, w in WORKLOADS.items():
        lines += [f"{name}: {w.description}", f"  bytes: {w.bytes_note}"]
        lines += [f"  dtypes {','.join(w.dtypes)}; modes {','.join(w.modes)}"]
        lines += [f"  - {p.name:18s} [{p.kind}] {p.label}" for p in w.provider_list]
    return "\n".join(lines)


def cuda_device(text: str) -> torch.device:
    """``--device`` as a device; a CUDA one without CUDA is refused (ValueError) before any work."""
    device = torch.device(text)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return device


def options_from_args(args) -> BenchOptions:
    device = cuda_device(args.device)
    workloads = _split(args.workloads) or ["langevin_step"]
    workloads = list(WORKLOADS) if workloads == ["all"] else workloads
    dtypes, modes = _split(args.dtypes) or ["fp32", "bf16"], _split(args.modes) or list(MODES)
    given = {"workloads": (workloads, WORKLOADS), "dtypes": (dtypes, DTYPES), "modes": (modes, MODES)}
    for what, (got, allowed) in given.items():
        if bad := [g for g in got if g not in allowed]:
            raise ValueError(f"--{what}: unknown {bad[0]!r}; choose from {sorted(allowed)}")
    names = {p.name for w in workloads for p in WORKLOADS[w].provider_list}
    if (providers := _split(args.providers)) and (bad := [p for p in providers if p not in names]):
        raise ValueError(f"--providers: unknown {bad}; choose from {sorted(names)}")
    params = []
    for item in args.param or []:
        k, sep, v = item.partition("=")
        if not sep:
            raise ValueError(f"--param {item!r}: use NAME=VALUE")
        params.append((k.strip(), int(v) if v.strip().isdigit() else v.strip()))
    return BenchOptions(
        device=device, workloads=workloads, dtypes=dtypes, modes=modes, sizes=parse_sizes(args.sizes),
        shapes=parse_shapes(args.shapes), params=tuple(params), providers=providers, eps=args.eps,
        rep_ms=args.rep_ms or (100.0 if device.type == "cuda" else 500.0), warmup_ms=args.warmup_ms,
        min_reps=args.min_reps, interpret=args.interpret, seed=args.seed, quiet=args.quiet,
    )  # fmt: skip


def _run(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.interpret and args.device == "cpu" and (problem := _enable_interpreter()):
        print(f"--interpret: {problem}; the Triton provider will be skipped", file=sys.stderr)
    if args.list:
        print(list_registry())
        return 0
    try:
        opts = options_from_args(args)
    except ValueError as exc:
        print(f"fastlangevin bench: error: {exc}", file=sys.stderr)
        return 2
    if args.suite == "dropin":
        return dropin.main(opts, args.json, args.out_dir, dry_run=args.dry_run)
    result = run(opts)
    print(report.table(result))
    others = {p.name for w in opts.workloads for p in WORKLOADS[w].provider_list} - set(OURS)
    lines = report.summary_lines(result, [(o, x) for o in OURS for x in sorted(others)] + [("triton", "torch")])
    if lines:
        print("\nspeed-ups of fastlangevin (median times, same run):\n  " + "\n  ".join(lines))
    for path, write in ((args.json, report.write_json), (args.plot, report.write_plot)):
        if path:
            write(result, path)
            print(f"wrote {path}")
    return report.failed_ours(result)


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmark fastlangevin against eager, torch.compile and peer libraries")
    add = p.add_argument
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu",
        help="device to run on: cpu, cuda or cuda:N (default: cuda when available, else cpu)")  # fmt: skip
    add("--workloads", help="comma-separated (default langevin_step; 'all' for every one); see --list")
    add("--suite", choices=["dropin"], help="dropin: issue 11's drop-in comparisons with their targets (met/missed)")
    add("--dtypes", help="comma-separated: fp32,bf16 (default), fp16")
    add("--modes", help="comma-separated: out,inplace (default both)")
    add("--sizes", help="log2 element counts: '16,20,24', '16:28' or '16:28:2' (default: GPU 16:28:2, CPU 12,16,20)")
    add("--shapes", help="explicit state shapes instead of --sizes, e.g. 256x2,128x3x64x64")
    add("--param", action="append", metavar="NAME=VALUE", help="workload option, e.g. score=linear, sampler=langevin")
    add("--providers", help="comma-separated subset (default: all installed); see --list")
    add("--eps", type=float, default=0.5, help="step size (large keeps bf16 rounding small next to the noise)")
    add("--rep-ms", type=float, default=None, help="time budget per measurement (default GPU 100 ms, CPU 500 ms)")
    add("--warmup-ms", type=float, default=25.0, help="warm-up budget per measurement")
    add("--min-reps", type=int, default=5, help="CPU: at least this many timed rounds")
    add("--interpret", action="store_true", help="CPU: run the Triton provider under Triton's interpreter (tiny sizes)")
    add("--threads", type=int, default=0, help="CPU threads for torch (default: torch's)")
    add("--seed", type=int, default=0, help="seed of the inputs")
    add("--json", metavar="PATH", help="write every raw number, versions, device and date as JSON")
    add("--out-dir", default="bench/results", help="--suite: where its JSON goes when --json is not given")
    add("--quick", "--dry-run", dest="dry_run", action="store_true", help="--suite: tiny shapes (tests the suite)")
    add("--plot", metavar="PATH", help="write throughput against size per provider, log-log axes (matplotlib)")
    add("--quiet", action="store_true", help="no progress lines")
    add("--list", action="store_true", help="list workloads and providers, then exit")
    p.set_defaults(func=_run)
