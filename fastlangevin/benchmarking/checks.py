"""Correctness checks run on every provider before it is timed.

For an update ``out = x + a * s + b * z`` (the Langevin step, the corrector): noise off, ``out`` equals
``x + a * s`` (fp32 math, fp64 for float64, in the state's dtype) to 2 ulp of ``|x| + |a s|`` (room for an
FMA or an eager bf16 double rounding); noise on, ``r = (out - x - a s) / b`` must look like fresh N(0, 1)
draws independent of the inputs (mean, std, slopes on ``s`` and ``x``, tail ``P(|r| > 2)``; each within
6 standard errors plus the storage rounding); a second call differs. Sums run in float64 over chunks.
"""

import math
from collections.abc import Callable, Iterator

import torch

from .. import reference
from .engine import CheckFailed

CHUNK = 1 << 22
#: P(|Z| > 2) for a standard normal.
NORMAL_TAIL_2 = math.erfc(2 / math.sqrt(2))
#: Standard errors allowed on each statistic (a false alarm is ~1e-9 per bound).
Z_BOUND = 6.0


def _chunks(*tensors: torch.Tensor, dtype: torch.dtype = torch.float64) -> Iterator[list[torch.Tensor]]:
    """Matching ``CHUNK``-element pieces of the flattened ``tensors``, in ``dtype``."""
    flat = [t.reshape(-1) for t in tensors]
    for i in range(0, flat[0].numel(), CHUNK):
        yield [f[i : i + CHUNK].to(dtype) for f in flat]


def _sums(fn: Callable[..., list[torch.Tensor]], *tensors: torch.Tensor) -> list[float]:
    """``Σ fn(*chunks)`` over float64 chunks of the flattened ``tensors`` (no full-size temporaries)."""
    return sum(torch.stack(fn(*chunks)) for chunks in _chunks(*tensors)).tolist()


def expect(what: str, got: float, want: float, tol: float) -> float:
    """Raise :class:`CheckFailed` unless ``|got - want| <= tol`` (NaN fails); return ``got``."""
    if not abs(got - want) <= tol:
        raise CheckFailed(f"{what} is {got:.5g}, expected {want:.5g} ± {tol:.2g}")
    return got


def call_checked(fn: Callable, x: torch.Tensor, what: str, inplace: bool = False) -> torch.Tensor:
    """Run ``fn`` on a copy of ``x``, check the in-place (returns that copy, updated) or out-of-place
    (leaves it) contract and the output's shape, dtype and device; return a copy of the output."""
    xc = x.clone()
    out = fn(xc)
    if not isinstance(out, torch.Tensor):
        raise CheckFailed(f"{what}: returned {type(out).__name__}, expected a tensor")
    if inplace and out.data_ptr() != xc.data_ptr():
        raise CheckFailed(f"{what}: in-place provider returned a new tensor instead of updating x")
    if not inplace and (out.data_ptr() == xc.data_ptr() or not torch.equal(xc, x)):
        raise CheckFailed(f"{what}: out-of-place provider modified x")
    for prop in ("shape", "dtype", "device"):
        if getattr(out, prop) != getattr(x, prop):
            raise CheckFailed(f"{what}: output {prop} {getattr(out, prop)} != state {prop} {getattr(x, prop)}")
    return out.clone()


def check_deterministic(out: torch.Tensor, x: torch.Tensor, s: torch.Tensor, a: float) -> dict[str, float]:
    """``out == x + a * s`` (fp32 math, stored in x's dtype) to 2 ulp of the storage dtype."""
    cdt, worst = torch.float64 if x.dtype == torch.float64 else torch.float32, 0.0
    for oc, xc, sc in _chunks(out, x, s, dtype=cdt):
        err = (oc - reference.langevin_step(xc, sc, a).to(x.dtype).to(cdt)).abs()
        if not torch.isfinite(err).all():
            raise CheckFailed("noise-off output: non-finite values")
        scale = (xc.abs() + (sc * a).abs()).clamp_min(torch.finfo(cdt).tiny)
        worst = max(worst, float((err / scale).max()) / torch.finfo(x.dtype).eps)
    what = f"noise-off output: its difference from x + a*s in ulp of {x.dtype}"
    return {"max_err_ulp": expect(what, worst, 0.0, 2.0)}


def check_noise(out, x, s, a: float, b: float, what: str = "noise", skip=()) -> dict[str, float]:
    """Raise :class:`CheckFailed` unless ``r = (out - x - a s) / b`` looks like N(0, 1) draws; return the
    figures. ``skip``: statistics not to test (``coef_s`` when ``a`` was fitted by regression on s)."""
    n = out.numel()

    def sums(o, xc, sc):
        r = (o - xc - a * sc) / b
        return [r.sum(), (r * r).sum(), sc.sum(), (sc * sc).sum(), (r * sc).sum(), xc.sum(), (xc * xc).sum(),
                (r * xc).sum(), (r.abs() > 2).sum().double(), (o * o).sum()]  # fmt: skip

    sr, srr, ss, sss, srs, sx, sxx, srx, tail, soo = _sums(sums, out, x, s)
    mean = sr / n

    def coef(sv, svv, srv):  # least-squares slope of r on v
        mv = sv / n
        vv = svv / n - mv * mv
        return (srv / n - mean * mv) / vv if vv > 0 else math.nan

    std = math.sqrt(max(srr / n - mean * mean, 0.0))
    stats = dict(n=n, mean=mean, std=std, coef_s=coef(ss, sss, srs), coef_x=coef(sx, sxx, srx), tail2=tail / n)
    if not all(math.isfinite(v) for v in stats.values()):
        raise CheckFailed(f"{what}: non-finite statistics {stats}")
    rounding = 2.0 * torch.finfo(out.dtype).eps * math.sqrt(soo / n) / b
    se, tail_se = 1.0 / math.sqrt(n), math.sqrt(NORMAL_TAIL_2 * (1 - NORMAL_TAIL_2) / n)
    bounds = {  # statistic: (expected value, allowed deviation)
        "mean": (0.0, Z_BOUND * se + rounding),
        "std": (1.0, Z_BOUND * se / math.sqrt(2.0) + rounding),
        "coef_s": (0.0, Z_BOUND * se + rounding),
        "coef_x": (0.0, Z_BOUND * se + rounding),
        "tail2": (NORMAL_TAIL_2, Z_BOUND * tail_se + 0.25 * rounding),
    }
    for name, (want, tol) in bounds.items():
        if name not in skip:
            expect(f"{what} (n={n}): {name} of (out - x - a*s)/b", stats[name], want, tol)
    return stats


def check_fresh(out1: torch.Tensor, out2: torch.Tensor) -> float:
    """Two calls on the same inputs must draw different noise; returns the fraction that differ."""
    (diff,) = _sums(lambda a, b: [(a != b).sum().double()], out1, out2)
    frac = diff / max(out1.numel(), 1)
    if frac < 0.9:
        raise CheckFailed(f"noise: two calls on the same input agree on {1 - frac:.1%} of elements (noise not fresh)")
    return frac


def chi_mean(d: int) -> float:
    """E||z|| for z ~ N(0, I_d)."""
    return math.sqrt(2.0) * math.exp(math.lgamma((d + 1) / 2) - math.lgamma(d / 2))


def check_snr_update(out, x, s, snr: float, alpha: float) -> dict[str, float]:
    """The SNR corrector ``out = x + ε s + sqrt(2ε) z``, one ``ε = 2 α (snr · mean‖z_i‖ / mean‖s_i‖)²`` for
    the batch: ε fitted by regression of ``out - x`` on ``s`` must match the formula with the chi mean
    ``E‖z_i‖`` for the call's ‖z‖ (6 standard errors of the fit plus mean‖z_i‖'s spread), and the
    residual ``(out - x - ε s) / sqrt(2ε)`` pass :func:`check_noise` (but ``coef_s``, zero by the fit)."""
    rows = s.reshape(s.shape[0], -1)
    (B, d), n = rows.shape, rows.numel()
    s_norm_mean = float(sum(r.double().norm(dim=1).sum() for r in rows.split(max(1, CHUNK // d)))) / B
    eps_pred = 2.0 * alpha * (snr * chi_mean(d) / s_norm_mean) ** 2
    sds, sss = _sums(lambda o, xc, sc: [((o - xc) * sc).sum(), (sc * sc).sum()], out, x, s)
    eps_fit = sds / sss
    if not (math.isfinite(eps_fit) and eps_fit > 0):
        raise CheckFailed(f"corrector output: fitted step size {eps_fit!r} is not a positive number")
    # relative standard errors: the fit (noise sqrt(2ε) z against Σ s²) and ε's dependence on mean‖z_i‖
    se = math.sqrt(2.0 / (eps_pred * sss)) + math.sqrt(2.0 / n)
    tol = Z_BOUND * se + 4 * torch.finfo(x.dtype).eps
    what = f"corrector output: fitted step size {eps_fit:.5g} / 2α(r E‖z‖/mean‖s‖)² = {eps_pred:.5g}"
    expect(what, eps_fit / eps_pred, 1, tol)
    b = math.sqrt(2.0 * eps_fit)
    noise = check_noise(out, x, s, eps_fit, b, what="corrector output noise", skip=("coef_s",))
    return {"eps_fit": eps_fit, "eps_formula": eps_pred, "noise": noise}
