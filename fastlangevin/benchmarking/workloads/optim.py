"""Workload ``optim``: one SGLD step over the ~100 parameter tensors of a small ResNet.

    θ_i ← θ_i − lr ∇U_i + sqrt(2 lr) z_i    for every parameter tensor i

Shapes: CIFAR ResNet-32 (He et al. 2016: 3 stages × 5 basic blocks, widths w, 2w, 4w; conv
weights, BatchNorm weight and bias, 1×1 projection shortcuts, a 10-way linear head): 101 tensors,
0.46 M parameters at w = 16 (CPU default), 7.4 M at w = 64 (GPU). Gradients are fixed random
tensors (the step is what is timed, not the backward pass).

Providers (per-step time, median of repeats):

* ``eager_loop`` — SGLD as usually written: per parameter, ``p.add_(g, alpha=-lr)`` then
  ``p.add_(torch.randn_like(p), alpha=sqrt(2 lr))`` (two or three kernels per tensor);
* ``fastlangevin_torch`` — :class:`fastlangevin.optim.SGLD` with ``backend="torch"`` (foreach ops);
* ``fastlangevin_triton`` — the same with ``backend="triton"``: one multi-tensor launch (CUDA only;
  under the CPU interpreter it is skipped: interpreted timings mean nothing);
* ``posteriors`` — ``posteriors.sgmcmc.sgld.update(..., inplace=True)`` (normal-computing's
  per-leaf eager SGLD), when it imports; its log posterior is linear in θ, Σ_i ⟨θ_i, g_i⟩, so
  its gradient is the same fixed g — that call includes posteriors' torch.func gradient
  evaluation, which the other providers do not pay (noted in each row).

Check (before timing): with temperature 0 each provider's update equals θ − lr·g (to fp32
rounding: FMA or not), so a provider that skips or mis-scales a tensor fails.

``run(...) -> list[dict]``: one dict per provider (the lead wires it into the engine).
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..timing import time_cpu_interleaved, time_fn

LR = 1e-4


def resnet_shapes(width: int = 16, blocks_per_stage: int = 5, classes: int = 10) -> List[Tuple[int, ...]]:
    """Parameter shapes of a CIFAR ResNet (6 · blocks_per_stage + 2 layers) in model order."""
    shapes: List[Tuple[int, ...]] = [(width, 3, 3, 3), (width,), (width,)]
    c_in = width
    for stage in range(3):
        c = width * 2**stage
        for b in range(blocks_per_stage):
            shapes += [(c, c_in, 3, 3), (c,), (c,), (c, c, 3, 3), (c,), (c,)]
            if c_in != c:
                shapes += [(c, c_in, 1, 1), (c,), (c,)]
            c_in = c
    shapes += [(classes, c_in), (classes,)]
    return shapes


def _tensors(shapes, device, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(s, generator=g) * 0.1).to(device=device, dtype=dtype) for s in shapes]


def _eager_loop(params, grads, lr, temperature):
    b = math.sqrt(2 * lr * temperature)

    def step():
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.add_(g, alpha=-lr)
                if b:
                    p.add_(torch.randn_like(p), alpha=b)

    return step


def _fastlangevin(backend):
    def make(params, grads, lr, temperature):
        from ...optim import SGLD

        for p, g in zip(params, grads):
            p.grad = g
        opt = SGLD(params, lr=lr, temperature=temperature, seed=0, backend=backend)
        return opt.step

    return make


def _posteriors(params, grads, lr, temperature):
    import posteriors

    # posteriors ascends the log posterior: log p = −U, whose gradient is −g. Params as a dict
    # (a pytree of named leaves, as for a model's named_parameters()).
    neg = {str(i): -g for i, g in enumerate(grads)}

    def log_post(ps, batch):
        return sum((ps[k] * neg[k]).sum() for k in ps), torch.tensor([])

    transform = posteriors.sgmcmc.sgld.build(log_post, lr=lr, temperature=temperature)
    state = transform.init({str(i): p for i, p in enumerate(params)})

    def step():
        transform.update(state, None, inplace=True)

    step.params = [state.params[str(i)] for i in range(len(params))]
    return step


PROVIDERS = {
    "eager_loop": _eager_loop,
    "fastlangevin_torch": _fastlangevin("torch"),
    "fastlangevin_triton": _fastlangevin("triton"),
    "posteriors": _posteriors,
}


def _available(name: str, device: torch.device) -> Optional[str]:
    """None if the provider can run here, else why not."""
    if name == "fastlangevin_triton" and device.type != "cuda":
        return "needs CUDA (the CPU interpreter's timings are meaningless)"
    if name == "posteriors":
        try:
            import posteriors  # noqa: F401
        except Exception as exc:
            return f"posteriors does not import ({type(exc).__name__}: {exc})"
    return None


def _check(name, device, dtype, shapes):
    """Temperature 0: one step must give θ − lr·g on every tensor."""
    params, grads = _tensors(shapes, device, dtype, 1), _tensors(shapes, device, dtype, 2)
    want = [p - LR * g for p, g in zip(params, grads)]
    step = PROVIDERS[name](params, grads, LR, 0.0)
    step()
    got = getattr(step, "params", params)
    for i, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=lambda m: f"{name}, tensor {i}: {m}")


def run(
    device: str = "cpu",
    width: Optional[int] = None,
    providers: Optional[Sequence[str]] = None,
    warmup_ms: float = 50.0,
    rep_ms: float = 300.0,
) -> List[Dict]:
    """Time one SGLD step per provider. Returns one dict per provider (skipped ones say why)."""
    dev = torch.device(device)
    width = width if width is not None else (64 if dev.type == "cuda" else 16)
    shapes = resnet_shapes(width)
    numel = sum(math.prod(s) for s in shapes)
    rows: List[Dict] = []
    steps = {}
    for name in providers or list(PROVIDERS):
        row = {
            "workload": "optim",
            "provider": name,
            "device": str(dev),
            "dtype": "float32",
            "n_tensors": len(shapes),
            "numel": numel,
            "width": width,
            "threads": torch.get_num_threads(),
        }
        rows.append(row)
        why = _available(name, dev)
        if why is not None:
            row["skipped"] = why
            continue
        _check(name, dev, torch.float32, shapes)
        params, grads = _tensors(shapes, dev, torch.float32, 3), _tensors(shapes, dev, torch.float32, 4)
        steps[name] = PROVIDERS[name](params, grads, LR, 1.0)
    if dev.type == "cuda":
        timings = {name: time_fn(fn, dev, warmup_ms=warmup_ms, rep_ms=rep_ms) for name, fn in steps.items()}
    else:  # round-robin, so a change of load on a shared machine hits every provider alike
        timings = time_cpu_interleaved(steps, warmup_ms=warmup_ms, rep_ms=rep_ms)
    for row in rows:
        t = timings.get(row["provider"])
        if t is None:
            continue
        row.update(
            median_ms=t.median_ms,
            p20_ms=t.p20_ms,
            p80_ms=t.p80_ms,
            reps=t.reps,
            timing=t.method,
            steps_per_s=1e3 / t.median_ms,
        )
        if row["provider"] == "posteriors":
            row["note"] = "includes posteriors' torch.func gradient of a linear log posterior"
    return rows


if __name__ == "__main__":  # python -m fastlangevin.benchmarking.workloads.optim
    import json

    for r in run():
        print(json.dumps(r))
