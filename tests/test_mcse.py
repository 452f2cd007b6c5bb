"""The MCSE assertion helper (tests/mcse.py) has teeth and no false alarms: it passes on exact
draws (independent and autocorrelated), fails on biased ones (ULA's discretisation bias
included), on too few effective draws and on a too weak test, and the ESS makes the difference
on correlated chains.

Runtime: ~9 s on 2 cores (the 20-seed repetition is slow: FASTLANGEVIN_SLOW=1).
"""

from __future__ import annotations

import math

import pytest
import torch

from .mcse import assert_fraction_within, assert_mean_within, assert_var_within, independent, slow_test


def ar1(chains: int, draws: int, event, rho: float, seed: int) -> torch.Tensor:
    """Stationary AR(1) chains, mean 0, variance 1/(1-ρ²)."""
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn((chains, draws, *event), generator=g, dtype=torch.float64)
    x = torch.empty_like(eps)
    x[:, 0] = eps[:, 0] / math.sqrt(1 - rho * rho)
    for t in range(1, draws):
        x[:, t] = rho * x[:, t - 1] + eps[:, t]
    return x


def check_exact_draws_pass(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    mu, sd = torch.tensor([0.0, 3.0, -1.5]), torch.tensor([1.0, 0.5, 2.0])
    x = mu + sd * torch.randn(4, 500, 3, generator=g)
    assert_mean_within(x, mu)
    assert_var_within(x, sd**2)
    iid = mu + sd * torch.randn(3000, 3, generator=g)  # final states of independent chains
    assert_mean_within(independent(iid), mu)
    assert_var_within(independent(iid), sd**2)
    assert_fraction_within(independent(iid > mu), 0.5)
    rho = 0.9
    y = ar1(4, 2000, (3,), rho, seed=seed + 1000)
    assert_mean_within(y, 0.0)
    assert_var_within(y, 1.0 / (1 - rho * rho))


def test_exact_draws_pass():
    check_exact_draws_pass(seed=0)


def test_biased_draws_fail():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 500, 2, generator=g)
    se = 1.0 / math.sqrt(x.shape[0] * x.shape[1])  # the exact MCSE of the mean of 2000 N(0,1) draws
    with pytest.raises(AssertionError, match=r"mean\[1\].*MCSE off"):
        assert_mean_within(x + torch.tensor([0.0, 12 * se]), 0.0)  # only element 1 is off, by 12 SE
    with pytest.raises(AssertionError, match="variance"):
        assert_var_within(1.2 * x, 1.0)  # variance 1.44: off by ~10 of its SEs (√(2/2000)·1.44)
    with pytest.raises(AssertionError, match="mean"):
        assert_fraction_within(independent(torch.randn(4000, generator=g) > -0.2), 0.5)  # P = 0.579: 10 SE
    with pytest.raises(AssertionError, match="MCSE off"):
        assert_mean_within(x, torch.full((2,), math.nan))


def test_too_few_effective_draws_or_too_weak_a_test_fail():
    slow_mixing = ar1(2, 300, (), 0.999, seed=2)  # ESS of a few draws: its MCSE says little
    with pytest.raises(AssertionError, match="ESS < 100"):
        assert_mean_within(slow_mixing, 0.0)
    x = torch.randn(4, 100, generator=torch.Generator().manual_seed(3))  # MCSE ≈ 0.05
    with pytest.raises(AssertionError, match="max_mcse"):
        assert_mean_within(x, 0.0, max_mcse=0.01)
    assert_mean_within(x, 0.0, max_mcse=0.1)


def check_correlated_chains_need_the_ess(seed: int) -> None:
    rho = 0.95
    y = ar1(4, 3000, (50,), rho, seed=seed)  # ESS ≈ 300 per element
    assert_mean_within(y, 0.0)
    naive_se = y.flatten(0, 1).std(dim=0) / math.sqrt(y.shape[0] * y.shape[1])
    assert bool((y.mean(dim=(0, 1)).abs() > 5 * naive_se).any())


def test_correlated_chains_need_the_ess():
    """50 exact AR(1) (ρ = 0.95) elements: the i.i.d. standard error sd/√N is √39 ≈ 6x too small,
    so it flags exact chains (each element fails the z = 5 check with probability ~0.4, all 50 pass
    with probability ~1e-12); the ESS-based check passes them."""
    check_correlated_chains_need_the_ess(seed=4)


def test_catches_ula_bias_and_passes_mala():
    """On N(0, I₂), ULA with step ε has stationary variance 1/(1 - ε/2) (1.18 at ε = 0.3), not 1;
    MALA's accept/reject removes the bias. 32 chains × 1400 kept steps: the variance's MCSE is
    ≈ 0.013, so ULA is ~13 MCSE off 1 and MALA ~15 MCSE off 1.18 (seeds 0-2: 12.0-14.0 and 14.7-17.7)."""
    import fastlangevin as fl

    eps = 0.3
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(32, 2, generator=g)  # the target's law: no burn-in to speak of
    runs = {}
    for name in ("ula", "mala"):
        trace = fl.Trace(every=1)
        if name == "ula":
            fl.langevin(lambda x: -x, x0, step_size=eps, n_steps=1500, generator=g, trace=trace)
        else:
            fl.mala(lambda x: -0.5 * (x * x).sum(-1), x0, step_size=eps, n_steps=1500, generator=g, trace=trace)
        runs[name] = trace.states[100:].movedim(0, 1)  # [chains, draws, 2]
    ula_var = 1.0 / (1.0 - eps / 2)
    assert_var_within(runs["ula"], ula_var)
    assert_var_within(runs["mala"], 1.0)
    with pytest.raises(AssertionError, match="variance"):
        assert_var_within(runs["ula"], 1.0)
    with pytest.raises(AssertionError, match="variance"):
        assert_var_within(runs["mala"], ula_var)
    assert_mean_within(runs["ula"], 0.0)  # the mean is unbiased for both
    assert_mean_within(runs["mala"], 0.0)


def test_bad_input():
    with pytest.raises(TypeError, match="bool"):
        assert_fraction_within(torch.zeros(1, 100), 0.5)
    with pytest.raises(ValueError, match="draws"):
        assert_mean_within(torch.zeros(4, 2), 0.0)


@slow_test
def test_exact_draws_pass_for_20_seeds(seed):
    check_exact_draws_pass(seed=seed + 1)
    check_correlated_chains_need_the_ess(seed=seed + 100)
