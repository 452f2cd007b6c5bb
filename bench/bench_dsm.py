"""Fused DSM loss vs a naive PyTorch DSM loss: forward+backward time and peak memory.

    python bench/bench_dsm.py                       # CUDA: B=128, 3x64x64, fp32 and bf16
    python bench/bench_dsm.py --out bench/results/dsm_h100.json
    python bench/bench_dsm.py --batch 32 --shape 3,32,32 --dtypes fp32   # any size

Without CUDA it runs a small CPU size (B=64, 3x32x32) with the PyTorch fallback as "fused".

Both losses are the same DSM loss (x̃ = x + σz, ℓ_i = ½ σ_i² Σ_j (s_ij + z_ij/σ_i)², mean over
the batch, per-sample σ) around a trivial score network ``s = b - x̃`` with one parameter
``b`` (shaped like a sample), so the loss itself is what is measured:

* fused: ``fastlangevin.dsm_loss`` (backend auto: Triton on CUDA, fallback on CPU);
* naive: plain PyTorch as usually written — ``z = randn_like(x)``, build x̃, residual, square,
  per-sample sum, weight, mean — with autograd keeping what it needs.

Each (variant, dtype) runs in a fresh subprocess:
* time: median (and IQR, and the fastest block: robust on shared CPUs) of forward+backward
  over ``torch.utils.benchmark`` blocked runs;
* peak memory: CUDA — ``max_memory_allocated`` during one forward+backward above what was
  allocated before it; CPU — growth of the process's peak RSS (``ru_maxrss``) during the first
  full forward+backward (after a tiny warm-up), in a separate process where glibc mmaps (and
  unmaps on free) every block ≥ 64 KiB so RSS follows live memory (page-granular: coarse);
* saved bytes: the tensors autograd saves for backward (``saved_tensors_hooks``, unique storages).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


# ---------------------------------------------------------------------------------------
# Child: one (variant, dtype) measurement
# ---------------------------------------------------------------------------------------
def _child(cfg: dict) -> dict:
    import torch
    from torch.autograd.graph import saved_tensors_hooks
    from torch.utils import benchmark

    import fastlangevin as fl

    device = torch.device(cfg["device"])
    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    dtype = getattr(torch, DTYPES[cfg["dtype"]])
    B, shape = cfg["batch"], tuple(cfg["shape"])
    nd = 1 + len(shape)

    gen = torch.Generator(device=device).manual_seed(0)
    x_full = torch.randn((B,) + shape, generator=gen, device=device).to(dtype)
    sigmas = fl.geometric_sigmas(50.0, 0.01, 232, device=device)
    _, sigma_full = fl.sample_noise_levels(sigmas, B, generator=gen)
    b = torch.zeros(shape, device=device, dtype=dtype, requires_grad=True)

    def score_fn(xt, sig):
        return b - xt  # one op, saves nothing: the loss is what is measured

    def fused(x, sigma):
        return fl.dsm_loss(score_fn, x, sigma, backend=cfg["fused_backend"])

    def naive(x, sigma):
        z = torch.randn_like(x)
        sig = sigma.to(x.dtype).reshape((-1,) + (1,) * (nd - 1))
        s = score_fn(x + sig * z, sigma)
        per = ((s + z / sig) ** 2).flatten(1).sum(1)
        return (0.5 * sigma**2 * per).mean()

    loss_fn = fused if cfg["variant"] == "fused" else naive

    def run(x, sigma):
        loss = loss_fn(x, sigma)
        loss.backward()
        b.grad = None
        return loss

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    with fl.track_backends() as ran:
        run(x_full[:2], sigma_full[:2])  # warm-up on a tiny batch: lazy inits, kernel compiles
    sync()

    # peak memory of one full forward+backward
    if device.type == "cuda":
        run(x_full, sigma_full)  # compile for the full size first: CUDA memory is exact
        sync()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        run(x_full, sigma_full)
        sync()
        peak = torch.cuda.max_memory_allocated(device) - base
        peak_kind = "cuda max_memory_allocated above baseline"
    else:
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        run(x_full, sigma_full)
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) * 1024  # Linux: KiB
        peak_kind = "growth of peak RSS during the first full run (coarse)"

    # bytes saved for backward
    seen = {}

    def pack(t):
        seen.setdefault((t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()), t.untyped_storage().nbytes())
        return t

    with saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn(x_full, sigma_full)
    saved = sum(seen.values())
    del loss

    if cfg.get("skip_timing"):
        m = None
    else:
        timer = benchmark.Timer(
            stmt="run(x, sigma)",
            globals={"run": run, "x": x_full, "sigma": sigma_full},
            num_threads=torch.get_num_threads(),
        )
        m = timer.blocked_autorange(min_run_time=cfg["min_run_time"])
    return {
        "variant": cfg["variant"],
        "dtype": cfg["dtype"],
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "batch": B,
        "shape": list(shape),
        "backends_ran": sorted({f"{op}:{be}" for op, be in ran}),
        "fwd_bwd_ms_median": m and m.median * 1e3,
        "fwd_bwd_ms_iqr": m and m.iqr * 1e3,
        "fwd_bwd_ms_min_block": m and min(m.times) * 1e3,  # robust to other processes on shared CPUs
        "runs": m and len(m.times),
        "peak_mem_bytes": peak,
        "peak_mem_kind": peak_kind,
        "saved_for_backward_bytes": saved,
        "bytes_per_BxD": B * math.prod(shape) * x_full.element_size(),
        "torch": torch.__version__,
    }


# ---------------------------------------------------------------------------------------
# Parent: spawn children, print a table, write JSON
# ---------------------------------------------------------------------------------------
def _spawn(cfg: dict, extra_env: dict) -> dict:
    """Run one measurement in a fresh Python process; return its result dict."""
    env = dict(os.environ, **extra_env)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(cfg)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"{cfg['variant']} {cfg['dtype']} failed (exit {proc.returncode})")
    return json.loads(lines[-1][len("RESULT ") :])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--batch", type=int, default=None, help="B (default 128 on CUDA, 64 on CPU)")
    ap.add_argument("--shape", default=None, help="sample shape, e.g. 3,64,64 (default; 3,32,32 on CPU)")
    ap.add_argument("--dtypes", default="fp32,bf16", help="comma list of fp32, bf16, fp16")
    ap.add_argument("--fused-backend", default=None, help="backend for the fused loss (default auto)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--min-run-time", type=float, default=2.0, help="seconds of timed runs per case")
    ap.add_argument("--out", default=None, help="write the raw results as JSON here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        print("RESULT " + json.dumps(_child(json.loads(args.child))), flush=True)
        return 0

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch or (128 if device == "cuda" else 64)
    shape = [int(v) for v in (args.shape or ("3,64,64" if device == "cuda" else "3,32,32")).split(",")]
    results = []
    for dt in args.dtypes.split(","):
        if dt not in DTYPES:
            ap.error(f"unknown dtype {dt!r}")
        for variant in ("naive", "fused"):
            cfg = dict(
                variant=variant,
                dtype=dt,
                device=device,
                batch=batch,
                shape=shape,
                fused_backend=args.fused_backend,
                min_run_time=args.min_run_time,
                threads=args.threads,
            )
            t0 = time.time()
            res = _spawn(cfg, {})
            if device == "cpu":
                # Peak memory in a separate process: glibc told to serve every block ≥ 64 KiB by
                # mmap and unmap it on free, so the peak RSS follows the peak of live memory
                # (this makes every allocation page-fault, hence not used for the timing).
                mem = _spawn(dict(cfg, skip_timing=True), {"MALLOC_MMAP_THRESHOLD_": "65536"})
                res["peak_mem_bytes"], res["peak_mem_kind"] = (
                    mem["peak_mem_bytes"],
                    mem["peak_mem_kind"] + ", MALLOC_MMAP_THRESHOLD_=65536",
                )
            res["wall_s"] = round(time.time() - t0, 1)
            results.append(res)

    print(f"device={device} ({results[0]['device_name']}, {results[0]['threads']} threads)  B={batch}  shape={shape}")
    print(
        f"{'dtype':6} {'variant':7} {'fwd+bwd ms':>11} {'iqr':>7} {'min':>7} {'peak MiB':>9} {'saved MiB':>9} {'[B,D] MiB':>9}  backends"
    )
    for r in results:
        print(
            f"{r['dtype']:6} {r['variant']:7} {r['fwd_bwd_ms_median']:11.3f} {r['fwd_bwd_ms_iqr']:7.3f} {r['fwd_bwd_ms_min_block']:7.3f} "
            f"{r['peak_mem_bytes'] / 2**20:9.2f} {r['saved_for_backward_bytes'] / 2**20:9.2f} {r['bytes_per_BxD'] / 2**20:9.2f}  "
            f"{','.join(r['backends_ran']) or '-'}"
        )
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            meta = {
                "argv": sys.argv,
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "platform": platform.platform(),
                "cpu_count": os.cpu_count(),
            }
            json.dump(dict(meta, results=results), f, indent=2)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
