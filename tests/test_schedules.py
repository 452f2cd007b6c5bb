"""Noise-level schedules (fastlangevin.schedules): geometric sigmas and per-sample level draws."""

import pytest
import torch

import fastlangevin as fl


def test_geometric_sigmas():
    s = fl.geometric_sigmas(50.0, 0.01, 232, dtype=torch.float64)
    assert s.shape == (232,) and s[0].item() == 50.0 and s[-1].item() == 0.01
    ratios = s[1:] / s[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, (0.01 / 50.0) ** (1 / 231)), atol=0, rtol=1e-12)
    s32 = fl.geometric_sigmas(1, 0.01, 10)
    assert s32.dtype == torch.float32 and (s32[1:] < s32[:-1]).all()
    assert torch.equal(fl.geometric_sigmas(0.5, 0.5, 1), torch.tensor([0.5]))


@pytest.mark.parametrize(
    "args,exc,match",
    [
        ((0.01, 1.0, 10), ValueError, "sigma_max"),
        ((1.0, 0.0, 10), ValueError, "sigma_min"),
        ((float("inf"), 0.1, 10), ValueError, "sigma_max"),
        ((1.0, float("nan"), 10), ValueError, "sigma_min"),
        ((1.0, 0.1, 0), ValueError, "n"),
        ((1.0, 0.1, 2.5), ValueError, "n"),
        ((1.0, 0.1, 1), ValueError, "n=1"),
        (("1", 0.1, 3), TypeError, "sigma_max"),
    ],
)
def test_geometric_sigmas_bad_input(args, exc, match):
    with pytest.raises(exc, match=match):
        fl.geometric_sigmas(*args)


def test_sample_noise_levels_honours_generator():
    from scipy import stats

    sigmas = fl.geometric_sigmas(1.0, 0.01, 10)
    i1, s1 = fl.sample_noise_levels(sigmas, 20000, generator=torch.Generator().manual_seed(3))
    i2, s2 = fl.sample_noise_levels(sigmas, 20000, generator=torch.Generator().manual_seed(3))
    i3, _ = fl.sample_noise_levels(sigmas, 20000, generator=torch.Generator().manual_seed(4))
    assert torch.equal(i1, i2) and torch.equal(s1, s2) and not torch.equal(i1, i3)
    assert i1.dtype == torch.int64 and torch.equal(s1, sigmas[i1])
    counts = torch.bincount(i1, minlength=10).double()
    assert stats.chisquare(counts.numpy()).pvalue > 1e-4
    torch.manual_seed(8)
    a = fl.sample_noise_levels(sigmas, 50)[0]
    torch.manual_seed(8)
    assert torch.equal(a, fl.sample_noise_levels(sigmas, 50)[0])


@pytest.mark.parametrize(
    "sigmas,batch,gen,exc,match",
    [
        ([1.0, 0.1], 4, None, TypeError, "sigmas"),
        (torch.tensor([1, 2]), 4, None, TypeError, "sigmas"),
        (torch.ones(2, 2), 4, None, ValueError, "sigmas"),
        (torch.tensor([]), 4, None, ValueError, "sigmas"),
        (torch.tensor([1.0, 0.0]), 4, None, ValueError, "sigmas"),
        (torch.tensor([1.0, 0.1]), 0, None, ValueError, "batch_size"),
        (torch.tensor([1.0, 0.1]), 4, "g", TypeError, "generator"),
    ],
)
def test_sample_noise_levels_bad_input(sigmas, batch, gen, exc, match):
    with pytest.raises(exc, match=match):
        fl.sample_noise_levels(sigmas, batch, generator=gen)
