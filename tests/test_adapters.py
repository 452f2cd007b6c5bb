"""Adapters between score, noise-prediction and denoiser models (exact Gaussian models as the oracle)."""

import pytest
import torch

import fastlangevin as fl
from fastlangevin.adapters import denoiser_from_score, eps_from_score, score_from_denoiser, score_from_eps
from fastlangevin.edm import edm_sample, karras_sigmas
from fastlangevin.probability_flow import ode_sample
from tests.gaussian_sde import (
    one_thread,  # noqa: F401 - fixture
    score,
)

pytestmark = pytest.mark.usefixtures("one_thread")

MU, S2 = 0.5, 0.09


def denoiser(x, sigma):
    v = sigma.double().reshape((-1,) + (1,) * (x.dim() - 1)) ** 2
    return (MU + S2 / (S2 + v) * (x.double() - MU)).to(x.dtype)


def _x(b=5, d=3):
    return torch.randn(b, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def test_sigma_parametrised_round_trip():
    x, sig = _x(), torch.tensor([0.1, 0.5, 1.0, 3.0, 10.0], dtype=torch.float64)
    s = score_from_denoiser(denoiser)(x, sig)
    torch.testing.assert_close(s, -(x - MU) / (S2 + sig[:, None] ** 2))
    torch.testing.assert_close(denoiser_from_score(score_from_denoiser(denoiser))(x, sig), denoiser(x, sig))


@pytest.mark.parametrize("sde", [fl.VESDE(), fl.VPSDE()], ids=["ve", "vp"])
def test_sde_adapters_give_the_exact_score(sde):
    x, t = _x(), torch.tensor([0.01, 0.2, 0.5, 0.8, 1.0], dtype=torch.float64)
    exact = score(sde, MU, S2)
    torch.testing.assert_close(score_from_denoiser(denoiser, sde)(x, t), exact(x, t))
    std = sde.marginal_std(t)[:, None]
    eps = lambda x, t: -std * exact(x, t)  # noqa: E731 - the exact noise predictor
    torch.testing.assert_close(score_from_eps(eps, sde)(x, t), exact(x, t))
    torch.testing.assert_close(eps_from_score(exact, sde)(x, t), eps(x, t))
    sig = sde.marginal_std(t) / sde.marginal_mean_scale(t)
    torch.testing.assert_close(denoiser_from_score(exact, sde)(x, sig), denoiser(x, sig))


def test_every_sampler_takes_every_model():
    sde = fl.VPSDE()
    x1 = _x(64, 2)
    by_score = ode_sample(score(sde, MU, S2), sde, x1, method="rk4", n_steps=20)
    by_denoiser = ode_sample(score_from_denoiser(denoiser, sde), sde, x1, method="rk4", n_steps=20)
    torch.testing.assert_close(by_denoiser, by_score)
    sig = karras_sigmas(10, sigma_max=80.0)
    x0 = x1 * 80.0
    torch.testing.assert_close(
        edm_sample(denoiser_from_score(score(fl.VESDE(0.002, 80.0), MU, S2), fl.VESDE(0.002, 80.0)), x0, sig),
        edm_sample(denoiser, x0, sig),
    )


def test_bad_input():
    with pytest.raises(TypeError, match="denoiser"):
        score_from_denoiser(3)
    with pytest.raises(TypeError, match="sde"):
        score_from_eps(lambda x, t: x, "vp")
    bad = score_from_denoiser(lambda x, s: x[:1])
    with pytest.raises(ValueError, match="denoiser must return"):
        bad(_x(), torch.ones(5))


def test_diffusers_unet_adapter():
    diffusers = pytest.importorskip("diffusers")
    from fastlangevin.adapters_diffusers import score_from_diffusers_unet

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()
    sde = fl.VPSDE()
    sc = score_from_diffusers_unet(unet, sde)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([0.3, 0.9])
    with torch.no_grad():
        eps = unet(x, t * 999).sample
        s = sc(x, t)
    torch.testing.assert_close(s, -eps / sde.marginal_std(t.double()).float()[:, None, None, None])
    out = ode_sample(sc, sde, shape=(2, 1, 8, 8), method="euler", n_steps=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()
    with pytest.raises(TypeError, match="VPSDE"):
        score_from_diffusers_unet(unet, fl.VESDE())
