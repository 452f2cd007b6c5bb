"""Presenting a :class:`~fastlangevin.benchmarking.runner.BenchResult`: table, JSON, plot."""

from __future__ import annotations

import json
import math
from typing import Dict, List, Optional, Tuple

from .runner import BenchResult, CaseResult

MODE_NAMES = {"out": "out-of-place", "inplace": "in-place"}


def _fmt_bytes(n: int) -> str:
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= k:
            return f"{n / k:.3g} {unit}"
    return f"{n} B"


def case_table(cr: CaseResult, l2_bytes: Optional[int] = None) -> str:
    c = cr.case
    what = (
        f"op must move {_fmt_bytes(cr.bytes_moved)}"
        if cr.bytes_moved is not None
        else f"{cr.items:g} {cr.unit.split('/')[0]} per call"
    )
    head = f"{c.workload}  {c.dtype_name}  {MODE_NAMES.get(c.mode, c.mode)}  {c.size_label} elements  ({what})"
    if l2_bytes and cr.bytes_moved is not None and cr.bytes_moved <= l2_bytes:
        head += f"  [fits in the {_fmt_bytes(l2_bytes)} L2; timed with the L2 flushed before each repetition]"
    lines = [head]
    if cr.skipped:
        lines.append(f"  skipped: {cr.skipped}")
        return "\n".join(lines)
    copy_gbps = cr.copy_gbps
    if cr.copy is not None:
        lines.append(
            f"  copy y.copy_(x) on {c.device.type}: {cr.copy.median_ms:.4f} ms, {copy_gbps:.1f} GB/s  (the 100% reference)"
        )
    timed = cr.timed()
    names = [p.name for p in timed]
    sp = cr.speedups()
    w = max([len(p.name) for p in cr.providers] + [8])
    cw = {n: max(9, len(n) + 1) for n in names}
    cols = "".join(f" {'x' + n:>{cw[n]}s}" for n in names)
    bandwidth = cr.bytes_moved is not None
    unit_cols = f"{'GB/s':>8s} {'%copy':>6s}" if bandwidth else f"{cr.unit:>10s}"
    lines.append(f"  {'provider':{w}s} {'median ms':>10s} {'[p20, p80]':>22s} {unit_cols}{cols}")
    for p in timed:
        t = p.timing
        q = f"[{t.p20_ms:.4g}, {t.p80_ms:.4g}]"
        row = "".join(f" {'-':>{cw[n]}s}" if n == p.name else f" {sp[p.name][n]:{cw[n] - 1}.2f}x" for n in names)
        if bandwidth:
            gb = p.gbps(cr.bytes_moved)
            pct = f"{100 * gb / copy_gbps:5.1f}%" if copy_gbps else "   n/a"
            vals = f"{gb:8.1f} {pct:>6s}"
        else:
            vals = f"{cr.throughput(p):10.1f}"
        lines.append(f"  {p.name:{w}s} {t.median_ms:10.4f} {q:>22s} {vals}{row}")
    for p in cr.providers:
        if p.status == "skipped":
            lines.append(f"  {p.name:{w}s} skipped: {p.reason}")
        elif p.status == "rejected":
            lines.append(f"  {p.name:{w}s} REJECTED (wrong output, not timed): {p.reason}")
        elif p.status == "error":
            lines.append(f"  {p.name:{w}s} ERROR: {p.reason}")
    mem = [p for p in timed if "saved_bytes" in p.extra or "peak_bytes" in p.extra]
    if mem:
        noise = mem[0].extra.get("noise_tensor_bytes")
        head_m = "  memory" + (f" (one noise tensor = {_fmt_bytes(noise)})" if noise else "") + ":"
        lines.append(head_m)
        for p in mem:
            parts = []
            if "saved_bytes" in p.extra:
                parts.append(f"saved for backward {_fmt_bytes(p.extra['saved_bytes'])}")
            if "peak_bytes" in p.extra:
                parts.append(f"peak during forward+backward {_fmt_bytes(p.extra['peak_bytes'])}")
            lines.append(f"    {p.name:{w}s} " + ", ".join(parts))
    rebind = [p.name for p in timed if p.extra.get("rebinds")]
    if rebind:
        lines.append(f"  out of place even here (x = f(x), as a user's loop would): {', '.join(rebind)}")
    for p in timed:
        first = p.extra.get("compile_ms", p.extra.get("first_call_ms"))
        if p.name == "compile" and first is not None:
            lines.append(f"  compile warm-up (first call, not in the timings): {first / 1e3:.2f} s")
    return "\n".join(lines)


def table(result: BenchResult) -> str:
    m = result.meta
    parts = [
        f"fastlangevin bench — {m['device']} ({m['device_name']}), torch {m['torch']}, triton {m['triton']}, {m['date']}",
        "  GB/s = bytes the op must move / median time; %copy = that GB/s over y.copy_(x)'s GB/s at the same size and dtype;",
        "  column xP = this row's speed-up over provider P (P's median time / this row's).",
    ]
    for note in result.bytes_notes.values():
        parts.append(f"  bytes: {note}")
    for cr in result.cases:
        parts.append("")
        parts.append(case_table(cr, result.l2_bytes))
    return "\n".join(parts)


def summary_lines(result: BenchResult, pairs: List[Tuple[str, str]]) -> List[str]:
    """One line per case and pair ``(ours, other)`` that both ran: ``ours`` speed-up over ``other``."""
    from .runner import headline

    out = []
    for cr in result.cases:
        for ours, other in pairs:
            r = headline(cr, ours, other)
            if r is not None:
                out.append(f"{cr.case.key}: {ours} is {r:.2f}x {other}")
    return out


def write_json(result: BenchResult, path: str) -> None:
    def clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    with open(path, "w") as f:
        json.dump(clean(result.to_dict()), f, indent=1)
        f.write("\n")


def write_plot(result: BenchResult, path: str) -> None:
    """Throughput (effective GB/s, or items/s for sampler workloads) against size, one panel per
    (workload, dtype, mode), a line per provider, the copy bandwidth dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: Dict[Tuple[str, str, str], List[CaseResult]] = {}
    for cr in result.cases:
        series.setdefault((cr.case.workload, cr.case.dtype_name, cr.case.mode), []).append(cr)
    n = max(len(series), 1)
    ncols = min(2, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.5 * ncols, 4.2 * nrows), squeeze=False)
    for ax, ((wl, dt, mode), crs) in zip(axes.flat, series.items()):
        crs = sorted(crs, key=lambda c: c.case.numel)
        names: List[str] = []
        for cr in crs:
            for p in cr.timed():
                if p.name not in names:
                    names.append(p.name)
        for name in names:
            xs, ys = [], []
            for cr in crs:
                for p in cr.timed():
                    if p.name == name:
                        xs.append(cr.case.numel)
                        ys.append(cr.throughput(p))
            ax.plot(xs, ys, marker="o", label=name)
        cx = [(cr.case.numel, cr.copy_gbps) for cr in crs if cr.copy_gbps]
        if cx:
            ax.plot([a for a, _ in cx], [b for _, b in cx], "k--", marker="x", label="copy y.copy_(x)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("elements")
        ax.set_ylabel("effective GB/s" if crs[0].bytes_moved is not None else crs[0].unit)
        ax.set_title(f"{wl} {dt} {MODE_NAMES.get(mode, mode)}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(series) :]:
        ax.set_visible(False)
    m = result.meta
    fig.suptitle(f"fastlangevin bench — {m['device_name']} ({m['date']})", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=120)
    plt.close(fig)
