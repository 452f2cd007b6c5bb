"""Steps per second of annealed Langevin dynamics with a small MLP score network.

Compares, for each state size (default: 2-D points and 3·32·32 images, batch 4096 on CUDA):

* ``naive``      — the same loop written plainly in PyTorch:
                   ``x = x + a * net(x, σ) + sqrt(2a) * torch.randn_like(x)``;
* ``fused``      — :func:`fastlangevin.annealed_langevin` (fused update, in-kernel noise);
* ``fused+graph``— the same with ``cuda_graph=True`` (one step — score net + update — captured
                   once and replayed). CUDA only.

Every variant runs the same number of steps (levels × steps per level, no final denoising)
after one warm-up run; the time includes the score network. On a machine without CUDA the
script runs on CPU at a small size (batch 256) and skips the graph variant.

    python bench/bench_samplers.py                       # auto: CUDA sizes, or CPU small sizes
    python bench/bench_samplers.py --device cpu --batch 256 --dims 2 3072 --out bench/results/samplers_cpu.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import torch

import fastlangevin as fl


class MLPScore(torch.nn.Module):
    """s(x, σ) = MLP([x, log σ]) / σ — a small noise-conditional score network."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dim + 1, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, dim),
        )

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        h = torch.cat([flat, sigma.log()[:, None].to(flat.dtype)], dim=1)
        return (self.net(h) / sigma[:, None].to(flat.dtype)).reshape(x.shape)


def naive_annealed(net, x, sigmas, n_steps_each, step_lr, generator):
    """The loop as usually written: one temporary per term, torch's own randn."""
    B = x.shape[0]
    for sigma in sigmas:
        a = step_lr * (sigma / sigmas[-1]) ** 2
        sig = torch.full((B,), sigma, device=x.device)
        for _ in range(n_steps_each):
            s = net(x, sig)
            x = x + a * s + math.sqrt(2 * a) * torch.randn(x.shape, device=x.device, generator=generator)
    return x


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_variant(fn, device, repeat):
    fn()  # warm-up: kernel compilation, cuBLAS workspaces, graph capture
    _sync(device)
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def run(args) -> dict:
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sigmas = torch.logspace(math.log10(args.sigma_max), math.log10(args.sigma_min), args.levels).tolist()
    n_steps = args.levels * args.steps_each
    results = []
    for dim in args.dims:
        torch.manual_seed(0)
        net = MLPScore(dim, args.hidden).to(device).eval()
        x0 = torch.randn(args.batch, dim, device=device) * args.sigma_max
        gen = torch.Generator(device=device).manual_seed(1)
        variants = {
            "naive": lambda: naive_annealed(net, x0, sigmas, args.steps_each, args.step_lr, gen),
            "fused": lambda: fl.annealed_langevin(
                net, x0, sigmas, n_steps_each=args.steps_each, step_lr=args.step_lr, denoise=False, generator=gen
            ),
        }
        if cuda and not args.no_graph:
            variants["fused+graph"] = lambda: fl.annealed_langevin(
                net,
                x0,
                sigmas,
                n_steps_each=args.steps_each,
                step_lr=args.step_lr,
                denoise=False,
                generator=gen,
                cuda_graph=True,
            )
        with torch.no_grad():
            for name, fn in variants.items():
                secs = time_variant(fn, device, args.repeat)
                row = dict(dim=dim, variant=name, steps=n_steps, seconds=secs, steps_per_s=n_steps / secs)
                results.append(row)
                print(
                    f"dim={dim:>5}  {name:<12} {n_steps} steps in {secs:8.4f} s  ->  {n_steps / secs:10.1f} steps/s",
                    flush=True,
                )
    env = dict(
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine(),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        backend=fl.backend_for(torch.empty(1, device=device)),
        python=sys.version.split()[0],
        loadavg_at_end=os.getloadavg() if hasattr(os, "getloadavg") else None,
    )
    return dict(env=env, config=vars(args), results=results)


def main(argv=None) -> int:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--batch", type=int, default=None, help="default 4096 on CUDA, 256 on CPU")
    p.add_argument("--dims", type=int, nargs="+", default=[2, 3 * 32 * 32])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--levels", type=int, default=10)
    p.add_argument("--steps-each", type=int, default=None, help="default 20 on CUDA, 5 on CPU")
    p.add_argument("--step-lr", type=float, default=2e-5)
    p.add_argument("--sigma-max", type=float, default=1.0)
    p.add_argument("--sigma-min", type=float, default=0.01)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-graph", action="store_true")
    p.add_argument("--out", default=None, help="write the raw results as JSON here")
    args = p.parse_args(argv)
    on_cuda = args.device.startswith("cuda")
    if args.batch is None:
        args.batch = 4096 if on_cuda else 256
    if args.steps_each is None:
        args.steps_each = 20 if on_cuda else 5
    if args.threads:
        torch.set_num_threads(args.threads)
    out = run(args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
