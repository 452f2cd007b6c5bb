"""log_likelihood and bits_per_dim against the closed-form model density of Gaussian data."""

import math

import pytest
import torch

import fastlangevin as fl
from fastlangevin import track_backends
from fastlangevin.likelihood import bits_per_dim, log_likelihood
from tests.gaussian_sde import (
    model_logp,
    one_thread,  # noqa: F401 - fixture
    score,
)

pytestmark = pytest.mark.usefixtures("one_thread")

MU = 0.5
S2_ISO = 0.3**2
S2_DIAG = torch.tensor([0.05, 0.3, 1.5, 4.0], dtype=torch.float64)  # anisotropic: Hutchinson is random
SDES = {"ve": fl.VESDE(), "vp": fl.VPSDE()}


def _data(b, d, s2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (MU + torch.randn(b, d, dtype=torch.float64, generator=g) * torch.as_tensor(s2).sqrt()).float()


@pytest.mark.parametrize("name", sorted(SDES))
def test_exact_trace_matches_the_model_density(name):
    sde = SDES[name]
    x = _data(16, 4, S2_DIAG)
    r = log_likelihood(score(sde, MU, S2_DIAG), sde, x, trace="exact")
    ref = model_logp(sde, x, MU, S2_DIAG, sde.sampling_eps)
    assert (r.logp - ref).abs().max().item() / 4 <= 1e-3
    torch.testing.assert_close(r.logp, r.prior_logp + r.delta_logp)
    assert r.latent.shape == x.shape and r.nfe > 10


def _rotated(sde):
    """Score of N(μ, Q diag(S2_DIAG) Qᵀ) for a fixed rotation Q (a non-diagonal Jacobian: Rademacher
    probes are random too), the rotation Q and the mean in the eigenbasis."""
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(7)))
    mu_y = torch.full((4,), MU, dtype=torch.float64) @ q
    diag = score(sde, mu_y, S2_DIAG)
    return (lambda x, t: (diag(x.double() @ q, t) @ q.T).to(x.dtype)), q, mu_y


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
@pytest.mark.parametrize("name", sorted(SDES))
def test_hutchinson_is_unbiased_within_5_se(name, probe):
    sde = SDES[name]
    B = 200
    sc, q, mu_y = _rotated(sde)
    x = (_data(B, 4, S2_DIAG, seed=1).double() - MU) @ q.T + MU
    r = log_likelihood(sc, sde, x, method="rk4", n_steps=60, probe=probe, generator=torch.Generator().manual_seed(2))
    ref = model_logp(sde, x @ q, mu_y, S2_DIAG, sde.sampling_eps)  # the density is rotation-invariant
    err = r.logp - ref  # independent probes per sample: iid errors; rk4 bias at 60 steps < 1e-3 nats (measured)
    se = err.std().item() / math.sqrt(B)
    assert se > 0.01  # the estimator really is random here (anisotropic Jacobian)
    assert abs(err.mean().item()) < 5 * se, (err.mean().item(), se)


@pytest.mark.parametrize("name", sorted(SDES))
def test_rademacher_is_exact_for_isotropic_linear_drift(name):
    sde = SDES[name]
    x = _data(8, 5, S2_ISO)
    sc = score(sde, MU, S2_ISO)
    kw = dict(method="rk4", n_steps=30)
    exact = log_likelihood(sc, sde, x, trace="exact", **kw).logp
    hutch = log_likelihood(sc, sde, x, probe="rademacher", generator=torch.Generator().manual_seed(0), **kw).logp
    torch.testing.assert_close(hutch, exact, rtol=0, atol=1e-9)  # fp64 sums of the same D terms, reordered
    gauss = log_likelihood(sc, sde, x, probe="gaussian", generator=torch.Generator().manual_seed(0), **kw).logp
    assert (gauss - exact).abs().max() > 0.1  # Gaussian probes are not exact here


@pytest.mark.parametrize("method", ["heun", "rk45"])
def test_hutchinson_batch_invariance_and_reproducibility(method):
    sde = fl.VPSDE()
    sc = score(sde, MU, S2_DIAG)
    x = _data(6, 4, S2_DIAG, seed=3)
    kw = dict(method=method, n_steps=None if method == "rk45" else 10)

    def run(xs, off=0):
        return log_likelihood(sc, sde, xs, generator=torch.Generator().manual_seed(9), sample_offset=off, **kw).logp

    full = run(x)
    assert torch.equal(full, run(x))
    head, tail = run(x[:2]), run(x[2:], off=2)
    if method == "rk45":  # shared step sizes: equal within the solver tolerance
        torch.testing.assert_close(torch.cat([head, tail]), full, rtol=0, atol=1e-3)
    else:
        assert torch.equal(head, full[:2]) and torch.equal(tail, full[2:])


def test_triton_backend_runs_the_updates():
    sde = fl.VPSDE()
    x = _data(4, 4, S2_DIAG)
    sc = score(sde, MU, S2_DIAG)
    with track_backends() as ran:
        a = log_likelihood(sc, sde, x, method="euler", n_steps=3, backend="triton", generator=torch.Generator())
    assert {b for _, b in ran} == {"triton"}
    b = log_likelihood(sc, sde, x, method="euler", n_steps=3, backend="torch", generator=torch.Generator())
    torch.testing.assert_close(a.logp, b.logp, rtol=1e-6, atol=1e-5)


def test_bits_per_dim_convention():
    # the uniform density on [0, 1]^D (logp = 0) costs exactly 8 bits per 256-level pixel;
    # on [-1, 1] the density is 2^-D, the same data, so the same 8 bits
    x = torch.rand(3, 2, 4)
    zero = torch.zeros(3)
    torch.testing.assert_close(bits_per_dim(zero, x), torch.full((3,), 8.0, dtype=torch.float64))
    half = torch.full((3,), -8 * math.log(2.0))
    torch.testing.assert_close(bits_per_dim(half, x, data_range=(-1, 1)), torch.full((3,), 8.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="data_range"):
        bits_per_dim(zero, x, data_range=(1, 0))
    with pytest.raises(ValueError, match="logp"):
        bits_per_dim(torch.zeros(2), x)


def test_bad_input():
    sde = fl.VPSDE()
    sc = score(sde, MU, S2_ISO)
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="trace"):
        log_likelihood(sc, sde, x, trace="skilling")
    with pytest.raises(ValueError, match="probe"):
        log_likelihood(sc, sde, x, probe="sphere")
    with pytest.raises(ValueError, match="n_probes"):
        log_likelihood(sc, sde, x, n_probes=0)
    with pytest.raises(ValueError, match="rtol"):
        log_likelihood(sc, sde, x, rtol=-1e-5)
    with pytest.raises(ValueError, match="eps"):
        log_likelihood(sc, sde, x, eps=2.0)
    with pytest.raises(ValueError, match="autograd"):
        log_likelihood(lambda x, t: torch.zeros_like(x), sde, x, method="euler", n_steps=1)
