"""``fastlangevin profile``: run a sampler under ``torch.profiler``; write a Chrome trace and a table.

The table: the **top kernels / ops** by self time (GPU: CUDA kernels' device time; CPU: aten ops' self
time) and the **phases** (the samplers' ``record_function`` labels ``fastlangevin.score``, ``.update``,
``.correct``, ``.denoise``), each with its share of the run (GPU: of all kernel time; CPU: of the wall
time of ``fastlangevin.profile``). ``--sampler langevin|annealed`` is a case of the ``sampler`` workload,
run as the bench times it (``annealed`` adds the denoising step); ``pc`` (VE SDE) takes that case's inputs.
"""

import functools
import json
import operator
import os
import pathlib
import sys
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

from ..sampling.loop import PHASES
from ..sampling.pc import pc_sample
from ..sde import VESDE
from .cli import add_machine_options, machine
from .engine import BenchOptions, Case, Provider, get_workload, synchronize
from .workloads import sampler

OUTER_LABEL = "fastlangevin.profile"


def build_target(args, device: torch.device):
    """``(description, run)``: one run of ``args.sampler`` (with the denoising step where annealed) as the
    ``sampler`` workload times it: its case (seeded MLP score, start state, schedule) and its provider factory."""
    params = (("sampler", args.sampler), ("score", "mlp"), ("steps", args.steps))
    case = Case("sampler", (args.n, args.dim), torch.float32, "out", device, params)
    w, opts = get_workload("sampler"), BenchOptions(device=device, seed=args.seed)
    what = {"annealed": "annealed_langevin + denoising step", "langevin": "langevin (ULA)"}.get(args.sampler)
    desc, inputs = f"on {case.key}, backend={args.backend}, cuda_graph={args.cuda_graph}", w.setup(case, opts)
    if args.sampler == "pc":  # profiled, not benchmarked (its corrector's step depends on the batch: no exact check)
        sde, net = VESDE(sigma_min=0.01, sigma_max=10.0), inputs["score"]  # (set up as annealed: noise-conditional)
        kw = dict(snr=0.16, n_steps=args.steps, backend=args.backend, cuda_graph=args.cuda_graph)
        x0, score = inputs["x0"] * sde.prior_std, lambda x, t: net(x, sde.marginal_std(t))
        run = lambda: pc_sample(score, sde, x0, **kw)  # noqa: E731
        return f"pc_sample (VE SDE, reverse diffusion + Langevin corrector) {desc}", torch.no_grad()(run)
    make = functools.partial(sampler._fastlangevin, backend=args.backend, cuda_graph=args.cuda_graph, denoise=True)
    return f"{what} {desc}", w.timed(Provider(args.sampler, what, make), case, inputs, opts)[0]


def summarize(prof, device: torch.device, description: str, top: int = 15) -> dict[str, Any]:
    """The run's total, the ``top`` kernels / ops by self time and the phases' shares, as a dict (JSON)."""
    on_gpu, labels = device.type == "cuda", set(PHASES)
    events = [e for e in prof.events() if e.device_type == DeviceType.CPU]
    kind = "device" if on_gpu else "cpu"
    self_us, amount = operator.attrgetter(f"self_{kind}_time_total"), operator.attrgetter(f"{kind}_time_total")
    rows = [a for a in prof.key_averages() if a.key not in labels | {OUTER_LABEL} and self_us(a) > 0]
    if on_gpu:  # kernels (device-side events): their self device time is the GPU's busy time
        rows = [a for a in rows if a.device_type != DeviceType.CPU] or rows  # some torch versions: launch ops only
        total_us, basis = sum(map(self_us, rows)), "sum of GPU kernel time"
    else:
        total_us = sum(e.cpu_time_total for e in events if e.name == OUTER_LABEL)
        basis = f"wall time of the profiled run ({OUTER_LABEL})"
    share = lambda us: us / total_us if total_us else 0.0  # noqa: E731
    ranked = sorted(rows, key=self_us, reverse=True)[:top]
    top_rows = [dict(name=a.key, calls=a.count, self_ms=self_us(a) / 1e3, share=share(self_us(a))) for a in ranked]

    # a phase's own share: its time minus that of the phases nested in it (the denoising step evaluates
    # the score inside its label), so shares never overlap; the inclusive share is listed too
    nested: dict[int, float] = {}  # id of a phase event -> time of the phase events nearest inside it
    for e in (e for e in events if e.name in labels):
        outer = e.cpu_parent
        while outer is not None and outer.name not in labels:
            outer = outer.cpu_parent
        if outer is not None:
            nested[id(outer)] = nested.get(id(outer), 0.0) + amount(e)
    phases = []
    for label in PHASES:
        if evs := [e for e in events if e.name == label]:
            incl = sum(map(amount, evs))
            excl = incl - sum(nested.get(id(e), 0.0) for e in evs)
            phases.append(dict(label=label, calls=len(evs), cpu_ms=sum(e.cpu_time_total for e in evs) / 1e3,
                               device_ms=sum(e.device_time_total for e in evs) / 1e3 if on_gpu else None,
                               inclusive_share=share(incl), share=share(excl)))  # fmt: skip
    return dict(device=str(device), description=description, total_ms=total_us / 1e3, total_basis=basis,
                top=top_rows, phases=phases)  # fmt: skip


def format_summary(s: dict[str, Any]) -> str:
    lines = [f"fastlangevin profile — {s['description']} on {s['device']}",
             f"total {s['total_ms']:.3f} ms ({s['total_basis']}); shares are of this total", "",
             "phases (record_function labels; share = time in the phase minus phases nested in it):"]  # fmt: skip
    for p in s["phases"]:
        dev = f"  device {p['device_ms']:9.3f} ms" if p["device_ms"] is not None else ""
        share = f"{100 * p['share']:5.1f}%  (inclusive {100 * p['inclusive_share']:5.1f}%)"
        lines.append(f"  {p['label']:22s} {p['calls']:6d} calls  cpu {p['cpu_ms']:9.3f} ms{dev}  {share}")
    lines += ["", "top kernels / ops by self time:"]
    w = max([len(r["name"][:70]) for r in s["top"]] + [4])
    for r in s["top"]:
        lines.append(f"  {r['name'][:70]:{w}s} {r['calls']:6d} calls {r['self_ms']:10.3f} ms  {100 * r['share']:5.1f}%")
    return "\n".join(lines)


def _run(args) -> int:
    try:
        device = machine(args)
        if args.cuda_graph and device.type != "cuda":
            raise ValueError("--cuda-graph needs --device cuda")
    except ValueError as exc:
        print(f"fastlangevin profile: error: {exc}", file=sys.stderr)
        return 2
    desc, run = build_target(args, device)
    print(f"profiling {desc} ...", file=sys.stderr, flush=True)
    run()  # warm-up, unprofiled: the first call's lazy set-up (kernel builds, a CUDA graph's capture)
    synchronize(device)
    activities = [ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * (device.type == "cuda")
    with profile(activities=activities) as prof, record_function(OUTER_LABEL):
        run()
        synchronize(device)
    os.makedirs(os.path.dirname(os.path.abspath(args.trace)), exist_ok=True)
    prof.export_chrome_trace(args.trace)
    summary = summarize(prof, device, desc)
    text = format_summary(summary)
    print(text)
    table_path = os.path.splitext(args.trace)[0] + ".txt"  # beside the trace
    for path, content in ((table_path, text), (args.json, json.dumps(summary, indent=1))):
        if path:
            pathlib.Path(path).write_text(content + "\n")
    print(f"\nwrote {args.trace} (open in chrome://tracing or https://ui.perfetto.dev) and {table_path}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("profile", help="run a sampler under torch.profiler: Chrome trace + top-kernel table")
    add = p.add_argument
    add("--sampler", default="langevin", choices=["annealed", "langevin", "pc"])
    add_machine_options(add)
    add("--n", type=int, default=4096, help="chains")
    add("--dim", type=int, default=64, help="state dimension")
    add("--steps", type=int, default=20, help="sampler steps (annealed: split across the workload's 10 noise levels)")
    add("--cuda-graph", action="store_true", help="samplers: capture a step in a CUDA graph (CUDA only)")
    add("--backend", default="auto", type=lambda v: "auto" if v.lower() == "none" else v.lower(),  # None: auto
        choices=["auto", "triton", "torch"], help="backend=, as in the Python API (default: auto)")  # fmt: skip
    add("--trace", default="fastlangevin_trace.json",
        help="where the Chrome trace goes (default: fastlangevin_trace.json in the working directory)")  # fmt: skip
    add("--json", default=None, help="also write the summary as JSON")
    p.set_defaults(func=_run)
