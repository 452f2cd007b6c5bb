"""Host time of one small op call on the Triton path, up to the kernel launch (launch stubbed).

    python tests/host_time_check.py [--iters N] [--shape 256,2]

A GPU finishes a small fused step in a few µs, so what bounds a small-state loop on CUDA is the
Python path before the launch: validation, backend resolution, the seed draw, the launch
configuration. This measures that path on CPU without a GPU: ``TRITON_INTERPRET=1`` lets the
ops take the Triton path on CPU tensors, and each ``kernel[grid](...)`` launch is replaced by a
no-op that only counts its calls. It does not include Triton's own launcher (the driver call
and argument packing, measured on hardware) nor a CUDA ``randint`` for the seed (a CPU one is
timed instead: into a reused buffer, as CPU calls draw it; CUDA calls draw into a reused per-stream
buffer too, and a fresh ``torch.randint`` during CUDA-graph capture; DSM draws into a per-stream pool of
buffers no live graph holds). Where the lean DSM path keys a cache by the CUDA stream, the
``torch.cuda.current_stream`` call it makes on CUDA (about a µs) is not in these CPU figures.
The DSM row is one ``dsm_loss`` forward and backward on the Triton path (perturb, loss and loss
backward: three fused ops, noise regenerated as on CUDA) around a one-op score; its floor row is that
score with a one-op loss and the autograd engine's backward, which no loss can avoid.
The ``dsm per op`` rows split that call at its launches; the ``over floor`` rows read issue 11's target
per fused op from them (:func:`_over_floor`).
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
#: while a list: the DSM stubs append (kernel name, timer()) at each launch (the per-op DSM rows)
STAMPS = {"list": None, "timer": time.thread_time}


class _StubKernel:
    """Stands in for a ``@triton.jit`` kernel: ``kernel[grid](*args, **kw)`` only counts."""

    def __getitem__(self, grid):
        return self._launch

    @staticmethod
    def _launch(*args, **kwargs):
        CALLS["launches"] += 1


class _StampKernel(_StubKernel):
    """A stub that also notes when it was launched, while :data:`STAMPS` collects."""

    def __init__(self, name):
        self.name = name

    def __getitem__(self, grid):
        return self._stamp

    def _stamp(self, *args, **kwargs):
        CALLS["launches"] += 1
        if STAMPS["list"] is not None:
            STAMPS["list"].append((self.name, STAMPS["timer"]()))


def stub_kernels() -> None:
    ks._langevin_step_kernel = _StubKernel()
    kc._corrector_norms_kernel = _StubKernel()
    kn._snr_step_kernel = _StubKernel()
    for name in ("_dsm_perturb_kernel", "_dsm_perturb_flat_kernel"):
        setattr(kd, name, _StampKernel("perturb"))
    kd._dsm_loss_partial_kernel = _StampKernel("loss partial")
    kd._dsm_loss_reduce_kernel = _StampKernel("loss reduce")
    kd._dsm_loss_backward_kernel = _StampKernel("backward")


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
    out = {k: round(statistics.median(v), 2) for k, v in times.items()}
    out.update(dsm_per_op(x, w, iters, rounds, timer))
    return out


def dsm_per_op(x, w, iters=2000, rounds=9, timer=time.thread_time) -> dict:
    """The DSM row split at its launches (thread CPU time stamped by the stubs and around the score):
    each op's host path up to its kernel launch, as the ≤ 15 µs per small call is judged per launch,
    beside the autograd floor's corresponding pieces. Each stamp costs a clock read (~0.4 µs)."""
    stamps = []

    def score(xt, sig):
        stamps.append(("score in", timer()))
        s = xt * w
        stamps.append(("score out", timer()))
        return s

    def one():
        stamps.append(("call", timer()))
        loss = fl.dsm_loss(score, x, 0.5, backend="triton")
        stamps.append(("loss returned", timer()))
        loss.backward()
        stamps.append(("backward returned", timer()))

    def floor():
        stamps.append(("call", timer()))
        s = x * w
        stamps.append(("score out", timer()))
        loss = s.sum()
        stamps.append(("loss returned", timer()))
        loss.backward()
        stamps.append(("backward returned", timer()))

    pieces = {
        "dsm per op: perturb (call -> its launch)": ("call", "perturb", one),
        "dsm per op: loss fwd (score out -> partial launch)": ("score out", "loss partial", one),
        "dsm per op: loss fwd (partial -> reduce launch)": ("loss partial", "loss reduce", one),
        "dsm per op: loss fwd (reduce launch -> mean returned)": ("loss reduce", "loss returned", one),
        "dsm per op: backward (backward() -> its launch)": ("loss returned", "backward", one),
        "dsm per op: backward (launch -> returned: score's backward)": ("backward", "backward returned", one),
        "floor per op: loss fwd (score out -> sum returned)": ("score out", "loss returned", floor),
        "floor per op: backward (backward() -> returned)": ("loss returned", "backward returned", floor),
    }
    runs = {"dsm": one, "floor": floor}
    per_round = {k: [] for k in pieces}
    STAMPS["list"], STAMPS["timer"] = stamps, timer
    try:
        with torch.enable_grad():
            for fn in runs.values():
                fn()
            for _ in range(rounds):
                for name, fn in runs.items():  # interleaved
                    stamps.clear()
                    for _ in range(iters):
                        fn()
                    at = _segments(stamps)
                    for k, (a, b, f) in pieces.items():
                        if f is fn:
                            per_round[k].append(statistics.fmean(at[(a, b)]) * 1e6)
    finally:
        STAMPS["list"] = None
    out = {k: round(statistics.median(v), 2) for k, v in per_round.items()}
    out.update(_over_floor(per_round))
    return out


def _over_floor(per_round: dict) -> dict:
    """Issue 11's reading per fused op: each op's host time over the autograd floor's corresponding piece,
    the median over rounds of the per-round differences. Perturb has no floor piece (the floor perturbs
    nothing): its whole call-to-launch time; loss forward: score out -> mean returned, less the floor's
    sum; backward: backward() -> returned, less the floor's backward (both run the score's backward)."""
    p = "dsm per op: "
    rounds = range(len(per_round[p + "perturb (call -> its launch)"]))
    loss = [sum(per_round[p + "loss fwd (" + k + ")"][r] for k in _LOSS_PIECES) for r in rounds]
    back = [sum(per_round[p + "backward (" + k + ")"][r] for k in _BACKWARD_PIECES) for r in rounds]
    floor_loss = per_round["floor per op: loss fwd (score out -> sum returned)"]
    floor_back = per_round["floor per op: backward (backward() -> returned)"]
    perturb = per_round[p + "perturb (call -> its launch)"]
    return {
        "over floor: perturb (no floor piece)": round(statistics.median(perturb), 2),
        "over floor: loss fwd": round(statistics.median(a - b for a, b in zip(loss, floor_loss)), 2),
        "over floor: backward": round(statistics.median(a - b for a, b in zip(back, floor_back)), 2),
    }


_LOSS_PIECES = ("score out -> partial launch", "partial -> reduce launch", "reduce launch -> mean returned")
_BACKWARD_PIECES = ("backward() -> its launch", "launch -> returned: score's backward")


def _segments(stamps) -> dict:
    """(from, to) -> durations: for each stamp, the time since the latest earlier stamp of each name."""
    last, out = {}, {}
    for name, t in stamps:
        if name == "call":
            last = {}
        for prev, t0 in last.items():
            out.setdefault((prev, name), []).append(t - t0)
        last[name] = t
    return out


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
