"""EDM samplers with the exact denoiser of Gaussian data N(μ, s² I) (x = x_data + σ z)."""

import math

import pytest
import torch

from fastlangevin import track_backends
from fastlangevin.edm import edm_sample, karras_sigmas
from tests.gaussian_sde import one_thread  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("one_thread")

MU, S2, SMAX = 0.5, 0.09, 80.0


def denoiser(x, sigma):
    v = sigma.double().reshape((-1,) + (1,) * (x.dim() - 1)) ** 2
    return (MU + S2 / (S2 + v) * (x.double() - MU)).to(x.dtype)


def _x0(b=2000, d=2, seed=0):
    return torch.randn(b, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * SMAX


def _exact(x0):
    """The exact PF-ODE map from σ_max to 0: x − μ scales by √(s² / (s² + σ_max²))."""
    return MU + (x0 - MU) * math.sqrt(S2 / (S2 + SMAX**2))


def test_karras_sigmas():
    s = karras_sigmas(5, 0.002, 80.0, 7.0)
    assert s.shape == (6,) and s[-1] == 0 and torch.all(s[1:] < s[:-1])
    torch.testing.assert_close(s[0].item(), 80.0)
    torch.testing.assert_close(s[-2].item(), 0.002)
    mid = (80.0 ** (1 / 7) + 0.5 * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    torch.testing.assert_close(s[2].item(), mid)


def test_deterministic_heun_recovers_the_pushforward_moments():
    x0 = _x0()
    x, nfe = edm_sample(denoiser, x0, karras_sigmas(80), return_nfe=True)
    assert nfe == 2 * 80 - 1
    r2 = S2 / (S2 + SMAX**2)
    mean, var = MU * (1 - math.sqrt(r2)), SMAX**2 * r2  # of the N(0, σ_max²) start pushed through the ODE
    n = x.numel()  # iid entries; the Heun bias at 80 steps is ~5e-4 in the variance (measured), < 0.2 SE
    assert abs(x.mean().item() - mean) < 5 * math.sqrt(var / n)
    assert abs(x.var().item() - var) < 5 * var * math.sqrt(2 / (n - 1))


@pytest.mark.parametrize("n", [18, 25, 40])
def test_heun_beats_euler_at_equal_nfe(n):
    x0 = _x0(200)
    exact = _exact(x0)
    xh, nfe = edm_sample(denoiser, x0, karras_sigmas(n), return_nfe=True)
    xe, nfe_e = edm_sample(denoiser, x0, karras_sigmas(nfe), method="euler", return_nfe=True)
    assert nfe_e == nfe
    assert (xh - exact).abs().max() < 0.8 * (xe - exact).abs().max()  # measured ratio 0.75, 0.50, 0.30


@pytest.mark.parametrize("method,n,churn", [("heun", 300, 40.0), ("euler_ancestral", 1000, 0.0)])
def test_stochastic_samplers_recover_the_target(method, n, churn):
    # The stochastic samplers target the data N(μ, s²) itself. Residual biases: the N(0, σ_max²) start
    # (mean off by ≤ μ·s/σ_max = 0.002) and first-order discretisation (variance -0.0005 for Heun at 300
    # steps, -0.0015 for ancestral at 1000, extrapolated from 100/300 steps), both < 0.6 SE here.
    x0 = _x0()
    x = edm_sample(
        denoiser, x0, karras_sigmas(n), method=method, s_churn=churn, generator=torch.Generator().manual_seed(1)
    )
    n_el = x.numel()
    assert abs(x.mean().item() - MU) < 5 * math.sqrt(S2 / n_el)
    assert abs(x.var().item() - S2) < 5 * S2 * math.sqrt(2 / (n_el - 1))


def test_noise_is_keyed_by_sample_and_reproducible(device_backend):
    device, backend = device_backend
    x0 = _x0(6, 4).float().to(device)
    sig = karras_sigmas(4)

    def run(x, off=0):
        g = torch.Generator(device=device).manual_seed(3)
        return edm_sample(denoiser, x, sig, s_churn=2.0, generator=g, backend=backend, rng="philox", sample_offset=off)

    with track_backends() as ran:
        full = run(x0)
    assert {b for _, b in ran} == {backend}
    assert torch.equal(full, run(x0))
    assert torch.equal(run(x0[:2]), full[:2]) and torch.equal(run(x0[2:], off=2), full[2:])


def test_no_churn_draws_no_noise():
    g = torch.Generator().manual_seed(0)
    before = g.get_state()
    edm_sample(denoiser, _x0(4), karras_sigmas(5), generator=g)
    assert torch.equal(g.get_state(), before)


def test_bad_input():
    x0 = _x0(4)
    with pytest.raises(ValueError, match="decreasing"):
        edm_sample(denoiser, x0, [80.0, 10.0, 20.0, 0.0])
    with pytest.raises(ValueError, match="at least 2"):
        edm_sample(denoiser, x0, [80.0])
    with pytest.raises(ValueError, match="denoiser must return"):
        edm_sample(lambda x, s: x[:, :1], x0, karras_sigmas(3))
    with pytest.raises(ValueError, match="method"):
        edm_sample(denoiser, x0, karras_sigmas(3), method="dpm")
    with pytest.raises(ValueError, match="s_churn"):
        edm_sample(denoiser, x0, karras_sigmas(3), s_churn=-1.0)
    with pytest.raises(ValueError, match="s_tmin"):
        edm_sample(denoiser, x0, karras_sigmas(3), s_tmin=5.0, s_tmax=1.0)
    with pytest.raises(ValueError, match="sigma_min"):
        karras_sigmas(5, sigma_min=100.0)
