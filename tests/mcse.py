"""Statistical assertions in MCSE form: ``|estimate - truth| ≤ z · MCSE`` per element, the MCSE from
the library's own effective sample size (:mod:`fastlangevin.diagnostics`), as blackjax tests do.

Draws are ``[chains, draws, *event]``. Independent samples — e.g. the final states of ``n``
independent chains, ``[n, *event]`` — go in as ``independent(x)`` = ``x[None]`` (one "chain" of
``n`` draws: their estimated ESS is ≈ n, so no independence is assumed that the draws don't show).

* ``assert_mean_within(draws, truth, z)``: ``x̄`` vs ``truth``, MCSE = ``sd / √ESS_mean``;
* ``assert_var_within(draws, truth, z)``: ``s² = mean((x - x̄)²) + MCSE(x̄)²`` (the second term
  removes the bias of centring at ``x̄``: E mean((x - x̄)²) = σ² - Var x̄) vs ``truth``, MCSE =
  ``sd(v) / √ESS_mean(v)`` for ``v = (x - x̄)²``;
* ``assert_fraction_within(mask, truth, z)``: the mean of a boolean event, e.g. a mode's weight.

Each also fails when an element has fewer than ``min_ess`` effective draws (its MCSE would be
too noisy to test against) and, with ``max_mcse=``, when the test would be too weak to catch
an error of that size. ``z = 5`` per element keeps a false alarm below 6e-7 per element (about
1e-4 over a few hundred elements); the failure message lists the worst elements.

``slow_seeds`` marks the 20-seed repetitions of statistical tests (issue 15: no test may
depend on a lucky seed): they are ``slow`` and run only with ``FASTLANGEVIN_SLOW=1``.
"""

from __future__ import annotations

import os

import pytest
import torch

from fastlangevin import diagnostics

__all__ = [
    "assert_fraction_within",
    "assert_mean_within",
    "assert_var_within",
    "independent",
    "slow_seeds",
]

DEFAULT_Z = 5.0
DEFAULT_MIN_ESS = 100.0

slow_seeds = pytest.mark.parametrize("seed", range(20))
slow = pytest.mark.skipif(not os.environ.get("FASTLANGEVIN_SLOW"), reason="slow: set FASTLANGEVIN_SLOW=1")


def slow_test(fn):
    """``@slow_test`` + ``@slow_seeds``: a 20-seed repetition, marked slow, off unless FASTLANGEVIN_SLOW=1."""
    return pytest.mark.slow(slow(slow_seeds(fn)))


def independent(x: torch.Tensor) -> torch.Tensor:
    """``[n, *event]`` independent samples → ``[1, n, *event]`` draws of one chain."""
    return x.unsqueeze(0)


def _check(
    what: str,
    estimate: torch.Tensor,
    truth,
    se: torch.Tensor,
    ess: torch.Tensor,
    z: float,
    min_ess: float,
    max_mcse,
) -> None:
    truth = torch.as_tensor(truth, dtype=torch.float64, device=estimate.device).broadcast_to(estimate.shape)
    err = (estimate - truth).abs()
    score = err / se
    problems = []
    bad = ~(err <= z * se)  # NaN fails too
    if bool(bad.any()):
        problems.append(f"|estimate - truth| > {z:g} MCSE")
    low = ~(ess >= min_ess)
    if bool(low.any()):
        problems.append(f"ESS < {min_ess:g} (MCSE unreliable; run longer chains)")
    weak = torch.zeros_like(bad)
    if max_mcse is not None:
        weak = ~(se <= max_mcse)
        if bool(weak.any()):
            problems.append(f"MCSE > max_mcse={max_mcse:g} (the test could not catch an error that size)")
    if not problems:
        return
    flagged = (bad | low | weak).reshape(-1)
    order = torch.argsort(torch.where(flagged, score.reshape(-1).nan_to_num(float("inf")), -1.0), descending=True)
    shape = tuple(estimate.shape)
    lines = []
    for i in order[:8].tolist():
        if not bool(flagged[i]):
            break
        idx = tuple(int(v) for v in torch.unravel_index(torch.tensor(i), shape)) if shape else ()
        lines.append(
            f"  {what}{list(idx) if idx else ''}: estimate {float(estimate.reshape(-1)[i]):.6g}, truth "
            f"{float(truth.reshape(-1)[i]):.6g}, MCSE {float(se.reshape(-1)[i]):.3g} "
            f"({float(score.reshape(-1)[i]):.2f} MCSE off), ESS {float(ess.reshape(-1)[i]):.0f}"
        )
    raise AssertionError(
        f"{what}: {'; '.join(problems)} in {int(flagged.sum())} of {flagged.numel()} element(s):\n" + "\n".join(lines)
    )


def assert_mean_within(
    draws: torch.Tensor, truth, z: float = DEFAULT_Z, *, min_ess: float = DEFAULT_MIN_ESS, max_mcse=None
) -> None:
    """``|x̄ - truth| ≤ z · MCSE(x̄)`` for every event element of ``draws`` ``[chains, draws, *event]``."""
    x = draws.to(torch.float64)
    ess = diagnostics.ess(x, "mean")
    se = x.flatten(0, 1).std(dim=0, unbiased=True) / ess.sqrt()
    _check("mean", x.mean(dim=(0, 1)), truth, se, ess, z, min_ess, max_mcse)


def assert_var_within(
    draws: torch.Tensor, truth, z: float = DEFAULT_Z, *, min_ess: float = DEFAULT_MIN_ESS, max_mcse=None
) -> None:
    """``|s² - truth| ≤ z · MCSE(s²)`` for every event element (``truth``: the variance)."""
    x = draws.to(torch.float64)
    v = (x - x.mean(dim=(0, 1))) ** 2
    ess_v = diagnostics.ess(v, "mean")
    se_v = v.flatten(0, 1).std(dim=0, unbiased=True) / ess_v.sqrt()
    estimate = v.mean(dim=(0, 1)) + diagnostics.mcse(x, "mean") ** 2
    _check("variance", estimate, truth, se_v, ess_v, z, min_ess, max_mcse)


def assert_fraction_within(
    mask: torch.Tensor, truth, z: float = DEFAULT_Z, *, min_ess: float = DEFAULT_MIN_ESS, max_mcse=None
) -> None:
    """The frequency of a boolean event ``mask`` ``[chains, draws, *event]`` vs its probability ``truth``."""
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
    assert_mean_within(mask.to(torch.float64), truth, z, min_ess=min_ess, max_mcse=max_mcse)
