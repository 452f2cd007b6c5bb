"""Quick CPU speed check of the ops against the plain PyTorch they replace (a developer's
script; the committed benchmark is ``fastlangevin bench``).

    python tests/speed_check.py step --shape 256,2 [--threads 1] [--cpu-time]
    python tests/speed_check.py dsm --shape 128,3,64,64

Interleaved rounds, median per provider, µs, and speed-ups as the median of the per-round
ratios; each round runs the providers in a rotated order
(a fixed order lets one provider always inherit the caches, the allocator state and the load
left by the same predecessor: at 2**20 that alone moved the eager/fastlangevin ratio by ~0.2 on
a loaded machine). ``--cpu-time`` times the thread's CPU time (steadier than wall time on a
loaded machine). The step's ``floor`` row runs only the torch ops the bitwise stream needs, with
none of the checks: for a one-chunk state the straight path's seed draw, chunk reseed,
``normal_``, ``mul`` and two ``add_``; for a larger one (one thread) the serial chunk walk's
reseed, ``normal_``, ``mul`` and two ``add_`` per 2**16 elements. ``noise`` (large states) is
the walk's reseeds and ``normal_`` alone, next to ``randn_like`` (the eager loop's noise): the
share of the time no arrangement of the arithmetic can save.
Prints one line per run.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import timeit

import torch

import fastlangevin as fl

TIMER = [timeit.default_timer]
LAST_ROUNDS: dict = {}  # provider -> its per-round times of the last _interleaved call


def _interleaved(fns: dict, iters: int, rounds: int) -> dict:
    res = {k: [] for k in fns}
    keys = list(fns)
    timer = TIMER[0]
    for r in range(rounds):
        for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
            f = fns[k]
            t0 = timer()
            for _ in range(iters):
                f()
            res[k].append((timer() - t0) / iters * 1e6)
    LAST_ROUNDS.clear()
    LAST_ROUNDS.update(res)
    return {k: statistics.median(v) for k, v in res.items()}


def _speedup(base: str, ours: str) -> float:
    """Median over rounds of that round's base/ours time ratio: both were timed close together,
    so load that drifts between rounds cancels (steadier than a ratio of medians)."""
    return statistics.median(b / o for b, o in zip(LAST_ROUNDS[base], LAST_ROUNDS[ours]))


def step(shape, rounds):
    eps = 0.01
    x, s = torch.randn(shape), torch.randn(shape)
    fns = {
        "textbook": lambda: x + eps * s + math.sqrt(2 * eps) * torch.randn_like(x),
        "eager_inplace": lambda: x.add_(s, alpha=eps).add_(torch.randn_like(x), alpha=math.sqrt(2 * eps)),
        "fl.langevin_step_": lambda: fl.langevin_step_(x, s, eps),
    }
    if _straight_plan(x, s, eps):
        fns["floor"] = _floor_ops(x, s, eps)
    elif torch.get_num_threads() == 1:
        fns["floor"], fns["noise"] = _walk_ops(x, s, eps)
        fns["randn_like"] = lambda: torch.randn_like(x)
    m = _interleaved(fns, max(3, min(2000, int(2e6 / x.numel()))), rounds)
    ours = "fl.langevin_step_"
    return m, {"vs textbook": _speedup("textbook", ours), "vs eager in place": _speedup("eager_inplace", ours)}


def _straight_plan(x, s, eps):
    """The straight path's plan for x (a one-chunk state), or None (several chunks)."""
    from fastlangevin.fallback.chunks import thread_scratch

    fl.langevin_step_(x, s, eps)  # builds the thread's plan for this shape
    plan = thread_scratch().views.get((x.shape, 0))
    return plan if plan and plan[0] is not None and len(plan) == 3 else None


def _floor_ops(x, s, eps):
    """The straight path's torch ops alone, on its buffers (no checks, no bookkeeping)."""
    from fastlangevin._rng import SEED_HIGH, chunk_seed
    from fastlangevin.fallback.chunks import thread_scratch
    from fastlangevin.fallback.langevin_step import FP32_ONE

    st = thread_scratch()
    _, fill, noise = _straight_plan(x, s, eps)
    b = math.sqrt(2 * eps)

    def ops():
        st.gen.manual_seed(chunk_seed(st.seed.random_(0, SEED_HIGH).item(), 0))
        fill.normal_(0.0, b, generator=st.gen)
        x.addcdiv_(s, FP32_ONE, value=eps)
        x.add_(noise)

    return ops


def _walk_ops(x, s, eps):
    """The serial chunk walk's torch ops alone (``floor``), and its noise draws alone (``noise``),
    on views made once: for a state of several 2**16 chunks at sample offset 0."""
    from fastlangevin._rng import SEED_HIGH, TORCH_RNG_CHUNK, chunk_seed
    from fastlangevin.fallback.chunks import thread_scratch
    from fastlangevin.fallback.langevin_step import FP32_ONE

    C, st = TORCH_RNG_CHUNK, thread_scratch()
    b = math.sqrt(2 * eps)
    xf, sf = x.view(-1), s.view(-1)
    pieces = [(k, xf[i : i + C], sf[i : i + C]) for k, i in enumerate(range(0, xf.numel(), C))]

    def ops():
        seed = st.seed.random_(0, SEED_HIGH).item()
        for k, xp, sp in pieces:
            st.gen.manual_seed(chunk_seed(seed, k))
            z = st.noise[: xp.numel()]
            z.normal_(0.0, b, generator=st.gen)
            xp.addcdiv_(sp, FP32_ONE, value=eps)
            xp.add_(z)

    def noise():
        seed = st.seed.random_(0, SEED_HIGH).item()
        for k, xp, _ in pieces:
            st.gen.manual_seed(chunk_seed(seed, k))
            st.noise[: xp.numel()].normal_(0.0, b, generator=st.gen)

    return ops, noise


def dsm(shape, rounds):
    x = torch.randn(shape)
    if len(shape) == 2:
        lin = torch.nn.Linear(shape[1], shape[1])
        f = lambda xt, sig: lin(xt)  # noqa: E731
    else:
        w = torch.nn.Parameter(torch.ones(1))
        f = lambda xt, sig: -xt * w  # noqa: E731

    def naive():
        z = torch.randn_like(x)
        s = f(x + 0.5 * z, 0.5)
        (0.5 * 0.25 * ((s + z / 0.5) ** 2).flatten(1).sum(1)).mean().backward()

    fns = {
        "naive": naive,
        "fl.dsm_loss": lambda: fl.dsm_loss(f, x, 0.5).backward(),
        "fl.dsm_loss(save_noise=False)": lambda: fl.dsm_loss(f, x, 0.5, save_noise=False).backward(),
    }
    m = _interleaved(fns, max(2, min(300, int(1e5 / x.numel()))), rounds)
    return m, {k: _speedup("naive", k) for k in m if k != "naive"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["step", "dsm"])
    p.add_argument("--shape", default="256,2")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--cpu-time", action="store_true", help="time the thread's CPU time, not wall time")
    a = p.parse_args(argv)
    if a.cpu_time:
        TIMER[0] = time.thread_time
    torch.set_num_threads(a.threads)
    shape = tuple(int(v) for v in a.shape.split(","))
    m, ratio = (step if a.what == "step" else dsm)(shape, a.rounds)
    us = {k: round(v, 1) for k, v in m.items()}
    print(
        a.what, shape, f"threads={a.threads}", "median us:", us, "speed-up:", {k: round(v, 2) for k, v in ratio.items()}
    )


if __name__ == "__main__":
    main()
