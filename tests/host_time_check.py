"""Host time of one small op call on the Triton path, up to the kernel launch (launch stubbed).

    python tests/host_time_check.py [--iters N] [--shape 256,2]

A GPU finishes a small fused step in a few µs, so what bounds a small-state loop on CUDA is the
Python path before the launch: validation, backend resolution, the seed draw, the launch
configuration. This measures that path on CPU without a GPU: ``TRITON_INTERPRET=1`` lets the
ops take the Triton path on CPU tensors, and each ``kernel[grid](...)`` launch is replaced by a
no-op that only counts its calls. It does not include Triton's own launcher (the driver call
and argument packing, measured on hardware) nor a CUDA ``randint`` for the seed (a CPU one is
timed instead: into a reused buffer, as CPU calls draw it; CUDA calls draw into a reused per-stream
buffer too, and a fresh ``torch.randint`` during CUDA-graph capture).
The DSM row is one ``dsm_loss`` forward and backward on the Triton path (perturb, loss and loss
backward: three fused ops, noise regenerated as on CUDA) around a one-op score; its floor row is that
score with a one-op loss and the autograd engine's backward, which no loss can avoid.
Prints one JSON object: op → median µs per call over interleaved rounds, in the thread's CPU time
(``time.thread_time``: the path is CPU-bound, and on a loaded machine wall time also counts the
time the thread waited for a core; ``--wall`` times wall-clock instead).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402
from fastlangevin.kernels import corrector as kc  # noqa: E402
from fastlangevin.kernels import dsm as kd  # noqa: E402
from fastlangevin.kernels import langevin_step as ks  # noqa: E402
from fastlangevin.kernels import snr_step as kn  # noqa: E402

import fastlangevin as fl  # noqa: E402

CALLS = {"launches": 0}


class _StubKernel:
    """Stands in for a ``@triton.jit`` kernel: ``kernel[grid](*args, **kw)`` only counts."""

    def __getitem__(self, grid):
        return self._launch

    @staticmethod
    def _launch(*args, **kwargs):
        CALLS["launches"] += 1


def stub_kernels() -> None:
    ks._langevin_step_kernel = _StubKernel()
    kc._corrector_norms_kernel = _StubKernel()
    kn._snr_step_kernel = _StubKernel()
    for name in ("_dsm_perturb_kernel", "_dsm_perturb_flat_kernel", "_dsm_loss_partial_kernel"):
        setattr(kd, name, _StubKernel())
    kd._dsm_loss_reduce_kernel = kd._dsm_loss_backward_kernel = _StubKernel()


def _dsm(x, w, backend):
    fl.dsm_loss(lambda xt, sig: xt * w, x, 0.5, backend=backend).backward()


def _grad_for(fn, name=""):
    """Autograd on for the DSM rows (they record a graph), off for the samplers' ops."""
    return torch.enable_grad() if "dsm" in name else torch.no_grad()


def measure(shape=(256, 2), iters=2000, rounds=9, timer=time.thread_time) -> dict:
    torch.set_num_threads(1)
    x = torch.randn(shape)
    assert fl.backend_for(x, "triton") == "triton"  # resolved (and cached) with the real kernels
    stub_kernels()
    s = torch.randn(shape)
    rows = torch.full((shape[0],), 0.01)
    w = torch.tensor(-1.0, requires_grad=True)
    ops = {
        "langevin_step_ (in place)": lambda: fl.langevin_step_(x, s, 0.01, backend="triton"),
        "langevin_step (out of place)": lambda: fl.langevin_step(x, s, 0.01, backend="triton"),
        "langevin_step_ per-row step": lambda: fl.langevin_step_(x, s, rows, backend="triton"),
        "langevin_corrector_": lambda: fl.langevin_corrector_(x, s, 0.16, backend="triton"),
        # DSM on the Triton path, x̃ -> score -> loss -> backward (regenerated noise, the CUDA default);
        # the score is one op of autograd (x̃ * w); its floor row runs the same score and a one-op loss
        "dsm_loss fwd+bwd (3 fused ops)": lambda: _dsm(x, w, "triton"),
        "reference: dsm floor (score, sum, backward)": lambda: (x * w).sum().backward(),
        # for scale on a loaded machine: one small torch op, and the plain eager in-place step
        "reference: x.add_(s)": lambda: x.add_(s),
        "reference: eager in-place step": lambda: x.add_(s, alpha=0.01).add_(torch.randn_like(x), alpha=0.1),
    }
    for name, fn in ops.items():  # warm caches (launch configs, resolved backends)
        with _grad_for(fn, name):
            fn()
    times = {k: [] for k in ops}
    for _ in range(rounds):
        for name, fn in ops.items():
            with _grad_for(fn, name):
                t0 = timer()
                for _ in range(iters):
                    fn()
                times[name].append((timer() - t0) / iters * 1e6)
    return {k: round(statistics.median(v), 2) for k, v in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--shape", default="256,2")
    p.add_argument("--wall", action="store_true", help="wall-clock time instead of the thread's CPU time")
    a = p.parse_args(argv)
    shape = tuple(int(v) for v in a.shape.split(","))
    print(json.dumps(measure(shape, a.iters, timer=time.perf_counter if a.wall else time.thread_time)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
