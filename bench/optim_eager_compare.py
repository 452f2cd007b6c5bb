"""SGLD / pSGLD / SGHMC: fastlangevin.optim's CPU fallback vs a per-parameter eager loop, ResNet-32 shapes.

    python bench/optim_eager_compare.py THREADS [METHODS] [ROUNDS]

The engine's ``optim`` workload has SGLD only; this adds the eager pSGLD and SGHMC loops (plain
torch per parameter: ``addcmul_`` / ``add_(alpha=)``, ``randn_like``). Rounds alternate the order;
it prints wall and CPU-time medians (CPU time is steadier on a loaded machine).
"""

import math
import statistics
import sys
import time

import torch

from fastlangevin.benchmarking.workloads.optim import resnet_shapes
from fastlangevin.optim import SGHMC, SGLD, pSGLD

LR, T = 1e-4, 1.0


def tensors(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) * 0.1 for s in shapes]


def eager_sgld(params, grads):
    b = math.sqrt(2 * LR * T)

    def step():
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.add_(g, alpha=-LR)
                p.add_(torch.randn_like(p), alpha=b)

    return step


def eager_psgld(params, grads, alpha=0.99, eps=1e-5):
    vs = [torch.zeros_like(p) for p in params]

    def step():
        with torch.no_grad():
            for p, g, v in zip(params, grads, vs):
                v.mul_(alpha).addcmul_(g, g, value=1 - alpha)
                G = v.sqrt().add_(eps).reciprocal_()
                p.addcmul_(G, g, value=-LR)
                p.add_(torch.randn_like(p) * G.mul_(2 * LR * T).sqrt_())

    return step


def eager_sghmc(params, grads, friction=0.1):
    ms = [torch.zeros_like(p) for p in params]
    b = math.sqrt(2 * friction * LR * T)

    def step():
        with torch.no_grad():
            for p, g, m in zip(params, grads, ms):
                m.mul_(1 - friction).add_(g, alpha=-LR).add_(torch.randn_like(p), alpha=b)
                p.add_(m)

    return step


def ours(cls):
    def make(params, grads):
        for p, g in zip(params, grads):
            p.grad = g
        return cls(params, lr=LR, temperature=T, seed=0, backend="torch").step

    return make


PAIRS = {"sgld": (eager_sgld, ours(SGLD)), "psgld": (eager_psgld, ours(pSGLD)), "sghmc": (eager_sghmc, ours(SGHMC))}


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    methods = sys.argv[2].split(",") if len(sys.argv) > 2 else list(PAIRS)
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 15
    torch.set_num_threads(threads)
    shapes = resnet_shapes(16)
    for m in methods:
        fns = [f(tensors(shapes, 1), tensors(shapes, 2)) for f in PAIRS[m]]
        for f in fns:
            for _ in range(3):
                f()
        times = [[], []]
        cpu = [[], []]
        for r in range(rounds):
            for k in (r % 2, 1 - r % 2):  # alternate the order
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(5):
                    fns[k]()
                times[k].append((time.perf_counter() - t0) / 5 * 1e3)
                cpu[k].append((time.process_time() - c0) / 5 * 1e3)
        me, mo = statistics.median(times[0]), statistics.median(times[1])
        ratios = statistics.median([a / b for a, b in zip(times[0], times[1])])
        ce, co = statistics.median(cpu[0]), statistics.median(cpu[1])
        print(
            f"threads={threads} {m:6s} wall: eager {me:7.3f} ms, ours {mo:7.3f} ms, eager/ours {me / mo:.2f}x "
            f"(paired {ratios:.2f}x); CPU time: eager {ce:.3f} ms, ours {co:.3f} ms, eager/ours {ce / co:.2f}x"
        )


main()
