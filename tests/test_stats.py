"""RunningStats: streamed Welford mean/variance equal the stored trajectory's; batch-means MCSE
matches the exact variance of an AR(1) chain mean (ULA on a Gaussian is an AR(1))."""

from __future__ import annotations

import math

import pytest
import torch

import fastlangevin as fl
from fastlangevin import RunningStats, Trace


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("every,burn_in", [(1, 0), (3, 5)])
def test_welford_equals_the_stored_trajectory(every, burn_in):
    x0 = torch.randn(6, 2, 3, generator=gen(1))
    tr, st = Trace(every=1), RunningStats(every=every, burn_in=burn_in, batch_size=4)
    fl.langevin(lambda x: -x, x0, step_size=0.3, n_steps=60, generator=gen(2), trace=tr, stats=st)
    draws = tr.states[burn_in + every :: every].double()  # states[k] = after k steps
    assert st.count == draws.shape[0]
    assert st.mean.shape == x0.shape and st.var.shape == x0.shape
    torch.testing.assert_close(st.mean.double(), draws.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(st.var.double(), draws.var(0), rtol=1e-4, atol=1e-6)
    a = draws.shape[0] // 4
    bm = draws[: a * 4].reshape(a, 4, *x0.shape).mean(1)
    torch.testing.assert_close(st.mcse().double(), (4 * bm.var(0) / (a * 4)).sqrt(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(st.ess().double(), a * 4 * draws.var(0) / (4 * bm.var(0)), rtol=1e-4, atol=1e-4)


def test_every_sampler_takes_stats():
    x0 = torch.randn(4, 2, generator=gen(3))
    for run in (
        lambda st: fl.annealed_langevin(lambda x, s: -x, x0, [1.0, 0.5], n_steps_each=5, stats=st, generator=gen(4)),
        lambda st: fl.pc_sample(lambda x, t: -x, fl.VESDE(), x0, n_steps=10, stats=st, generator=gen(4)),
        lambda st: fl.mala(lambda x: -0.5 * x.square().sum(1), x0, step_size=0.2, n_steps=10, stats=st)[0],
    ):
        st = RunningStats()
        out = run(st)
        assert st.count == 10 and st.mean.shape == x0.shape
        assert st.var.shape == x0.shape and torch.isfinite(st.var).all()
        assert out.shape == x0.shape


def _ar1_var_of_mean(rho, var, n):
    """Exact Var of the mean of n stationary AR(1) draws with lag-k correlation rho^k."""
    k = torch.arange(1, n, dtype=torch.float64)
    return var / n * (1 + 2 * ((1 - k / n) * rho**k).sum().item())


def test_batch_means_mcse_matches_ar1_theory():
    # ULA on N(0, 1) with step eps: x' = (1 - eps) x + sqrt(2 eps) z, an AR(1) with rho = 1 - eps and
    # stationary variance 2 / (2 - eps). Chains start stationary, so the truth is exact.
    eps, n, b, chains = 0.5, 2500, 50, 512
    rho, var = 1 - eps, 2 / (2 - eps)
    x0 = torch.randn(chains, 2, generator=gen(5)) * math.sqrt(var)
    st = RunningStats(batch_size=b)
    fl.langevin(lambda x: -x, x0, step_size=eps, n_steps=n, generator=gen(6), stats=st)
    a = n // b
    # E[b S²_bm] / (a b) for stationary AR(1): (a / (a-1)) (Var(batch mean) - Var(grand mean)) / a
    expected = (_ar1_var_of_mean(rho, var, b) - _ar1_var_of_mean(rho, var, a * b)) / (a - 1)
    m2 = st.mcse().double().square().flatten()  # one independent estimate per chain and dimension
    se = m2.std().item() / math.sqrt(m2.numel())
    assert abs(m2.mean().item() - expected) <= 5 * se, (m2.mean().item(), expected, se)
    # ESS = N var / (b S²_bm) is checked identically above; its mean over chains is not unbiased
    # (E[1/S²] ≠ 1/E[S²]), so the exact test is the one on MCSE².


def test_bad_stats_input():
    with pytest.raises(ValueError, match="RunningStats.every"):
        RunningStats(every=0)
    with pytest.raises(ValueError, match="RunningStats.burn_in"):
        RunningStats(burn_in=-1)
    with pytest.raises(TypeError, match="stats must be a fastlangevin.RunningStats"):
        fl.langevin(lambda x: -x, torch.zeros(2, 2), step_size=0.1, n_steps=2, stats=object())
    with pytest.raises(TypeError, match="stats must be a fastlangevin.RunningStats"):
        fl.langevin(lambda x: -x, torch.zeros(2, 2), step_size=0.1, n_steps=2, stats=Trace())
    st = RunningStats(batch_size=10)
    fl.langevin(lambda x: -x, torch.zeros(2, 2), step_size=0.1, n_steps=15, stats=st)
    with pytest.raises(ValueError, match="at least 2 complete batches"):
        st.ess()
