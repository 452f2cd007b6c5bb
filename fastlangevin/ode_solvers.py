"""ODE solvers on the fused step op: euler, heun, rk4 (fixed steps) and rk45 (adaptive Dormand–Prince).

    dy/dt = F(y, t),  t from t0 to t1 (either direction),  y a list of tensors [B, ...] (dim 0 the batch)

The vector field is ``field(ys, t, sign) -> ks`` with ``ks[i] = sign · F(ys, t)[i]``: the solvers walk
τ = |t - t0| forwards with step h > 0 and fold the direction into the field, so every update is

    y ← y + h · k          (the fused op ``langevin_step`` with noise_scale = 0: its NOISE_NONE mode)

with no noise drawn, no seed drawn and the generator untouched. Stage combinations Σ a_ij k_j (the
Runge–Kutta tableaux have negative weights, which the op's non-negative step size cannot take) are
formed in torch first, then added by the op.

Host synchronisation: the fixed-step methods take their times and steps from the host (a uniform grid),
so they never sync. rk45 syncs once per attempted step (one ``.item()`` of the error norm decides accept
or reject; plus two at the start, for the initial step size).

Batch invariance: every operation is row-wise, so the fixed-step methods give a sample the same bits
alone and inside any batch. rk45 controls the error over the batch: one step-size sequence for all
samples, accepted when the *worst* sample's RMS scaled error ≤ 1. A sample's trajectory therefore
depends on its batch (the steps it is given), but each sample's local error stays within
``atol + rtol·|y|``, so results differ between batchings by no more than the solver's tolerance.

Resuming (checkpoints, :mod:`fastlangevin.sampling.checkpoint`): ``on_step(state)`` is called after
every step (rk45: every accepted step) with the solver's whole state, a dict; passing that dict
back as ``resume=`` continues bitwise as if never stopped. Fixed steps: ``{"steps", "ys"}``;
rk45: ``{"accepted", "rejected", "tau", "h", "ys", "k1", "done"}`` (τ = |t - t0| reached, h the next
step size, k1 the FSAL derivative at τ; the step-size controller is memoryless: h is its state).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .ops.langevin_step import langevin_step

FIXED_METHODS = ("euler", "heun", "rk4")
METHODS = FIXED_METHODS + ("rk45",)
#: Score evaluations per step of each fixed-step method.
NFE_PER_STEP = {"euler": 1, "heun": 2, "rk4": 4}

# Dormand–Prince 5(4) (Dormand & Prince 1980): nodes, stage weights, 5th-order weights, error weights.
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_DP_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)

Field = Callable[[List[torch.Tensor], float, float], List[torch.Tensor]]
SolverState = Dict[str, Any]
OnStep = Optional[Callable[[SolverState], None]]


def check_method(method) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    return method


def check_tolerances(rtol, atol) -> Tuple[float, float]:
    for name, v, strict in (("rtol", rtol, True), ("atol", atol, False)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
        if v < 0 or (strict and v == 0):
            raise ValueError(f"{name} must be {'> 0' if strict else '>= 0'}, got {v}")
    return float(rtol), float(atol)


def _axpy(y: torch.Tensor, k: torch.Tensor, h: float, backend) -> torch.Tensor:
    """y + h k by the fused op, deterministic mode (h >= 0)."""
    return langevin_step(y, k, h, 0.0, backend=backend)


def _combine(ks: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Σ w_j k_j over the non-zero weights (torch; the op then adds h times it)."""
    out = None
    for k, w in zip(ks, weights):
        if w == 0.0:
            continue
        out = k * w if out is None else out.add_(k, alpha=w)
    return out


def _stage(ys, kss, weights, h, backend):
    """ys + h Σ_j w_j k_j for every state tensor (kss[j] = the j-th stage's list of derivatives)."""
    return [_axpy(y, _combine([ks[i] for ks in kss], weights), h, backend) for i, y in enumerate(ys)]


def integrate_fixed(
    field: Field,
    ys,
    t0: float,
    t1: float,
    method: str,
    n_steps: int,
    backend,
    bar=None,
    *,
    resume: Optional[SolverState] = None,
    on_step: OnStep = None,
):
    """``n_steps`` uniform steps of euler / heun / rk4 from t0 to t1 (from step ``resume["steps"]``
    with state ``resume["ys"]`` when resuming)."""
    h = abs(t1 - t0) / n_steps
    sign = 1.0 if t1 > t0 else -1.0
    times = torch.linspace(t0, t1, n_steps + 1, dtype=torch.float64).tolist()
    start = 0
    if resume is not None:
        start, ys = int(resume["steps"]), list(resume["ys"])
    for j in range(start, n_steps):
        t = times[j]
        k1 = field(ys, t, sign)
        if method == "euler":
            ys = [_axpy(y, k, h, backend) for y, k in zip(ys, k1)]
        elif method == "heun":
            k2 = field([_axpy(y, k, h, backend) for y, k in zip(ys, k1)], times[j + 1], sign)
            ys = _stage(ys, [k1, k2], (1.0, 1.0), h / 2, backend)
        else:  # rk4
            tm = t + sign * h / 2
            k2 = field([_axpy(y, k, h / 2, backend) for y, k in zip(ys, k1)], tm, sign)
            k3 = field([_axpy(y, k, h / 2, backend) for y, k in zip(ys, k2)], tm, sign)
            k4 = field([_axpy(y, k, h, backend) for y, k in zip(ys, k3)], times[j + 1], sign)
            ys = _stage(ys, [k1, k2, k3, k4], (1.0, 2.0, 2.0, 1.0), h / 6, backend)
        if bar is not None:
            bar.update(1)
        if on_step is not None:
            on_step({"steps": j + 1, "ys": ys})
    return ys


def _sample_norms(vals, scales) -> torch.Tensor:
    """Per-sample RMS of val / scale over all elements of all state tensors: ``[B]`` (float64)."""
    sq, count = None, 0
    for v, sc in zip(vals, scales):
        r = (v.double() / sc).reshape(v.shape[0], -1)
        part = (r * r).sum(1)
        sq = part if sq is None else sq + part
        count += r.shape[1]
    return (sq / count).sqrt()


def _initial_step(field: Field, ys, k1, t0: float, sign: float, span: float, scale, backend) -> float:
    """Hairer, Nørsett & Wanner, "Solving ODEs I", II.4: 1 extra evaluation, 2 syncs."""
    sc0 = [scale(y) for y in ys]
    d0 = float(_sample_norms(ys, sc0).max())
    d1 = float(_sample_norms(k1, sc0).max())
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, span)
    f1 = field([_axpy(y, k, h0, backend) for y, k in zip(ys, k1)], t0 + sign * h0, sign)
    d2 = float(_sample_norms([a - b for a, b in zip(f1, k1)], sc0).max()) / h0
    h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** 0.2
    return min(100 * h0, h1, span)


def integrate_rk45(
    field: Field,
    ys,
    t0: float,
    t1: float,
    rtol: float,
    atol: float,
    backend,
    max_steps: int,
    bar=None,
    *,
    resume: Optional[SolverState] = None,
    on_step: OnStep = None,
):
    """Adaptive Dormand–Prince 5(4) with FSAL; the error norm is the worst sample's RMS scaled error.

    Returns (ys, n_accepted, n_rejected)."""
    span = abs(t1 - t0)
    sign = 1.0 if t1 > t0 else -1.0

    def scale(a, b=None):
        m = a.double().abs() if b is None else torch.maximum(a.double().abs(), b.double().abs())
        return atol + rtol * m

    if resume is None:
        k1 = field(ys, t0, sign)
        h = _initial_step(field, ys, k1, t0, sign, span, scale, backend)
        tau, accepted, rejected = 0.0, 0, 0
    else:
        ys, k1 = list(resume["ys"]), list(resume["k1"])
        tau, h, accepted, rejected = float(resume["tau"]), float(resume["h"]), resume["accepted"], resume["rejected"]
    while tau < span:
        if accepted + rejected >= max_steps:
            raise RuntimeError(
                f"rk45 did not reach t={t1} within max_steps={max_steps} attempted steps "
                f"(at t={t0 + sign * tau:.6g}, step {h:.3g}); loosen rtol/atol or raise max_steps"
            )
        last = tau + h >= span * (1 - 1e-12)
        if last:
            h = span - tau
        t = t0 + sign * tau
        kss = [k1]
        for i in range(1, 7):
            yi = _stage(ys, kss, _DP_A[i], h, backend)
            kss.append(field(yi, t + sign * _DP_C[i] * h, sign))
        y_new = yi  # stage 7 is evaluated at the 5th-order solution (FSAL)
        err = [_combine([ks[i] for ks in kss], _DP_E).mul_(h) for i in range(len(ys))]
        e = float(_sample_norms(err, [scale(a, b) for a, b in zip(ys, y_new)]).max())  # the one sync per step
        if not math.isfinite(e):
            raise FloatingPointError(
                f"rk45: the error estimate is not finite at t={t:.6g} (the state or score is NaN/Inf)"
            )
        if e <= 1.0:
            ys, k1 = y_new, kss[6]
            tau = span if last else tau + h
            accepted += 1
            if bar is not None:
                bar.update(1)
            h *= 10.0 if e == 0 else min(10.0, max(0.2, 0.9 * e**-0.2))
            if on_step is not None:
                on_step(
                    {"accepted": accepted, "rejected": rejected, "tau": tau, "h": h, "ys": ys, "k1": k1, "done": last}
                )
        else:
            rejected += 1
            h *= min(1.0, max(0.2, 0.9 * e**-0.2))
    return ys, accepted, rejected
