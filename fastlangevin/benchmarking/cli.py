"""``fastlangevin bench``: providers side by side, checked, timed, tabulated (and JSON / plot); the
README's "Benchmarks and profiling" section lists example command lines.

``--suite dropin``: fastlangevin dropped into a user's loop vs the plain PyTorch it replaces: each
:data:`SUITE` entry is one engine case at a given thread count with issue 11's speed-up target beside
it (met / missed), then the step in place at 2^8 … 2^24; raw results (versions, date, timings) to JSON.
"""

import datetime
import os
import sys

import torch

from .. import _backend
from . import report
from .engine import DTYPES, MODES, WORKLOADS, BenchOptions, BenchResult, Case, environment, run

OURS = ("triton", "torch")
STEP_BASES = ("eager", "eager_inplace")
STEP_GOALS = (("eager", 1.0), ("eager_inplace", 0.75))
LANGEVIN = (("sampler", "langevin"), ("score", "neg_x"), ("steps", 300))
ANNEALED = (("sampler", "annealed"), ("score", "neg_x"), ("steps", 300))
#: (title, workload, shape, mode, threads, params, ((baseline, target speed-up), ...))
SUITE: list[tuple] = [
    ("step 256x2 in place", "langevin_step", (256, 2), "inplace", 1, (), STEP_GOALS),
    ("step 4096x2 in place", "langevin_step", (4096, 2), "inplace", 1, (), STEP_GOALS),
    ("step 2^20 in place", "langevin_step", (1024, 1024), "inplace", 1, (), (("eager_inplace", 1.0),)),
    ("step 2^24 in place, 2 threads", "langevin_step", (16384, 1024), "inplace", 2, (), (("eager", 2.0),)),
    ("DSM fwd+bwd (256, 2), linear score", "dsm", (256, 2), "out", 1, (("score", "linear"),), (("naive", 1.0),)),
    ("DSM fwd+bwd (128, 3x64x64)", "dsm", (128, 3, 64, 64), "out", 1, (), (("naive", 1.0),)),
    ("langevin 256x2, 300 steps, score -x", "sampler", (256, 2), "out", 1, LANGEVIN, (("naive", 1.0),)),
    ("annealed_langevin 256x2, 300 steps, score -x", "sampler", (256, 2), "out", 1, ANNEALED, (("naive", 1.0),)),
]
SWEEP = range(8, 25, 2)


def _split(text: str | None) -> list[str] | None:
    """A comma-separated option's items; None when not given or nothing is listed."""
    return ([t.strip() for t in text.split(",") if t.strip()] if text else None) or None


def parse_sizes(text: str | None) -> list[int] | None:
    """``"16,20,24"``, ``"16:28"`` (every exponent) or ``"16:28:2"``: log2 of element counts."""
    out: list[int] = []
    for part in _split(text) or []:
        bits = [int(b) for b in part.split(":")]
        if len(bits) > 3:
            raise ValueError(f"--sizes range {part!r}: use LO:HI or LO:HI:STEP")
        out.extend(range(bits[0], bits[1] + 1, *bits[2:]) if len(bits) > 1 else bits)
    if bad := [e for e in out if not 0 <= e <= 34]:
        raise ValueError(f"--sizes: exponent {bad[0]} out of range 0..34 (sizes are log2 of the element count)")
    return out or None


def parse_shapes(text: str | None) -> list[tuple[int, ...]] | None:
    """``"256x2,4096x2,128x3x64x64"``: explicit state shapes (batch first)."""
    try:
        return [tuple(int(d) for d in p.split("x")) for p in _split(text) or []] or None
    except ValueError:
        raise ValueError(f"--shapes {text!r}: use e.g. 256x2,128x3x64x64") from None


def add_machine_options(add) -> None:
    """``--device``, ``--threads`` and ``--seed``: what ``bench`` and ``profile`` both take (see :func:`machine`)."""
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu",
        help="device to run on: cpu, cuda or cuda:N (default: cuda when available, else cpu)")  # fmt: skip
    add("--threads", type=int, default=0, help="CPU threads for torch (default: torch's)")
    add("--seed", type=int, default=0, help="seed of the inputs")


def machine(args) -> torch.device:
    """``--device`` as a device (no CUDA: ValueError, before any work), with ``--threads`` applied."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    return device


def options_from_args(args) -> BenchOptions:
    device = machine(args)
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
    items = [item.partition("=") for item in args.param or []]
    if bad := [k for k, sep, _ in items if not sep]:  # no "=": partition left the whole item in k
        raise ValueError(f"--param {bad[0]!r}: use NAME=VALUE")
    params = [(k.strip(), int(v) if v.strip().isdigit() else v.strip()) for k, _, v in items]
    return BenchOptions(
        device=device, workloads=workloads, dtypes=dtypes, modes=modes, sizes=parse_sizes(args.sizes),
        shapes=parse_shapes(args.shapes), params=tuple(params), providers=providers, eps=args.eps,
        rep_ms=args.rep_ms or (100.0 if device.type == "cuda" else 500.0), warmup_ms=args.warmup_ms,
        min_reps=args.min_reps, interpret=args.interpret, seed=args.seed, quiet=args.quiet,
    )  # fmt: skip


def run_dropin(opts: BenchOptions, json_path=None, dry_run=False) -> int:
    """Every :data:`SUITE` entry, then the step's :data:`SWEEP` (``dry_run``: first dims / 64, sizes 2^8
    and 2^10); tables on stdout, the raw results to ``json_path`` (default: bench/results/dropin-DEVICE-DATE)."""
    ours, scale = "triton" if opts.device.type == "cuda" else "torch", 1 / 64 if dry_run else 1.0
    meta, results, targets = environment(opts), [], []  # meta (date, versions) as the suite starts
    for title, wl, shape, mode, threads, params, goals in SUITE:
        shape = (max(1, int(shape[0] * scale)),) + tuple(shape[1:])
        case = Case(wl, shape, torch.float32, mode, opts.device, tuple(sorted(params)), threads)
        (cr,) = run(opts.replace(providers=(ours, *(b for b, _ in goals))), cases=[case]).cases
        results.append(cr)
        for base, want in goals:
            got = cr.speedup(ours, base)
            met = None if got is None else got >= want
            targets.append(dict(work=title, key=case.key, ours=ours, baseline=base, speedup=got, target=want, met=met))
    sweep = [Case("langevin_step", (1 << e,), torch.float32, "inplace", opts.device, (), 1) for e in SWEEP]
    results += run(opts.replace(providers=(ours, *STEP_BASES)), cases=sweep[:2] if dry_run else sweep).cases
    result = BenchResult(meta, results, {})
    lines = ["targets (issue 11; speed-up = baseline median / fastlangevin median):"]  # markdown, as the README quotes
    lines += ["| work | vs | speed-up | target | |", "|---|---|---:|---:|---|"]
    for t in targets:
        got = "n/a" if t["speedup"] is None else f"{t['speedup']:.2f}x"
        verdict = "not run" if t["met"] is None else ("met" if t["met"] else "MISSED")
        lines.append(f"| {t['work']} | {t['baseline']} | {got} | >= {t['target']:.2f}x | {verdict} |")
    lines += ["", "step in place across sizes (1 thread):"]
    lines += ["| elements | " + " | ".join(f"{ours} vs {b}" for b in STEP_BASES) + f" | {ours} GB/s |"]
    lines += ["|---:|---:|---:|---:|"]
    for cr in result.cases[len(SUITE) :]:  # the sweep
        cells = " | ".join("n/a" if v is None else f"{v:.2f}x" for v in (cr.speedup(ours, b) for b in STEP_BASES))
        gb = next((f"{cr.throughput(p):.2f}" for p in cr.timed() if p.name == ours), "n/a")
        lines.append(f"| {cr.case.size_label} | {cells} | {gb} |")
    print(report.table(result) + "\n\n" + "\n".join(lines))
    if json_path is None:
        os.makedirs("bench/results", exist_ok=True)
        day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M")
        json_path = f"bench/results/dropin-{opts.device.type}-{day}.json"
    report.write_json(result, json_path, targets=targets, dry_run=dry_run)
    print(f"\nwrote {json_path}")
    return report.failed_ours(result, bad=("rejected", "error", "skipped"))  # every target needs ours timed


def _run(args) -> int:
    if args.interpret and args.device == "cpu":  # the interpreter must be on before our kernels are imported
        if "fastlangevin.kernels.langevin_step" not in sys.modules or _backend.kernels_interpreted():
            os.environ["TRITON_INTERPRET"] = "1"
        else:
            why = "kernels were already built for the GPU in this process"
            print(f"--interpret: {why}; the Triton provider will be skipped", file=sys.stderr)
    if args.list:
        for name, w in WORKLOADS.items():
            print(f"{name}: {w.description}\n  bytes: {w.bytes_note}")
            print(f"  dtypes {','.join(w.dtypes)}; modes {','.join(w.modes)}")
            print("\n".join(f"  - {p.name:18s} [{p.kind}] {p.label}" for p in w.provider_list))
        return 0
    try:
        opts = options_from_args(args)
    except ValueError as exc:
        print(f"fastlangevin bench: error: {exc}", file=sys.stderr)
        return 2
    if args.suite == "dropin":
        return run_dropin(opts, args.json, dry_run=args.dry_run)
    result = run(opts)
    print(report.table(result))
    others = {p.name for w in opts.workloads for p in WORKLOADS[w].provider_list} - set(OURS)
    pairs = [(o, x) for o in OURS for x in sorted(others)] + [("triton", "torch")]  # ours vs each other, both ran
    lines = [f"{cr.case.key}: {a} is {r:.2f}x {b}" for cr in result.cases for a, b in pairs
             if (r := cr.speedup(a, b)) is not None]  # fmt: skip
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
    add_machine_options(add)
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
    add("--json", metavar="PATH", help="write every raw number, versions, device and date as JSON")
    add("--quick", "--dry-run", dest="dry_run", action="store_true", help="--suite: tiny shapes (tests the suite)")
    add("--plot", metavar="PATH", help="write throughput against size per provider, log-log axes (matplotlib)")
    add("--quiet", action="store_true", help="no progress lines")
    add("--list", action="store_true", help="list workloads and providers, then exit")
    p.set_defaults(func=_run)
