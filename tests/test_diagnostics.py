"""fastlangevin.diagnostics: ESS, R̂, MCSE and summary against arviz (the oracle, a test-only
dependency) to 1e-6 relative, against AR(1) theory within its standard error, on stuck and healthy
chains, and on bad input.

Runtime: ~10 s on 2 cores (the 20-seed repetition of the statistical tests is slow: FASTLANGEVIN_SLOW=1).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import fastlangevin as fl
from fastlangevin import diagnostics as D

from .mcse import slow_test

az = pytest.importorskip("arviz")

RTOL = 1e-6


def ar1(chains: int, draws: int, event, rho: float, seed: int, heavy: bool = False) -> torch.Tensor:
    """``[chains, draws, *event]`` AR(1) chains ``x_t = ρ x_{t-1} + ε_t`` started from the stationary
    law (unit innovations; Student-t with 2 degrees of freedom when ``heavy``: infinite variance)."""
    g = torch.Generator().manual_seed(seed)
    shape = (chains, draws, *event)
    if heavy:
        normal = torch.randn(shape, generator=g, dtype=torch.float64)
        chi2 = torch.randn((2, *shape), generator=g, dtype=torch.float64).pow(2).sum(0)
        eps = normal / (chi2 / 2).sqrt()
    else:
        eps = torch.randn(shape, generator=g, dtype=torch.float64)
    x = torch.empty_like(eps)
    x[:, 0] = eps[:, 0] / math.sqrt(1 - rho * rho)
    for t in range(1, draws):
        x[:, t] = rho * x[:, t - 1] + eps[:, t]
    return x


def arviz_value(fn: str, x: torch.Tensor, **kw) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = az.convert_to_dataset(x.numpy())
        return np.asarray(getattr(az, fn)(ds, **kw).x.values)


def assert_matches(ours: torch.Tensor, theirs: np.ndarray) -> None:
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, torch.as_tensor(theirs, dtype=torch.float64), rtol=RTOL, atol=0, equal_nan=True)


# Shapes: event dims of rank 0, 1 and 2; odd draw counts (split drops the middle draw); one chain;
# the fewest draws allowed.
CHAINS = {
    "ar1-4x400x3": lambda: ar1(4, 400, (3,), 0.8, seed=1),
    "ar1-3x151x2x2": lambda: ar1(3, 151, (2, 2), 0.95, seed=2),
    "ar1-1x200": lambda: ar1(1, 200, (), 0.3, seed=3),
    "heavy-4x300x3": lambda: ar1(4, 300, (3,), 0.6, seed=4, heavy=True),
    "heavy-2x99x4": lambda: ar1(2, 99, (4,), 0.0, seed=5, heavy=True),
    "ar1-2x4x3": lambda: ar1(2, 4, (3,), 0.5, seed=8),  # the fewest draws: split chains of 2
    "ar1-3x9x3": lambda: ar1(3, 9, (3,), 0.5, seed=9),
}


@pytest.fixture(params=sorted(CHAINS), scope="module")
def chains(request):
    return CHAINS[request.param]()


@pytest.mark.parametrize("kind", ["bulk", "tail", "mean", "sd"])
def test_ess_matches_arviz(chains, kind):
    assert_matches(D.ess(chains, kind), arviz_value("ess", chains, method=kind))
    assert_matches(D.ess(chains, kind, relative=True), arviz_value("ess", chains, method=kind, relative=True))


@pytest.mark.parametrize("prob", [0.05, 0.3, 0.5])
def test_quantile_ess_and_mcse_match_arviz(chains, prob):
    assert_matches(D.ess(chains, "quantile", prob=prob), arviz_value("ess", chains, method="quantile", prob=prob))
    assert_matches(D.mcse(chains, "quantile", prob=prob), arviz_value("mcse", chains, method="quantile", prob=prob))


def test_tail_ess_with_own_probabilities_matches_arviz(chains):
    assert_matches(D.ess(chains, "tail", prob=0.1), arviz_value("ess", chains, method="tail", prob=0.1))
    got = D.ess(chains, "tail", prob=(0.2, 0.7))
    assert_matches(got, arviz_value("ess", chains, method="tail", prob=(0.2, 0.7)))


@pytest.mark.parametrize("kind", ["mean", "sd"])
def test_mcse_matches_arviz(chains, kind):
    assert_matches(D.mcse(chains, kind), arviz_value("mcse", chains, method=kind))


@pytest.mark.parametrize("kind", ["rank", "split"])
def test_rhat_matches_arviz(chains, kind):
    if chains.shape[0] < 2:
        with pytest.raises(ValueError, match="chain"):
            D.rhat(chains, kind)
        return
    assert_matches(D.rhat(chains, kind), arviz_value("rhat", chains, method=kind))


def test_edge_cases_match_arviz():
    """A constant element (ESS = all draws), a NaN draw (NaN everywhere), rounded draws (ties in the
    ranks, constant quantile indicators)."""
    x = torch.randn(3, 40, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64).round()
    x[:, :, 0] = 2.0
    x[0, 3, 1] = math.nan
    for kind in ("bulk", "tail", "mean", "sd"):
        assert_matches(D.ess(x, kind), arviz_value("ess", x, method=kind))
    for kind in ("rank", "split"):
        assert_matches(D.rhat(x, kind), arviz_value("rhat", x, method=kind))
    for kind, prob in (("mean", None), ("sd", None), ("quantile", 0.3)):
        assert_matches(D.mcse(x, kind, prob=prob), arviz_value("mcse", x, method=kind, prob=prob))
    assert float(D.ess(x, "bulk")[0]) == 120.0 and math.isnan(float(D.ess(x, "bulk")[1]))


def test_batched_equals_per_element_and_keeps_device():
    x = ar1(4, 120, (2, 3), 0.7, seed=6).float()
    out = D.ess(x, "bulk")
    assert out.shape == (2, 3) and out.dtype == torch.float64 and out.device == x.device
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(out[i, j], D.ess(x[:, :, i, j], "bulk"), rtol=1e-12, atol=0)
    assert D.rhat(x[:, :, 0, 0]).shape == ()


# ---------------------------------------------------------------------------------------
# Theory
# ---------------------------------------------------------------------------------------
AR1_REPLICATES = 200  # independent AR(1) series per check: the mean's SE is their sd / √200


def check_ar1_theory(rho: float, seed: int, z: float = 5.0) -> None:
    """ESS/N of AR(1) is (1-ρ)/(1+ρ). Each event element is an independent replicate, so the
    estimator's mean over replicates has SE sd/√R; the check allows z of them."""
    x = ar1(4, 2000, (AR1_REPLICATES,), rho, seed=seed)
    truth = (1 - rho) / (1 + rho)
    for kind in ("mean", "bulk"):
        r = D.ess(x, kind, relative=True)
        se = float(r.std()) / math.sqrt(AR1_REPLICATES)
        assert abs(float(r.mean()) - truth) <= z * se, (kind, rho, float(r.mean()), truth, se)


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_ess_matches_ar1_theory(rho):
    check_ar1_theory(rho, seed=0)


def check_stuck_and_healthy(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    healthy = torch.randn(4, 1000, 3, generator=g, dtype=torch.float64)
    for kind in ("rank", "split"):
        assert bool((D.rhat(healthy, kind) < 1.01).all()), D.rhat(healthy, kind)
    # One of four chains sits in another mode (4 sd away) and never leaves it.
    stuck = healthy.clone()
    stuck[0] += 4.0
    for kind in ("rank", "split"):
        assert bool((D.rhat(stuck, kind) > 1.1).all()), D.rhat(stuck, kind)


def test_rhat_flags_a_stuck_chain_and_passes_healthy_ones():
    check_stuck_and_healthy(seed=0)


def test_rhat_on_langevin_chains_in_a_double_well():
    """The library's own sampler on p(x) ∝ exp(-3(x²-4)²/4) per coordinate (modes at ±2, a 12-nat
    barrier: a crossing in these 1500 steps has probability ~1e-4): chains started in one well stay
    there. Three chains started at -2 and one at +2 are flagged; four chains in one well are not."""
    score = lambda x: -3.0 * x * (x * x - 4.0)  # noqa: E731  (∇ log p)

    def run(starts):
        x0 = torch.tensor(starts, dtype=torch.float32)[:, None].repeat(1, 2)  # [chains, 2 dims]
        trace = fl.Trace(every=1)
        fl.langevin(score, x0, step_size=0.02, n_steps=1500, generator=torch.Generator().manual_seed(0), trace=trace)
        return trace.states[100:].movedim(0, 1)  # [chains, draws, 2], the first 100 steps dropped

    assert bool((D.rhat(run([-2.0, -2.0, -2.0, 2.0])) > 1.1).all())
    assert bool((D.rhat(run([-2.0, -2.0, -2.0, -2.0])) < 1.01).all())


@slow_test
def test_statistical_checks_pass_for_20_seeds(seed):
    check_ar1_theory(0.5, seed=seed + 100)
    check_ar1_theory(0.9, seed=seed + 200)
    check_stuck_and_healthy(seed=seed + 300)


# ---------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------
def test_summary_columns_are_the_functions():
    x = ar1(4, 200, (2,), 0.5, seed=7)
    s = D.summary(x, names=["a", "b"])
    torch.testing.assert_close(s.mean, x.mean((0, 1)))
    torch.testing.assert_close(s.mcse_mean, D.mcse(x, "mean"))
    torch.testing.assert_close(s.mcse_sd, D.mcse(x, "sd"))
    torch.testing.assert_close(s.ess_bulk, D.ess(x, "bulk"))
    torch.testing.assert_close(s.ess_tail, D.ess(x, "tail"))
    torch.testing.assert_close(s.r_hat, D.rhat(x))
    text = str(s)
    assert text.splitlines()[0].split() == ["mean", "sd", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat"]
    assert [line.split()[0] for line in text.splitlines()[1:]] == ["a", "b"]
    one = D.summary(x[:1])
    assert bool(one.r_hat.isnan().all()) and one.names == ("x[0]", "x[1]")


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------
def test_bad_input_raises_naming_the_problem():
    x = torch.randn(4, 50, 2)
    with pytest.raises(ValueError, match="at least 2"):
        D.rhat(x[:1])
    with pytest.raises(ValueError, match="3 draws"):
        D.ess(x[:, :3])
    with pytest.raises(ValueError, match=r"\[chains, draws, \*event\]"):
        D.ess(torch.randn(50))
    with pytest.raises(TypeError, match="torch.Tensor"):
        D.ess(np.zeros((4, 50)))
    with pytest.raises(TypeError, match="real"):
        D.ess(torch.randn(4, 50, dtype=torch.complex64))
    with pytest.raises(ValueError, match="kind"):
        D.ess(x, "median")
    with pytest.raises(ValueError, match="kind"):
        D.rhat(x, "folded")
    with pytest.raises(ValueError, match="prob is required"):
        D.mcse(x, "quantile")
    with pytest.raises(ValueError, match="prob"):
        D.ess(x, "quantile", prob=1.5)
    with pytest.raises(ValueError, match="names"):
        D.summary(x, names=["only one"])
