"""``fastlangevin bench --suite dropin``: fastlangevin dropped into a user's loop vs the plain PyTorch it replaces.

Each entry is one engine case (checked, then timed interleaved with its baselines, one run) at a
given thread count, with the speed-up target of issue 11 beside it (met / missed); then the step in
place across sizes 2^8 … 2^24. Raw results (device, versions, date, every timing) go to JSON.
"""

import datetime
import os

import torch

from . import report
from .engine import BenchOptions, BenchResult, Case, environment, run

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


def run_suite(opts: BenchOptions, ours: str, sweep=SWEEP, scale: float = 1.0) -> tuple[BenchResult, list[dict]]:
    """Every entry, then the sweep; ``scale`` shrinks the shapes' first dim (dry runs)."""
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
    step = [Case("langevin_step", (1 << e,), torch.float32, "inplace", opts.device, (), 1) for e in sweep]
    results += run(opts.replace(providers=(ours, *STEP_BASES)), cases=step).cases
    return BenchResult(meta, results, {}), targets


def target_table(targets: list[dict]) -> str:
    lines = ["| work | vs | speed-up | target | |", "|---|---|---:|---:|---|"]
    for t in targets:
        got = "n/a" if t["speedup"] is None else f"{t['speedup']:.2f}x"
        verdict = "not run" if t["met"] is None else ("met" if t["met"] else "MISSED")
        lines.append(f"| {t['work']} | {t['baseline']} | {got} | >= {t['target']:.2f}x | {verdict} |")
    return "\n".join(lines)


def sweep_table(result: BenchResult, ours: str) -> str:
    lines = [
        "| elements | " + " | ".join(f"{ours} vs {b}" for b in STEP_BASES) + f" | {ours} GB/s |",
        "|---:|---:|---:|---:|",
    ]
    for cr in result.cases:
        if cr.case.workload == "langevin_step" and len(cr.case.shape) == 1:
            cells = " | ".join("n/a" if v is None else f"{v:.2f}x" for v in (cr.speedup(ours, b) for b in STEP_BASES))
            gb = next((f"{cr.throughput(p):.2f}" for p in cr.timed() if p.name == ours), "n/a")
            lines.append(f"| {cr.case.size_label} | {cells} | {gb} |")
    return "\n".join(lines)


def main(opts: BenchOptions, json_path=None, out_dir="bench/results", dry_run=False) -> int:
    ours = "triton" if opts.device.type == "cuda" else "torch"
    result, targets = run_suite(opts, ours, sweep=(8, 10) if dry_run else SWEEP, scale=1 / 64 if dry_run else 1.0)
    print(report.table(result) + "\n\ntargets (issue 11; speed-up = baseline median / fastlangevin median):")
    print(target_table(targets) + "\n\nstep in place across sizes (1 thread):\n" + sweep_table(result, ours))
    if json_path is None:
        os.makedirs(out_dir, exist_ok=True)
        day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M")
        json_path = os.path.join(out_dir, f"dropin-{opts.device.type}-{day}.json")
    report.write_json(result, json_path, targets=targets, dry_run=dry_run)
    print(f"\nwrote {json_path}")
    return report.failed_ours(result, bad=("rejected", "error", "skipped"))  # every target needs ours timed
