"""``fastlangevin demo [NAME]``: the README's main job."""

from __future__ import annotations

import time

import torch

DEMOS = ("mog",)


def run_mog(args) -> int:
    import fastlangevin as fl

    from .mixture import GaussianMixture2D

    device = torch.device(args.device)
    g = torch.Generator(device=device).manual_seed(args.seed)
    mix = GaussianMixture2D.default(device)
    n, steps, eps = args.n, args.steps, args.step_size
    x = torch.empty(n, 2, device=device).uniform_(-8, 8, generator=g)
    backend = fl.backend_for(x)
    print(f"fastlangevin demo mog: {n} chains x {steps} Langevin steps (step {eps}) on {device}, backend={backend}")
    with torch.no_grad():
        for _ in range(3):  # warm-up (kernel compilation on a GPU)
            fl.langevin_step(x.clone(), mix.score(x), eps, generator=g)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            fl.langevin_step_(x, mix.score(x), eps, generator=g)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    w = torch.bincount(mix.assign(x), minlength=len(mix.weights)).float() / n
    print(f"throughput: {n * steps / dt:,.0f} chain-steps/s ({steps / dt:,.1f} steps/s, score + fused update)")
    print(f"sample mean {x.mean(0).tolist()}  (target {(mix.weights[:, None] * mix.means).sum(0).tolist()})")
    print(f"mode weights {[round(v, 3) for v in w.tolist()]}  (target {mix.weights.tolist()}; plain Langevin from a broad start need not match)")
    return 0


def _run(args) -> int:
    return {"mog": run_mog}[args.name](args)


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run a demo (default: mog)")
    p.add_argument("name", nargs="?", default="mog", choices=DEMOS)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=20000, help="number of chains")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--step-size", type=float, default=0.05)
    p.set_defaults(func=_run)
