"""Chain diagnostics in torch: effective sample size, R̂ and Monte Carlo standard errors.

Input ``x``: ``[chains, draws, *event]`` (arviz's convention), any float dtype, any device; every
result is ``[*event]`` (one number per event element), float64, on ``x``'s device. Nothing is
random here: the functions consume no generator.

Effective sample size (Vehtari, Gelman, Simpson, Carpenter & Bürkner 2021, "Rank-normalization,
folding, and localization"), for ``M`` chains of ``N`` draws with autocovariances ``γ̂_m(t)``
(FFT, biased, divisor ``N``)::

    W   = mean_m γ̂_m(0) · N/(N-1)                 (within-chain variance)
    var⁺ = W (N-1)/N + var_m(mean of chain m)      (the second term only for M > 1)
    ρ̂_t = 1 - (W - mean_m γ̂_m(t)) / var⁺
    τ̂   = -1 + 2 Σ_{t<2K} ρ̂'_t + ρ̂_{2K}⁺,         ESS = M N / max(τ̂, 1/log10(M N))

where the pair sums ``P_k = ρ̂_{2k} + ρ̂_{2k+1}`` are truncated at Geyer's initial positive
sequence (``K`` = the first ``k`` with ``P_k ≤ 0``) and made monotone (``P'_k = min_{j≤k} P_j``,
Geyer's initial monotone sequence). ``kind``:

* ``"mean"``  — the ESS above on the split chains (each chain cut in two halves);
* ``"bulk"``  — on the rank-normalised split chains: ``z = Φ⁻¹((r - 3/8)/(MN + 1/4))``, ``r`` the
  ranks of all draws pooled (ties averaged);
* ``"tail"``  — the smaller of the quantile ESS at 5 % and 95 %; ``"quantile"`` (``prob=``): the
  ESS of the indicator ``x ≤ q̂_prob``; ``"sd"``: the ESS of ``(x - x̄)²``.

R̂ (``rhat``) on ``M`` chains of ``N`` draws: ``R̂ = sqrt(((N-1)/N · W + B/N) / W)`` with ``B = N ·
var_m(chain means)``; ``kind="split"`` is this on the split chains (the classic split R̂),
``kind="rank"`` the larger of it on the rank-normalised split chains and on the rank-normalised
folded split chains ``|x - median(x)|`` (Vehtari et al. 2021).

MCSE (``mcse``): ``"mean"``: ``sd(x) / sqrt(ESS_mean)``; ``"sd"``: the delta method on
``v = (x - x̄)²``: ``sqrt((mean(v²) - mean(v)²) / ESS_mean(v) / (4 mean(v)))``; ``"quantile"``:
half the distance between the order statistics at the 15.9 % and 84.1 % points of
``Beta(ESS p + 1, ESS (1-p) + 1)``, ``ESS`` the quantile ESS at ``p``.

These follow the formulas arviz (0.23) implements, edge cases included (a constant element has
ESS = M N; an element with a NaN gives NaN); validated against it in ``tests/test_diagnostics.py``.
Bad shapes raise ``ValueError`` naming the argument: fewer than 4 draws, or fewer than 2 chains for R̂.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["ess", "mcse", "rhat", "summary", "Summary"]

_MIN_DRAWS = 4
_ESS_KINDS = ("bulk", "tail", "mean", "sd", "quantile")
_RHAT_KINDS = ("rank", "split")
_MCSE_KINDS = ("mean", "sd", "quantile")
#: numpy's float64 ``resolution`` (10⁻¹⁵): a spread below it counts as a constant element.
_CONSTANT_SPREAD = 1e-15
#: Φ(∓1): the order statistics one standard error either side of a quantile.
_ONE_SIGMA_PROBS = (0.1586553, 0.8413447)


# ---------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------
def _as_rows(x: torch.Tensor, *, min_chains: int, name: str = "x") -> tuple[torch.Tensor, tuple[int, ...]]:
    """``[chains, draws, *event]`` → float64 ``[E, chains, draws]`` (one row per event element)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor shaped [chains, draws, *event], got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"{name} must be shaped [chains, draws, *event], got shape {tuple(x.shape)}")
    if x.is_complex():
        raise TypeError(f"{name} must be real, got {x.dtype}")
    chains, draws = x.shape[:2]
    if chains < min_chains:
        raise ValueError(
            f"{name} has {chains} chain(s) (shape {tuple(x.shape)}); this diagnostic needs at least {min_chains}"
            + (": R̂ compares chains with each other" if min_chains > 1 else "")
        )
    if draws < _MIN_DRAWS:
        raise ValueError(f"{name} has {draws} draws per chain (shape {tuple(x.shape)}); at least {_MIN_DRAWS} needed")
    event = tuple(x.shape[2:])
    rows = x.reshape(chains, draws, -1).movedim(-1, 0).to(torch.float64)
    return rows, event


def _split(y: torch.Tensor) -> torch.Tensor:
    """``[E, M, N]`` → ``[E, 2M, N//2]``: each chain's first and last halves as two chains (the
    middle draw of an odd ``N`` is dropped)."""
    half = y.shape[-1] // 2
    return torch.cat([y[..., :half], y[..., y.shape[-1] - half :]], dim=1)


def _has_nan(y: torch.Tensor) -> torch.Tensor:
    return y.isnan().flatten(1).any(dim=1)


# ---------------------------------------------------------------------------------------
# Ranks and quantiles over all draws of an element
# ---------------------------------------------------------------------------------------
def _average_ranks(flat: torch.Tensor) -> torch.Tensor:
    """``[E, n]`` → ranks 1..n per row, ties given their average rank (scipy's ``method="average"``)."""
    e, n = flat.shape
    values, order = flat.sort(dim=1)
    new_value = torch.ones_like(values, dtype=torch.bool)
    new_value[:, 1:] = values[:, 1:] != values[:, :-1]
    group = new_value.long().cumsum(dim=1) - 1  # tie group of each sorted position
    position = torch.arange(1, n + 1, dtype=torch.float64, device=flat.device).expand(e, n)
    total = torch.zeros(e, n, dtype=torch.float64, device=flat.device).scatter_add_(1, group, position)
    count = torch.zeros(e, n, dtype=torch.float64, device=flat.device).scatter_add_(1, group, torch.ones_like(position))
    sorted_ranks = (total / count.clamp_min(1)).gather(1, group)
    return torch.empty_like(sorted_ranks).scatter_(1, order, sorted_ranks)


def _z_scale(y: torch.Tensor) -> torch.Tensor:
    """Rank normalisation: ``Φ⁻¹((r - 3/8) / (n - 3/4 + 1))`` (Blom's offset), ranks over the row's
    pooled draws."""
    flat = y.flatten(1)
    n = flat.shape[1]
    u = (_average_ranks(flat) - 0.375) / (n - 0.75 + 1.0)
    return torch.special.ndtri(u).reshape(y.shape)


def _quantile(y: torch.Tensor, prob: float) -> torch.Tensor:
    """``[E, ...]`` → ``[E]``: the linear-interpolation (type 7) quantile of each row's pooled draws.

    Written with a sort because :func:`torch.quantile` refuses large inputs."""
    s = y.flatten(1).sort(dim=1).values
    n = s.shape[1]
    h = (n - 1) * prob
    lo = min(int(math.floor(h)), n - 1)
    hi = min(lo + 1, n - 1)
    frac = h - lo
    return s[:, lo] + (s[:, hi] - s[:, lo]) * frac


# ---------------------------------------------------------------------------------------
# Core estimators on [E, M, N] rows
# ---------------------------------------------------------------------------------------
def _autocov(y: torch.Tensor) -> torch.Tensor:
    """``[E, M, N]`` → biased autocovariances (divisor ``N``) at lags ``0..N-1``, by FFT; zero
    padding to ``2N`` makes the circular correlation the linear one."""
    n = y.shape[-1]
    c = y - y.mean(dim=-1, keepdim=True)
    f = torch.fft.rfft(c, n=2 * n, dim=-1)
    return torch.fft.irfft(f * f.conj(), n=2 * n, dim=-1)[..., :n] / n


def _ess_rows(y: torch.Tensor, relative: bool = False) -> torch.Tensor:
    """``[E, M, N]`` → ``[E]``: the multi-chain ESS with Geyer's initial monotone sequence."""
    e, m, n = y.shape
    size = m * n
    acov = _autocov(y)
    mean_var = acov[..., 0].mean(dim=1) * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if m > 1:
        var_plus = var_plus + y.mean(dim=-1).var(dim=1, unbiased=True)
    rho = 1.0 - (mean_var[:, None] - acov.mean(dim=1)) / var_plus[:, None]  # [E, N]
    rho[:, 0] = 1.0

    # Pair sums P_k = ρ_2k + ρ_2k+1 for the pairs Geyer's scan may reach: k ≤ (N-3)//2 (none
    # past pair 0 for N ≤ 4: then τ̂ = 0 and the 1/log10 floor decides).
    pairs = max((n - 3) // 2, 0)
    p = rho[:, 0 : 2 * pairs + 2 : 2] + rho[:, 1 : 2 * pairs + 2 : 2]  # [E, pairs + 1]
    # K: the number of pairs scanned after pair 0, i.e. the leading run of positive P_0..P_{K-1}.
    k = (p[:, :pairs] > 0).long().cumprod(dim=1).sum(dim=1)  # [E], 0..pairs
    monotone = p[:, :pairs].cummin(dim=1).values if pairs > 0 else p[:, :0]
    keep = torch.arange(pairs, device=y.device)[None, :] < k[:, None]
    body = torch.where(keep, monotone, torch.zeros_like(monotone)).sum(dim=1)
    # The first even lag past the truncation counts when positive, or when its pair was kept.
    rho_last = rho.gather(1, (2 * k)[:, None]).squeeze(1)
    p_last = p.gather(1, k[:, None]).squeeze(1)
    last = torch.where((rho_last > 0) | ((k > 0) & (p_last >= 0)), rho_last, torch.zeros_like(rho_last))
    tau = (-1.0 + 2.0 * body + last).clamp_min(1.0 / math.log10(size))
    out = (1.0 if relative else float(size)) / tau
    out = torch.where(rho.isnan().any(dim=1), torch.full_like(out, math.nan), out)

    # A constant element (var⁺ = 0, so ρ̂ is 0/0) has, by convention, all its draws effective.
    flat = y.flatten(1)
    constant = (flat.amax(dim=1) - flat.amin(dim=1)) < _CONSTANT_SPREAD
    return torch.where(constant, torch.full_like(out, 1.0 if relative else float(size)), out)


def _rhat_rows(y: torch.Tensor) -> torch.Tensor:
    """``[E, M, N]`` → ``[E]``: Gelman–Rubin's potential scale reduction on the given chains."""
    n = y.shape[-1]
    between = n * y.mean(dim=-1).var(dim=1, unbiased=True)
    within = y.var(dim=-1, unbiased=True).mean(dim=1)
    return ((between / within + n - 1.0) / n).sqrt()


def _ess_quantile_rows(y: torch.Tensor, prob: float, relative: bool = False) -> torch.Tensor:
    below = (y <= _quantile(y, prob)[:, None, None]).to(torch.float64)
    return _ess_rows(_split(below), relative)


def _nan_where_nan_input(y: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """An element with a NaN draw has no diagnostic: NaN (ranks and indicators would hide it)."""
    return torch.where(_has_nan(y), torch.full_like(out, math.nan), out)


def _ess_kind_rows(y: torch.Tensor, kind: str, prob, relative: bool) -> torch.Tensor:
    return _nan_where_nan_input(y, _ess_kind_rows_finite(y, kind, prob, relative))


def _ess_kind_rows_finite(y: torch.Tensor, kind: str, prob, relative: bool) -> torch.Tensor:
    if kind == "bulk":
        return _ess_rows(_z_scale(_split(y)), relative)
    if kind == "mean":
        return _ess_rows(_split(y), relative)
    if kind == "sd":
        return _ess_rows(_split((y - y.flatten(1).mean(dim=1)[:, None, None]) ** 2), relative)
    if kind == "tail":
        lo, hi = (0.05, 0.95) if prob is None else _tail_probs(prob)
        return torch.minimum(_ess_quantile_rows(y, lo, relative), _ess_quantile_rows(y, hi, relative))
    return _ess_quantile_rows(y, _check_prob(prob), relative)  # "quantile"


def _check_prob(prob) -> float:
    if prob is None:
        raise ValueError("prob is required for kind='quantile' (a probability in (0, 1))")
    if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0.0 < float(prob) < 1.0:
        raise ValueError(f"prob must be a probability in (0, 1), got {prob!r}")
    return float(prob)


def _tail_probs(prob) -> tuple[float, float]:
    if isinstance(prob, (tuple, list)):
        if len(prob) != 2:
            raise ValueError(f"prob for kind='tail' must be one probability or a pair (low, high), got {prob!r}")
        return _check_prob(prob[0]), _check_prob(prob[1])
    p = _check_prob(prob)
    return p, 1.0 - p


def _check_kind(kind, kinds, fn: str) -> str:
    if kind not in kinds:
        raise ValueError(f"{fn}: kind must be one of {', '.join(map(repr, kinds))}, got {kind!r}")
    return kind


# ---------------------------------------------------------------------------------------
# Beta quantiles (for the quantile MCSE): torch has none, so invert the regularised
# incomplete beta function I_x(a, b), evaluated by its continued fraction (modified Lentz).
# ---------------------------------------------------------------------------------------
def _betainc(a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, max_terms: int = 20000) -> torch.Tensor:
    """Regularised incomplete beta ``I_x(a, b)``, float64, elementwise."""
    tiny = 1e-300
    # The continued fraction converges fast for x < (a+1)/(a+b+2); use I_x(a,b) = 1 - I_{1-x}(b,a) beyond.
    flip = x > (a + 1.0) / (a + b + 2.0)
    aa, bb, xx = torch.where(flip, b, a), torch.where(flip, a, b), torch.where(flip, 1.0 - x, x)
    log_front = (
        aa * torch.log(xx.clamp_min(tiny))
        + bb * torch.log1p(-xx.clamp_max(1 - 1e-16))
        + torch.lgamma(aa + bb)
        - torch.lgamma(aa)
        - torch.lgamma(bb)
    )
    qab, qap, qam = aa + bb, aa + 1.0, aa - 1.0
    c = torch.ones_like(xx)
    d = 1.0 - qab * xx / qap
    d = torch.where(d.abs() < tiny, torch.full_like(d, tiny), d).reciprocal()
    h = d.clone()
    for m in range(1, max_terms + 1):
        m2 = 2 * m
        for num in (
            m * (bb - m) * xx / ((qam + m2) * (aa + m2)),
            -(aa + m) * (qab + m) * xx / ((aa + m2) * (qap + m2)),
        ):
            d = 1.0 + num * d
            d = torch.where(d.abs() < tiny, torch.full_like(d, tiny), d).reciprocal()
            c = 1.0 + num / c
            c = torch.where(c.abs() < tiny, torch.full_like(c, tiny), c)
            delta = d * c
            h = h * delta
        if m % 16 == 0 and bool(((delta - 1.0).abs() < 1e-15).all()):
            break
    front = torch.exp(log_front) * h / aa
    out = torch.where(flip, 1.0 - front, front)
    out = torch.where(x <= 0, torch.zeros_like(out), out)
    return torch.where(x >= 1, torch.ones_like(out), out)


def _beta_ppf(q: float, a: torch.Tensor, b: torch.Tensor, iters: int = 100) -> torch.Tensor:
    """``x`` with ``I_x(a, b) = q``: Newton's method on the CDF, kept inside a shrinking bracket
    (bisection when a step would leave it)."""
    lo, hi = torch.zeros_like(a), torch.ones_like(a)
    mean = a / (a + b)
    sd = (a * b / ((a + b) ** 2 * (a + b + 1.0))).sqrt()
    z = float(torch.special.ndtri(torch.tensor(q, dtype=torch.float64)))
    x = (mean + z * sd).clamp(1e-12, 1 - 1e-12)
    log_norm = torch.lgamma(a + b) - torch.lgamma(a) - torch.lgamma(b)
    for _ in range(iters):
        f = _betainc(a, b, x) - q
        lo = torch.where(f < 0, x, lo)
        hi = torch.where(f >= 0, x, hi)
        log_pdf = log_norm + (a - 1.0) * torch.log(x) + (b - 1.0) * torch.log1p(-x)
        step = x - f / torch.exp(log_pdf)
        bad = ~((step > lo) & (step < hi)) | step.isnan()
        new = torch.where(bad, 0.5 * (lo + hi), step)
        if bool(((new - x).abs() <= 1e-15 * new.abs().clamp_min(1e-300)).all()):
            x = new
            break
        x = new
    return x


def _mcse_quantile_rows(y: torch.Tensor, prob: float) -> torch.Tensor:
    ess_q = _ess_quantile_rows(y, prob)
    s = y.flatten(1).sort(dim=1).values
    size = s.shape[1]
    out = torch.full_like(ess_q, math.nan)
    ok = ~ess_q.isnan()
    if bool(ok.any()):
        a, b = ess_q[ok] * prob + 1.0, ess_q[ok] * (1.0 - prob) + 1.0
        lo_idx = (_beta_ppf(_ONE_SIGMA_PROBS[0], a, b) * size - 1.0).clamp_min(0.0).floor().long()
        hi_idx = (_beta_ppf(_ONE_SIGMA_PROBS[1], a, b) * size - 1.0).clamp_max(size - 1.0).ceil().long()
        rows = s[ok]
        out[ok] = (rows.gather(1, hi_idx[:, None]) - rows.gather(1, lo_idx[:, None])).squeeze(1) / 2.0
    return out


def _mcse_kind_rows(y: torch.Tensor, kind: str, prob) -> torch.Tensor:
    return _nan_where_nan_input(y, _mcse_kind_rows_finite(y, kind, prob))


def _mcse_kind_rows_finite(y: torch.Tensor, kind: str, prob) -> torch.Tensor:
    flat = y.flatten(1)
    if kind == "mean":
        return flat.std(dim=1, unbiased=True) / _ess_rows(_split(y)).sqrt()
    if kind == "sd":
        v = (y - flat.mean(dim=1)[:, None, None]) ** 2
        ev = v.flatten(1).mean(dim=1)
        var_of_var = ((v**2).flatten(1).mean(dim=1) - ev**2) / _ess_rows(_split(v))
        return (var_of_var / ev / 4.0).sqrt()
    return _mcse_quantile_rows(y, _check_prob(prob))


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------
def _unrows(values: torch.Tensor, event: tuple[int, ...]) -> torch.Tensor:
    return values.reshape(event)


def ess(x: torch.Tensor, kind: str = "bulk", *, prob=None, relative: bool = False) -> torch.Tensor:
    """Effective sample size of ``x`` ``[chains, draws, *event]`` → ``[*event]`` (float64).

    ``kind``: ``"bulk"`` (rank-normalised split chains, the default), ``"tail"`` (min of the
    5 % / 95 % quantile ESS; ``prob=p`` or ``(low, high)`` changes them), ``"mean"`` (split chains),
    ``"sd"`` or ``"quantile"`` (needs ``prob``). ``relative=True`` divides by ``chains × draws``.
    """
    _check_kind(kind, _ESS_KINDS, "ess")
    if kind == "quantile":
        _check_prob(prob)
    y, event = _as_rows(x, min_chains=1)
    return _unrows(_ess_kind_rows(y, kind, prob, relative), event)


def rhat(x: torch.Tensor, kind: str = "rank") -> torch.Tensor:
    """Potential scale reduction R̂ of ``x`` ``[chains ≥ 2, draws, *event]`` → ``[*event]``.

    ``kind="rank"``: the rank-normalised split R̂ of Vehtari et al. (2021), the larger of the bulk
    and folded (tail) values; ``kind="split"``: the classic split R̂ on the raw draws. Converged
    chains give values near 1; Vehtari et al. recommend trusting them only below 1.01.
    """
    _check_kind(kind, _RHAT_KINDS, "rhat")
    y, event = _as_rows(x, min_chains=2)
    s = _split(y)
    if kind == "split":
        out = _rhat_rows(s)
    else:
        folded = (s - _quantile(s, 0.5)[:, None, None]).abs()
        out = torch.maximum(_rhat_rows(_z_scale(s)), _rhat_rows(_z_scale(folded)))
    return _unrows(_nan_where_nan_input(y, out), event)


def mcse(x: torch.Tensor, kind: str = "mean", *, prob=None) -> torch.Tensor:
    """Monte Carlo standard error of the mean (``"mean"``), the standard deviation (``"sd"``) or
    the ``prob`` quantile (``"quantile"``) of ``x`` ``[chains, draws, *event]`` → ``[*event]``."""
    _check_kind(kind, _MCSE_KINDS, "mcse")
    if kind == "quantile":
        _check_prob(prob)
    y, event = _as_rows(x, min_chains=1)
    return _unrows(_mcse_kind_rows(y, kind, prob), event)


_COLUMNS = ("mean", "sd", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat")


@dataclass
class Summary:
    """The per-element table of :func:`summary`: each field ``[*event]`` float64 (``r_hat`` is
    NaN for a single chain). ``str()`` renders it, one row per element."""

    mean: torch.Tensor
    sd: torch.Tensor
    mcse_mean: torch.Tensor
    mcse_sd: torch.Tensor
    ess_bulk: torch.Tensor
    ess_tail: torch.Tensor
    r_hat: torch.Tensor
    names: tuple[str, ...]

    def rows(self) -> list[tuple[str, list[float]]]:
        cols = [getattr(self, c).reshape(-1).cpu().tolist() for c in _COLUMNS]
        return [(name, [col[i] for col in cols]) for i, name in enumerate(self.names)]

    def __str__(self) -> str:
        width = max([len(n) for n in self.names] + [4])
        head = f"{'':<{width}}" + "".join(f"{c:>11}" for c in _COLUMNS)
        lines = [head]
        for name, vals in self.rows():
            cells = [f"{v:>11.4g}" for v in vals[:4]] + [f"{v:>11.0f}" for v in vals[4:6]] + [f"{vals[6]:>11.3f}"]
            lines.append(f"{name:<{width}}" + "".join(cells))
        return "\n".join(lines)


def summary(x: torch.Tensor, names=None) -> Summary:
    """The usual table for ``x`` ``[chains, draws, *event]``: mean, sd, MCSE of both, bulk and
    tail ESS, rank R̂ (NaN with one chain). ``names``: one label per event element (default
    ``x[i, j]`` style indices)."""
    y, event = _as_rows(x, min_chains=1)
    flat = y.flatten(1)
    count = flat.shape[0]
    if names is None:
        names = tuple("x" + ("[" + ", ".join(map(str, idx)) + "]" if event else "") for idx in _indices(event))
    else:
        names = tuple(str(n) for n in names)
        if len(names) != count:
            raise ValueError(f"names has {len(names)} labels for {count} event elements (event shape {event})")
    r = rhat(x) if x.shape[0] >= 2 else torch.full(event, math.nan, dtype=torch.float64, device=x.device)
    return Summary(
        mean=_unrows(flat.mean(dim=1), event),
        sd=_unrows(flat.std(dim=1, unbiased=True), event),
        mcse_mean=_unrows(_mcse_kind_rows(y, "mean", None), event),
        mcse_sd=_unrows(_mcse_kind_rows(y, "sd", None), event),
        ess_bulk=_unrows(_ess_kind_rows(y, "bulk", None, False), event),
        ess_tail=_unrows(_ess_kind_rows(y, "tail", None, False), event),
        r_hat=r,
        names=names,
    )


def _indices(event: tuple[int, ...]):
    if not event:
        yield ()
        return
    import itertools

    yield from itertools.product(*(range(n) for n in event))
