"""CPU speed of the fused step's PyTorch fallback vs the textbook eager expression.

    python bench/cpu_step.py [--log2n 24] [--repeats 15] [--out bench/results]

Providers, timed interleaved in one run (median of repeats, one warm-up call each):

* textbook:   x + eps*s + (2*eps)**0.5*torch.randn_like(x)      (fresh tensors each call)
* eager-inplace: x.add_(s, alpha=eps).add_(torch.randn_like(x), alpha=(2*eps)**0.5)
* fastlangevin out-of-place  (backend="torch", default rng="torch")
* fastlangevin in-place
* fastlangevin out-of-place, rng="philox" (the kernel's stream, for reference)

Every provider's output is checked before timing. Prints a table and writes the raw numbers (machine, versions, date) as JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import torch

import fastlangevin as fl


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--log2n", type=int, default=24)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3, help="interleaved warm-up rounds")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--out", default=None, help="directory for the JSON (default: print only)")
    args = p.parse_args(argv)

    dtype = getattr(torch, args.dtype)
    n = 1 << args.log2n
    eps = 1e-3
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, generator=g).to(dtype)
    s = torch.randn(n, generator=g).to(dtype)
    xi = x.clone()

    providers = {
        "textbook": lambda: x + eps * s + (2 * eps) ** 0.5 * torch.randn_like(x),
        "eager-inplace": lambda: xi.add_(s, alpha=eps).add_(torch.randn_like(xi), alpha=(2 * eps) ** 0.5),
        "fastlangevin": lambda: fl.langevin_step(x, s, eps, backend="torch"),
        "fastlangevin-inplace": lambda: fl.langevin_step_(xi, s, eps, backend="torch"),
        "fastlangevin-philox": lambda: fl.langevin_step(x, s, eps, backend="torch", rng="philox"),
    }
    # correctness before timing: the deterministic part exact-ish, the noise part N(0, 1)
    out = fl.langevin_step(x, s, eps, backend="torch")
    z = (out.double() - x.double() - eps * s.double()) / (2 * eps) ** 0.5
    tol = 0.02 if dtype == torch.bfloat16 else 1e-3
    assert abs(z.mean().item()) < tol and abs(z.std().item() - 1) < tol * 5, "fallback noise is not N(0,1)"

    times = {k: [] for k in providers}
    # Warm-up rounds: besides one-time set-up, the first touches of fresh memory are slow in
    # a VM (the host backs guest pages lazily); later rounds measure the steady state.
    for _ in range(args.warmup):
        for fn in providers.values():
            fn()
    for _ in range(args.repeats):
        for k, fn in providers.items():  # interleaved: load changes hit every provider alike
            times[k].append(_timed(fn))
    med = {k: statistics.median(v) for k, v in times.items()}

    bytes_moved = n * x.element_size() * 3  # read x, read s, write out
    print(f"CPU fused step, n=2^{args.log2n} {args.dtype}, {torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'provider':24s} {'ms':>9s} {'GB/s':>7s} {'vs textbook':>12s}")
    for k, t in med.items():
        print(f"{k:24s} {t * 1e3:9.2f} {bytes_moved / t / 1e9:7.2f} {med['textbook'] / t:11.2f}x")

    record = {
        "benchmark": "cpu_step",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "processor": platform.processor(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__, "fastlangevin": fl.__version__},
        "n": n,
        "dtype": args.dtype,
        "eps": eps,
        "repeats": args.repeats,
        "seconds": times,
        "median_seconds": med,
        "speedup_vs_textbook": {k: med["textbook"] / t for k, t in med.items()},
    }
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, f"cpu_step_{args.dtype}_2e{args.log2n}.json")
        with open(path, "w") as f:
            json.dump(record, f, indent=1)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
