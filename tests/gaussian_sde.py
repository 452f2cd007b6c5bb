"""Closed forms for Gaussian data N(μ, s² I) under the VE and VP SDEs (test oracle).

With v(t) = s² + σ(t)² (VE) or 1 + m(t)² (s² − 1) (VP) and mean m(t) μ (m = 1 for VE), the score
s(x, t) = −(x − m(t) μ) / v(t) makes the probability-flow ODE linear, and its exact flow is

    x_t − m(t) μ = (x_u − m(u) μ) · √(v(t) / v(u)).

``s2`` may be a float or a per-dimension tensor ``[D]`` (diagonal covariance, for ``x`` of shape [B, D]).
"""

import pytest
import torch


def _t(t):
    return torch.as_tensor(t, dtype=torch.float64)


def mean_scale(sde, t):
    return sde.marginal_mean_scale(_t(t))


def var(sde, t, s2):
    t = _t(t)
    if hasattr(sde, "sigma"):
        return s2 + sde.sigma(t) ** 2
    m = sde.marginal_mean_scale(t)
    return 1.0 + m**2 * (s2 - 1.0)


def score(sde, mu, s2):
    """score_fn(x, t) of the Gaussian marginals (t: per-sample [B])."""

    def fn(x, t):
        shape = (-1,) + (1,) * (x.dim() - 1)
        td = t.double().reshape(shape)
        m, v = mean_scale(sde, td), var(sde, td, s2)
        return (-(x.double() - m * mu) / v).to(x.dtype)

    return fn


def flow(sde, x, mu, s2, u, t):
    """The exact PF-ODE map from time u to time t."""
    r = torch.sqrt(var(sde, t, s2) / var(sde, u, s2))
    return mean_scale(sde, t) * mu + (x - mean_scale(sde, u) * mu) * r


def model_logp(sde, x, mu, s2, eps):
    """log density at time eps of the prior N(0, prior_std² I) pushed through the exact flow from t = 1."""
    r = torch.sqrt(var(sde, eps, s2) / var(sde, 1.0, s2))
    x1 = flow(sde, x.double(), mu, s2, eps, 1.0)
    return sde.prior_logp(x1) - torch.log(r).expand(x[0].shape).sum()


@pytest.fixture
def one_thread():
    """These tests use tiny tensors: intra-op threads only add contention on a busy 2-core machine
    (measured 10-20x slower with 2 threads under load), so run them on one and restore afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
