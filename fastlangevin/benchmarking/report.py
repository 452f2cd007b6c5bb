"""Presenting a :class:`~fastlangevin.benchmarking.engine.BenchResult`: table, JSON, plot."""

import json
import math
import pathlib
import sys

from .engine import BenchResult, CaseResult

MODE_NAMES = {"out": "out-of-place", "inplace": "in-place"}
WHY = {"skipped": "skipped", "rejected": "REJECTED (wrong output, not timed)", "error": "ERROR"}


def fmt_bytes(n: float) -> str:
    return next((f"{n / k:.3g} {u}" for u, k in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)) if n >= k), f"{n} B")


def case_table(cr: CaseResult) -> str:
    c, cg, bw = cr.case, cr.copy_gbps, cr.bytes_moved is not None
    what = f"op must move {fmt_bytes(cr.bytes_moved)}" if bw else f"{cr.items:g} per call"
    extra = "".join(f", {k}={v}" for k, v in c.params) + (f", {c.threads} threads" if c.threads else "")
    lines = [f"{c.workload}  {c.dtype_name}  {MODE_NAMES.get(c.mode, c.mode)}  {c.size_label} elements  ({what})"]
    lines[0] += f"  [{extra[2:]}]" if extra else ""
    if cr.skipped:
        return "\n".join(lines + [f"  skipped: {cr.skipped}"])
    if cg:
        lines.append(f"  copy y.copy_(x): {cr.copy.median_ms:.4f} ms, {cg:.1f} GB/s  (the 100% reference)")
    timed = cr.timed()
    names, w = [p.name for p in timed], max([len(p.name) for p in cr.providers] + [8])
    wd = {n: max(9, len(n) + 1) for n in names}  # a speed-up column per timed provider
    cols = "".join(f" {'x' + n:>{wd[n]}s}" for n in names)
    unit = f"{'GB/s':>8s} {'%copy':>6s}" if bw else f"{cr.unit:>10s}"
    lines.append(f"  {'provider':{w}s} {'median ms':>10s} {'[p20, p80]':>22s} {unit}{cols}")
    for p in timed:
        t, tp = p.timing, cr.throughput(p)
        vals = f"{tp:8.2f} {f'{100 * tp / cg:5.1f}%' if cg else 'n/a':>6s}" if bw else f"{tp:10.1f}"
        row = "".join(f" {'-' if n == p.name else f'{cr.speedup(p.name, n):.2f}x':>{wd[n]}s}" for n in names)
        lines.append(f"  {p.name:{w}s} {t.median_ms:10.4f} {f'[{t.p20_ms:.4g}, {t.p80_ms:.4g}]':>22s} {vals}{row}")
    lines += [f"  {p.name:{w}s} {WHY[p.status]}: {p.reason}" for p in cr.providers if p.status in WHY]
    for p in timed:
        mem = [f"{k[:-6].replace('_', ' ')} {fmt_bytes(v)}" for k, v in p.extra.items() if k.endswith("_bytes")]
        lines += [f"  memory {p.name}: " + ", ".join(mem)] if mem else []
        if p.extra.get("figures"):
            figures = ", ".join(f"{k} {v:.4g}" for k, v in p.extra["figures"].items() if v is not None)
            lines.append(f"  {p.name}: {figures}")
        if "compile_ms" in p.extra:
            lines.append(f"  {p.name} warm-up (first call, not in the timings): {p.extra['compile_ms'] / 1e3:.2f} s")
    if rebind := [p.name for p in timed if p.extra.get("rebinds")]:
        lines.append(f"  out of place even here (x = f(x), as a user's loop would): {', '.join(rebind)}")
    return "\n".join(lines)


def table(result: BenchResult) -> str:
    m = result.meta
    parts = [
        f"fastlangevin bench — {m['device']} ({m['device_name']}), torch {m['torch']}, triton {m['triton']}, "
        f"{m['date']}",
        "  GB/s = bytes the op must move / median time; %copy = that over y.copy_(x)'s GB/s at the same size;",
        "  column xP = this row's speed-up over provider P (P's median time / this row's).",
    ]
    parts += [f"  bytes: {note}" for note in result.bytes_notes.values()]
    return "\n".join(parts + [s for cr in result.cases for s in ("", case_table(cr))])


def failed_ours(result: BenchResult, bad: tuple[str, ...] = ("rejected", "error")) -> int:
    """Exit status: 1, with a line on stderr, when a fastlangevin provider ended in a ``bad`` status."""
    failed = [(cr.case.key, p.name, p.status) for cr in result.cases for p in cr.providers
              if p.kind == "ours" and p.status in bad]  # fmt: skip
    if failed:
        print(f"\nfastlangevin provider(s) failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


def write_json(result: BenchResult, path: str, **extra) -> None:
    """Every raw number; non-finite floats become null (a JSON round trip maps NaN and inf to None)."""
    data = json.loads(json.dumps({**result.to_dict(), **extra}, default=str), parse_constant=lambda _: None)
    pathlib.Path(path).write_text(json.dumps(data, indent=1) + "\n")


def write_plot(result: BenchResult, path: str):
    """Throughput against size on log-log axes, one panel per (workload, dtype, mode), a line per
    provider, the copy bandwidth dashed; the legend outside the data, so no line hides under it."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, nothing global to close

    series: dict[tuple[str, str, str], list[CaseResult]] = {}
    for cr in result.cases:
        series.setdefault((cr.case.workload, cr.case.dtype_name, cr.case.mode), []).append(cr)
    ncols = min(2, max(len(series), 1))
    nrows = math.ceil(max(len(series), 1) / ncols)
    fig = Figure(figsize=(7.5 * ncols, 4.5 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, ((wl, dt, mode), crs) in zip(axes.flat, series.items()):
        crs = sorted(crs, key=lambda c: c.case.numel)
        for name in dict.fromkeys(p.name for cr in crs for p in cr.timed()):
            pts = [(cr.case.numel, cr.throughput(p)) for cr in crs for p in cr.timed() if p.name == name]
            ax.plot(*zip(*pts), marker="o", label=name)
        if cx := [(cr.case.numel, cr.copy_gbps) for cr in crs if cr.copy_gbps]:
            ax.plot(*zip(*cx), "k--", marker="x", label="copy y.copy_(x)")
        ylabel = "effective GB/s" if crs[0].bytes_moved is not None else crs[0].unit
        ax.set_xscale("log", base=2)
        ax.set(yscale="log", xlabel="elements", ylabel=ylabel, title=f"{wl} {dt} {MODE_NAMES.get(mode, mode)}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    for ax in list(axes.flat)[len(series) :]:
        ax.set_visible(False)
    fig.suptitle(f"fastlangevin bench — {result.meta['device_name']} ({result.meta['date']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig
