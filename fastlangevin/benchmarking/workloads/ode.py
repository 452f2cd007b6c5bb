"""Benchmark: NFE and wall time of the PF-ODE solvers at the same accuracy (rk45 vs fixed steps).

    error = max |x_eps − x*_eps| / max |x*_eps|,   x* the exact flow of Gaussian data N(μ, s² I)

The score is the closed-form Gaussian score (cheap: the timings are the solver's own cost, the fused
updates, the per-step host work and, for rk45, its one sync per attempted step; with a network score
the NFE column is what scales). rk45 runs at ``rtol = atol = tol``; each fixed-step method is then given
the fewest uniform steps (doubling, then bisection) whose error is at most rk45's, and timed there.
``run(...)`` returns one dict per method (the lead wires it into the benchmark engine).
"""

from __future__ import annotations

import time
from typing import Dict, List, Sequence

import torch

from ...probability_flow import ode_sample
from ...sde import VESDE, VPSDE

MU, S2 = 0.5, 0.09


def _gaussian(sde):
    def var(t):
        if isinstance(sde, VESDE):
            return S2 + sde.sigma(t) ** 2
        m = sde.marginal_mean_scale(t)
        return 1.0 + m * m * (S2 - 1.0)

    def score(x, t):
        td = t.double().reshape((-1,) + (1,) * (x.dim() - 1))
        m = sde.marginal_mean_scale(td)
        return (-(x.double() - m * MU) / var(td)).to(x.dtype)

    def flow(x1, eps):
        te, t1 = torch.tensor(eps, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
        r = torch.sqrt(var(te) / var(t1))
        return sde.marginal_mean_scale(te) * MU + (x1.double() - sde.marginal_mean_scale(t1) * MU) * r

    return score, flow


def _timed(fn, device, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return out, best


def run(
    sde: str = "vp",
    *,
    batch: int = 256,
    dim: int = 64,
    tol: float = 1e-5,
    methods: Sequence[str] = ("euler", "heun", "rk4"),
    device=None,
    dtype=torch.float32,
    backend=None,
    repeats: int = 3,
    max_fixed_steps: int = 1 << 14,
) -> List[Dict]:
    """Rows ``{sde, method, n_steps, nfe, error, wall_s, reached, tol, batch, dim, device, backend, dtype}``,
    rk45 first; ``reached=False`` (and None figures) where a fixed-step method did not match rk45's error
    within ``max_fixed_steps`` steps (e.g. fp32 rounding floors Euler's error)."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    s = VPSDE() if sde == "vp" else VESDE() if sde == "ve" else None
    if s is None:
        raise ValueError(f"sde must be 've' or 'vp', got {sde!r}")
    score, flow = _gaussian(s)
    g = torch.Generator().manual_seed(0)
    x1 = (torch.randn(batch, dim, generator=g, dtype=torch.float64) * s.prior_std).to(dev, dtype)
    exact = flow(x1.cpu(), s.sampling_eps)
    scale = exact.abs().max().item()

    def err(x):
        return (x.double().cpu() - exact).abs().max().item() / scale

    common = dict(sde=sde, batch=batch, dim=dim, device=str(dev), backend=backend or "auto", dtype=str(dtype))
    (x, nfe), wall = _timed(
        lambda: ode_sample(score, s, x1, method="rk45", rtol=tol, atol=tol, return_nfe=True, backend=backend),
        dev,
        repeats,
    )
    target = err(x)
    rows = [dict(common, method="rk45", n_steps=None, nfe=nfe, error=target, wall_s=wall, tol=tol, reached=True)]
    for m in methods:

        def at(n, m=m):
            return ode_sample(score, s, x1, method=m, n_steps=n, return_nfe=True, backend=backend)

        lo, hi = 0, 1
        while err(at(hi)[0]) > target:  # doubling: the error shrinks monotonically at these step counts
            lo, hi = hi, hi * 2
            if hi > max_fixed_steps:
                break
        if hi > max_fixed_steps:
            rows.append(dict(common, method=m, n_steps=None, nfe=None, error=None, wall_s=None, tol=tol, reached=False))
            continue
        while hi - lo > max(1, hi // 64):  # bisection to ~1.5%
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if err(at(mid)[0]) <= target else (mid, hi)
        (xf, nfe_f), wall_f = _timed(lambda: at(hi), dev, repeats)
        rows.append(dict(common, method=m, n_steps=hi, nfe=nfe_f, error=err(xf), wall_s=wall_f, tol=tol, reached=True))
    return rows


if __name__ == "__main__":  # pragma: no cover - manual run: python -m fastlangevin.benchmarking.workloads.ode
    for name in ("vp", "ve"):
        for tol in (1e-3, 1e-5):
            for row in run(name, tol=tol):
                print(row)
