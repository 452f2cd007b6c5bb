"""``fastlangevin profile``: run a sampler under ``torch.profiler``; write a Chrome trace and a table.

The table: the **top kernels / ops** by self time (GPU: CUDA kernels' device time; CPU: aten ops' self
time) and the **phases** (the samplers' ``record_function`` labels ``fastlangevin.score``, ``.update``,
``.correct``, ``.denoise``), each with its share of the run (GPU: of all kernel time; CPU: of the wall
time of ``fastlangevin.profile``). ``--sampler``, with a small MLP score: ``loop`` (``langevin_step_`` in a
plain loop, labelled alike), ``langevin``, ``annealed``, ``pc`` (VE SDE).
"""

import json
import operator
import os
import pathlib
import sys
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

import fastlangevin as fl

from ..sampling.loop import PHASES, phase
from .cli import add_machine_options, machine
from .engine import synchronize
from .workloads.sampler import ScoreMLP

OUTER_LABEL = "fastlangevin.profile"


def build_target(args, device: torch.device):
    """``(description, run, warmup)`` of ``args.sampler`` with a small MLP score (noise-conditional where
    the sampler is); ``run`` is one profiled run of several steps."""
    g = torch.Generator(device=device).manual_seed(args.seed)
    x0 = torch.randn(args.n, args.dim, device=device, generator=g)
    net = ScoreMLP(args.dim, args.hidden, conditional=args.sampler in ("annealed", "pc"), seed=args.seed).to(device)
    kw = dict(generator=g, backend=args.backend)
    graph = dict(kw, cuda_graph=args.cuda_graph)
    mlp = f"MLP score {args.dim}-{args.hidden}x3-{args.dim}, {args.n} chains, cuda_graph={args.cuda_graph}"
    steps, warm = args.steps, max(args.warmup, 1)
    if args.sampler == "loop":
        desc = f"loop: {steps} x (MLP + langevin_step_), backend={fl.backend_for(x0, args.backend)}, {mlp}"

        def go(k):
            for _ in range(k):
                with phase("fastlangevin.score"):
                    s = net(x0)
                with phase("fastlangevin.update"):
                    fl.langevin_step_(x0, s, args.step_size, **kw)

        warm = args.warmup
    elif args.sampler == "langevin":
        desc = f"langevin (ULA): {steps} steps, {mlp}"
        go = lambda k: fl.langevin(net, x0, step_size=args.step_size, n_steps=k, **graph)  # noqa: E731
    elif args.sampler == "annealed":
        L = args.levels
        sigmas = [0.01 ** (i / max(L - 1, 1)) for i in range(L)]
        steps, warm = max(1, args.steps // L), 1
        desc = f"annealed_langevin: {L} levels x {steps} steps + denoise, {mlp}"
        go = lambda t: fl.annealed_langevin(net, x0, sigmas, n_steps_each=t, step_lr=args.step_lr, **graph)  # noqa: E731
    else:
        sde = fl.VESDE(sigma_min=0.01, sigma_max=10.0)
        desc = f"pc_sample (VE, reverse diffusion + Langevin corrector): {steps} steps, {mlp}"
        score = lambda x, t: net(x, sde.marginal_std(t))  # noqa: E731
        go = lambda k: fl.pc_sample(score, sde, x0 * sde.prior_std, n_steps=k, snr=0.16, **graph)  # noqa: E731
    go = torch.no_grad()(go)
    return desc, lambda: go(steps), lambda: go(warm)


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
    lines += [] if s["phases"] else ["  (no fastlangevin.* labels recorded)"]
    lines += ["", "top kernels / ops by self time:"]
    w = max([len(r["name"][:70]) for r in s["top"]] + [4])
    for r in s["top"]:
        lines.append(f"  {r['name'][:70]:{w}s} {r['calls']:6d} calls {r['self_ms']:10.3f} ms  {100 * r['share']:5.1f}%")
    return "\n".join(lines)


def _run(args) -> int:
    try:
        device = machine(args)
        if args.cuda_graph and (device.type != "cuda" or args.sampler == "loop"):
            raise ValueError("--cuda-graph needs --device cuda and a library sampler (langevin, annealed, pc)")
    except ValueError as exc:
        print(f"fastlangevin profile: error: {exc}", file=sys.stderr)
        return 2
    desc, run, warmup = build_target(args, device)
    print(f"profiling {desc} ...", file=sys.stderr, flush=True)
    warmup()
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
    add("--sampler", default="loop", choices=["annealed", "langevin", "loop", "pc"])
    add_machine_options(add)
    add("--n", type=int, default=4096, help="chains")
    add("--dim", type=int, default=64, help="state dimension")
    add("--hidden", type=int, default=256, help="score MLP width")
    add("--steps", type=int, default=20, help="profiled steps")
    add("--warmup", type=int, default=3, help="unprofiled warm-up steps")
    add("--step-size", type=float, default=1e-3, help="loop / langevin step size")
    add("--levels", type=int, default=10, help="annealed: noise levels (steps are split across them)")
    add("--step-lr", type=float, default=2e-5, help="annealed: NCSN's epsilon")
    add("--cuda-graph", action="store_true", help="samplers: capture a step in a CUDA graph (CUDA only)")
    add("--backend", default="auto", type=lambda v: "auto" if v.lower() == "none" else v.lower(),  # None: auto
        choices=["auto", "triton", "torch"], help="backend=, as in the Python API (default: auto)")  # fmt: skip
    add("--trace", default="fastlangevin_trace.json",
        help="where the Chrome trace goes (default: fastlangevin_trace.json in the working directory)")  # fmt: skip
    add("--json", default=None, help="also write the summary as JSON")
    p.set_defaults(func=_run)
