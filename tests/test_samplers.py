"""Samplers: statistics on known targets, reference implementations step for step, batch
invariance and reproducibility, backend agreement, options and bad input.

Statistical tests run the PyTorch backend with many chains (cheap on CPU); the Triton kernels
(interpreter on CPU) only run short agreement runs with the same noise (rng="philox").
"""

import math

import pytest
import torch

import fastlangevin as fl
from fastlangevin import NonFiniteError, Trace, track_backends
from fastlangevin._rng import draw_seed, philox_normal
from fastlangevin.sampling import PHASES, sample_prior

from .conftest import requires_cuda
from .mcse import assert_mean_within, assert_var_within, independent, slow_test

CPU = torch.device("cpu")


def gaussian_score(mu, var):
    return lambda x, *args: -(x - mu) / var


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------
def check_ula_stationary_variance(seed):
    """ULA on N(μ, σ²) is stationary at σ² / (1 - ε/(2σ²)), not σ² (BACKGROUND.md)."""
    mu, var, eps = 1.0, 2.0, 1.0  # ε/σ² = 0.5: the stationary variance is 4/3 σ²
    g = gen(seed)
    x0 = mu + math.sqrt(var) * torch.randn(8000, 2, generator=g)
    x = fl.langevin(gaussian_score(mu, var), x0, step_size=eps, n_steps=60, generator=g, backend="torch")
    want = var / (1 - eps / (2 * var))
    # 60 steps contract the start's error by 0.5^60: the final states are independent stationary draws.
    # Dimensions pooled (independent): 16000 draws, MCSE of the variance ~1.1%; σ² is 33% off.
    draws = independent(x.reshape(-1, 1))
    assert_mean_within(draws, mu)
    assert_var_within(draws, want)


def test_ula_reaches_exact_discrete_stationary_variance():
    check_ula_stationary_variance(0)


def check_mala_true_variance(seed):
    mu, var, eps = -0.5, 1.5, 1.5  # ULA with this step would settle at 2σ²
    g = gen(seed)
    x0 = mu + 2.0 * math.sqrt(var) * torch.randn(6000, 2, generator=g)  # start 4x too wide

    def log_prob(x):
        return -0.5 * ((x - mu) ** 2).sum(dim=1) / var

    x, acc = fl.mala(log_prob, x0, step_size=eps, n_steps=150, generator=g, backend="torch")
    assert acc.shape == (6000,)
    draws = independent(x.reshape(-1, 1))  # independent chains and dimensions
    assert_mean_within(draws, mu)
    assert_var_within(draws, var)
    assert 0.3 < acc.mean().item() < 0.95
    assert (acc > 0).all() and (acc < 1).all()  # every chain both accepted and rejected


def test_mala_reaches_true_variance_with_partial_acceptance():
    check_mala_true_variance(1)


# Two 1-D modes ±4, component variance 1, unequal weights 0.2 / 0.8.
MODES = torch.tensor([-4.0, 4.0])
LOG_W = torch.log(torch.tensor([0.2, 0.8]))


def mixture_score(x, sigma=None):
    """Exact score of the mixture convolved with N(0, σ²): components N(±4, 1 + σ²)."""
    var = 1.0 if sigma is None else (1.0 + sigma**2)[:, None]
    d = MODES[None, :] - x
    r = torch.softmax(LOG_W[None, :] - 0.5 * d**2 / var, dim=1)
    return (r * d).sum(dim=1, keepdim=True) / var


def check_annealed_mixture(seed):
    g = gen(seed)
    x0 = torch.rand(4000, 1, generator=g) * 16 - 8  # broad, symmetric start
    sigmas = torch.logspace(math.log10(15), math.log10(0.5), 8)
    xa = fl.annealed_langevin(mixture_score, x0, sigmas, n_steps_each=30, step_lr=0.1, generator=g, backend="torch")
    xp = fl.langevin(mixture_score, x0, step_size=0.1, n_steps=240, generator=g, backend="torch")
    wa, wp = (xa > 0).double().mean().item(), (xp > 0).double().mean().item()
    se = math.sqrt(0.8 * 0.2 / 4000)  # binomial SE of a weight from 4000 independent chains: 0.0063
    # Annealed: 0.8, less a systematic deficit that no MCSE covers: finite steps per level freeze chains on the
    # wrong side (0.76–0.78 over seeds at 30 steps a level; 0.785–0.79 at 100), so the bound is that deficit
    # (≤ 0.03) plus 3 SE, not an MCSE test. Plain: stuck with the start's 50/50 split, > 40 SE from the target.
    assert -(0.03 + 3 * se) < wa - 0.8 < 3 * se
    assert abs(wp - 0.8) > 40 * se and abs(wp - 0.5) < 0.05
    assert (xa.abs() - 4).abs().mean() < 1.0  # on the modes, not in between


def test_annealed_recovers_mixture_weights_plain_does_not():
    check_annealed_mixture(2)


def ve_gaussian(mu, s2, sde):
    """Exact score of N(μ, s²) data perturbed by the VE SDE at time t: -(x-μ)/(s² + σ(t)²)."""

    def score(x, t):
        var = s2 + sde.marginal_std(t).to(x.dtype) ** 2
        return -(x - mu) / var.reshape((-1,) + (1,) * (x.dim() - 1))

    return score


def vp_gaussian(mu, s2, sde):
    def score(x, t):
        m = sde.marginal_mean_scale(t).to(x.dtype).reshape((-1,) + (1,) * (x.dim() - 1))
        sd = sde.marginal_std(t).to(x.dtype).reshape(m.shape)
        return -(x - m * mu) / (m**2 * s2 + sd**2)

    return score


# The SNR corrector is ULA with ε = 2r²(‖z‖/‖s‖)² ≈ 2r²σ_t² on a Gaussian, whose stationary variance is
# σ_t²/(1 - r²): the PC samplers return s²/(1 - r²) (+2.6% at the default r = 0.16), and that is the truth the
# variance is tested against (16000 pooled independent values: MCSE ~1.1%).
PC_VAR_FACTOR = 1 / (1 - 0.16**2)


def check_pc_ve(predictor, seed):
    mu, s2 = 1.5, 0.25
    sde = fl.VESDE(sigma_min=0.01, sigma_max=10.0)
    x = fl.pc_sample(
        ve_gaussian(mu, s2, sde),
        sde,
        shape=(4000, 4),
        n_steps=150,
        predictor=predictor,
        generator=gen(seed),
        backend="torch",
    )
    draws = independent(x.reshape(-1, 1))
    assert_mean_within(draws, mu)
    assert_var_within(draws, s2 * PC_VAR_FACTOR)


@pytest.mark.parametrize("predictor", ["reverse_diffusion", "euler_maruyama"])
def test_pc_ve_returns_data_gaussian(predictor):
    check_pc_ve(predictor, 3)


def check_pc_vp(seed):
    mu, s2 = -1.0, 0.5
    sde = fl.VPSDE()
    x = fl.pc_sample(vp_gaussian(mu, s2, sde), sde, shape=(4000, 4), n_steps=150, generator=gen(seed), backend="torch")
    draws = independent(x.reshape(-1, 1))
    assert_mean_within(draws, mu)
    assert_var_within(draws, s2 * PC_VAR_FACTOR)


def test_pc_vp_returns_data_gaussian():
    check_pc_vp(4)


@slow_test
def test_statistical_tests_pass_for_20_seeds(seed):
    """Each statistical test above, once per seed 100 … 119 (issue 15: no test may depend on a lucky seed)."""
    s = 100 + seed
    check_ula_stationary_variance(s)
    check_mala_true_variance(s)
    check_annealed_mixture(s)
    check_pc_ve("reverse_diffusion", s)
    check_pc_ve("euler_maruyama", s)
    check_pc_vp(s)
    check_mala_adaptation(s)
    check_mala_preconditioning(s)


# ---------------------------------------------------------------------------------------
# Reference implementations, written from the published equations (noise from the same
# Philox stream: one seed draw per fused-op call, in the sampler's call order)
# ---------------------------------------------------------------------------------------
def ref_noise(g, x, offset):
    seed = draw_seed(CPU, g)
    row = x[0].numel()
    return philox_normal(seed, offset * row, x.numel()).view(x.shape).to(x.dtype)


def ref_ncsn(score_fn, x0, sigmas, T, step_lr, g, offset, denoise):
    """Song & Ermon 2019, Algorithm 1 (+ the NCSNv2 final denoising step)."""
    x, B = x0.clone(), x0.shape[0]
    states = [x.clone()]
    for sigma in sigmas:
        a = step_lr * sigma**2 / sigmas[-1] ** 2
        for _ in range(T):
            s = score_fn(x, torch.full((B,), sigma, dtype=x.dtype))
            x = x + a * s + math.sqrt(2 * a) * ref_noise(g, x, offset)
            states.append(x.clone())
    if denoise:
        x = x + sigmas[-1] ** 2 * score_fn(x, torch.full((B,), sigmas[-1], dtype=x.dtype))
    return x, states


def ref_pc(score_fn, kind, params, x, N, eps, snr, n_corr, g, offset, predictor="reverse_diffusion"):
    """Song et al. 2020: Langevin corrector (batch-averaged norms) then predictor, noise removed
    at the end. ``kind``: "ve" (params σ_min, σ_max) or "vp" (params β_min, β_max)."""
    B = x.shape[0]
    ts = [1.0 + (eps - 1.0) * i / (N - 1) for i in range(N)] if N > 1 else [1.0]
    lo, hi = params
    states = []
    for i, t in enumerate(ts):
        tb = torch.full((B,), t, dtype=x.dtype)
        k = N - 1 - i
        if kind == "ve":
            alpha = 1.0
            sig = lambda k: lo * (hi / lo) ** (k / (N - 1)) if k >= 0 else 0.0  # noqa: E731
        else:
            beta_k = lo / N + (hi / N - lo / N) * k / (N - 1)
            alpha = 1.0 - beta_k
        for _ in range(n_corr):
            z = ref_noise(g, x, offset)
            s = score_fn(x, tb)
            ratio = z.reshape(B, -1).norm(dim=1).mean() / s.reshape(B, -1).norm(dim=1).mean()
            e = 2 * alpha * (snr * ratio) ** 2
            x = x + e * s + torch.sqrt(2 * e) * z
        s = score_fn(x, tb)
        last = i == N - 1
        if predictor == "reverse_diffusion":
            if kind == "ve":
                var = sig(k) ** 2 - sig(k - 1) ** 2
                x_mean, noise_std = x + var * s, math.sqrt(var)
            else:
                f = math.sqrt(alpha) * x - x  # discretised forward drift
                x_mean, noise_std = x - (f - beta_k * s), math.sqrt(beta_k)
        else:  # Euler–Maruyama on the reverse SDE, dt = -1/N
            if kind == "ve":
                g2 = (lo * (hi / lo) ** t) ** 2 * 2 * math.log(hi / lo)
                drift = -g2 * s
            else:
                bt = lo + t * (hi - lo)
                g2 = bt
                drift = -0.5 * bt * x - g2 * s
            x_mean, noise_std = x + drift * (-1.0 / N), math.sqrt(g2 / N)
        x = x_mean if last else x_mean + noise_std * ref_noise(g, x, offset)
        states.append(x.clone())
    return x, states


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 2e-5)], ids=["fp64", "fp32"])
def test_annealed_matches_ncsn_reference(dtype, atol):
    x0 = torch.randn(5, 3, generator=gen(5), dtype=dtype)
    sigmas, T, lr, offset = [2.0, 1.0, 0.5], 3, 0.05, 4
    score = gaussian_score(0.3, 0.8)
    trace = Trace(every=1)
    out = fl.annealed_langevin(
        score,
        x0,
        sigmas,
        n_steps_each=T,
        step_lr=lr,
        generator=gen(6),
        backend="torch",
        rng="philox",
        sample_offset=offset,
        trace=trace,
    )
    want, states = ref_ncsn(score, x0, sigmas, T, lr, gen(6), offset, denoise=True)
    assert trace.steps == list(range(len(sigmas) * T + 1))
    for got, ref in zip(trace.states, states):
        torch.testing.assert_close(got, ref, atol=atol, rtol=atol)
    torch.testing.assert_close(out, want, atol=atol, rtol=atol)


@pytest.mark.parametrize(
    "kind,predictor",
    [("ve", "reverse_diffusion"), ("vp", "reverse_diffusion"), ("ve", "euler_maruyama"), ("vp", "euler_maruyama")],
)
def test_pc_matches_score_sde_reference(kind, predictor):
    dtype, N, snr, offset = torch.float64, 4, 0.16, 2
    if kind == "ve":
        sde, params = fl.VESDE(sigma_min=0.05, sigma_max=5.0), (0.05, 5.0)
        score = ve_gaussian(0.5, 0.3, sde)
    else:
        sde, params = fl.VPSDE(beta_min=0.1, beta_max=3.0), (0.1, 3.0)  # β_max/N < 1
        score = vp_gaussian(0.5, 0.3, sde)
    g_ours, g_ref = gen(7), gen(7)
    trace = Trace(every=1)
    out = fl.pc_sample(
        score,
        sde,
        shape=(6, 2, 3),
        dtype=dtype,
        n_steps=N,
        n_corrector_steps=2,
        snr=snr,
        predictor=predictor,
        generator=g_ours,
        backend="torch",
        rng="philox",
        sample_offset=offset,
        trace=trace,
    )
    x_prior = sde.prior_std * ref_noise(g_ref, torch.empty(6, 2, 3, dtype=dtype), offset)
    want, states = ref_pc(score, kind, params, x_prior, N, sde.sampling_eps, snr, 2, g_ref, offset, predictor)
    torch.testing.assert_close(trace.states[0], x_prior, atol=1e-12, rtol=0)
    for got, ref in zip(trace.states[1:], states):
        torch.testing.assert_close(got, ref, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(out, want, atol=1e-9, rtol=1e-9)
    assert torch.equal(g_ours.get_state(), g_ref.get_state())  # same number of seed draws


# ---------------------------------------------------------------------------------------
# Batch invariance, reproducibility, backends
# ---------------------------------------------------------------------------------------
VP_SMALL = fl.VPSDE(beta_min=0.1, beta_max=2.0)  # few steps need β_max/N < 1


def _runners():
    score = gaussian_score(0.2, 0.7)
    ve = fl.VESDE(sigma_min=0.05, sigma_max=3.0)

    def log_prob(x):
        return -0.5 * (x**2).sum(dim=(1, 2)) / 0.7

    return {
        "langevin": lambda x, **kw: fl.langevin(score, x, step_size=0.1, n_steps=4, **kw),
        "annealed": lambda x, **kw: fl.annealed_langevin(score, x, [1.0, 0.5], n_steps_each=2, step_lr=0.05, **kw),
        "pc_per_sample": lambda x, **kw: fl.pc_sample(
            ve_gaussian(0.2, 0.7, ve), ve, x, n_steps=3, corrector_norm="per_sample", **kw
        ),
        "pc_no_corrector": lambda x, **kw: fl.pc_sample(
            ve_gaussian(0.2, 0.7, ve), ve, x, n_steps=3, corrector="none", **kw
        ),
        "pc_vp_em": lambda x, **kw: fl.pc_sample(
            vp_gaussian(0.2, 0.7, VP_SMALL),
            VP_SMALL,
            x,
            n_steps=3,
            predictor="euler_maruyama",
            corrector_norm="per_sample",
            **kw,
        ),
        "mala": lambda x, **kw: fl.mala(log_prob, x, step_size=0.4, n_steps=4, **kw)[0],
    }


@pytest.mark.parametrize("name", list(_runners()))
def test_batch_invariant_and_reproducible(name):
    run = _runners()[name]
    x0 = torch.randn(5, 2, 3, generator=gen(8))
    whole = run(x0, generator=gen(9), backend="torch")
    assert torch.equal(run(x0, generator=gen(9), backend="torch"), whole)  # reproducible
    assert not torch.equal(run(x0, generator=gen(10), backend="torch"), whole)  # seed matters
    for i in (0, 3, 4):
        alone = run(x0[i : i + 1], generator=gen(9), backend="torch", sample_offset=i)
        torch.testing.assert_close(alone, whole[i : i + 1], atol=1e-6, rtol=1e-6)


def test_pc_batch_norms_couple_the_batch():
    """Documented: batch-averaged corrector norms make a sample depend on its batch."""
    ve = fl.VESDE(sigma_min=0.05, sigma_max=3.0)
    x0 = torch.randn(5, 4, generator=gen(11))
    whole = fl.pc_sample(ve_gaussian(0.0, 1.0, ve), ve, x0, n_steps=3, generator=gen(12), backend="torch")
    alone = fl.pc_sample(
        ve_gaussian(0.0, 1.0, ve), ve, x0[2:3], n_steps=3, generator=gen(12), backend="torch", sample_offset=2
    )
    assert not torch.allclose(alone, whole[2:3])


@pytest.mark.parametrize("name", ["langevin", "annealed", "pc_batch_norms", "pc_per_sample", "pc_vp_em", "mala"])
def test_interpreter_kernel_matches_fallback(name):
    if not fl._backend.triton_available():
        pytest.skip("needs Triton")
    ve = fl.VESDE(sigma_min=0.05, sigma_max=3.0)
    runners = dict(
        _runners(), pc_batch_norms=lambda x, **kw: fl.pc_sample(ve_gaussian(0.2, 0.7, ve), ve, x, n_steps=3, **kw)
    )
    run = runners[name]
    x0 = torch.randn(5, 2, 3, generator=gen(13))
    with track_backends() as ran:
        kern = run(x0, generator=gen(14), backend="triton", sample_offset=1)
    assert {b for _, b in ran} == {"triton"}
    assert (("corrector_norms", "triton") in ran) == (name in ("pc_batch_norms", "pc_per_sample", "pc_vp_em"))
    with track_backends() as ran:
        ref = run(x0, generator=gen(14), backend="torch", rng="philox", sample_offset=1)
    assert {b for _, b in ran} == {"torch"}
    torch.testing.assert_close(kern, ref, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize(
    "dtype,atol,rtol", [(torch.bfloat16, 0.05, 0.02), (torch.float16, 5e-3, 5e-3)], ids=["bf16", "fp16"]
)
@pytest.mark.parametrize("name", ["langevin", "annealed", "pc_per_sample"])
def test_low_precision_states_track_fp32(name, dtype, atol, rtol):
    """Half-precision states: same seeds, same fp32 noise and math, only storage rounding.
    (Not MALA: its accept/reject decisions are discontinuous in the state.)"""
    run = _runners()[name]
    x0 = torch.randn(5, 2, 3, generator=gen(26))
    ref = run(x0, generator=gen(27), backend="torch", rng="philox")
    out = run(x0.to(dtype), generator=gen(27), backend="torch", rng="philox")
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, atol=atol, rtol=rtol)


def test_per_sample_step_sizes_equal_separate_runs():
    score = gaussian_score(0.0, 1.0)
    x0 = torch.randn(3, 4, generator=gen(15))
    steps = torch.tensor([0.05, 0.2, 0.5])
    whole = fl.langevin(score, x0, step_size=steps, n_steps=5, generator=gen(16), rng="philox")
    for i in range(3):
        alone = fl.langevin(
            score, x0[i : i + 1], step_size=float(steps[i]), n_steps=5, generator=gen(16), rng="philox", sample_offset=i
        )
        torch.testing.assert_close(alone, whole[i : i + 1], atol=1e-6, rtol=1e-6)
    lrs = torch.tensor([0.01, 0.1, 0.02])
    whole = fl.annealed_langevin(score, x0, [1.0, 0.5], n_steps_each=2, step_lr=lrs, generator=gen(17))
    for i in range(3):
        alone = fl.annealed_langevin(
            score, x0[i : i + 1], [1.0, 0.5], n_steps_each=2, step_lr=float(lrs[i]), generator=gen(17), sample_offset=i
        )
        torch.testing.assert_close(alone, whole[i : i + 1], atol=1e-6, rtol=1e-6)


def test_mala_per_sample_steps_change_acceptance():
    x0 = torch.randn(2000, 2, generator=gen(18))
    eps = torch.cat([torch.full((1000,), 0.2), torch.full((1000,), 3.0)])
    _, acc = fl.mala(lambda x: -0.5 * (x**2).sum(1), x0, step_size=eps, n_steps=50, generator=gen(19))
    assert acc[:1000].mean() > acc[1000:].mean() + 0.2


# ---------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------
def test_trace_callback_and_progress(capsys):
    x0 = torch.randn(4, 3, generator=gen(20))
    seen = {}
    trace = Trace(every=2)
    out = fl.langevin(
        gaussian_score(0.0, 1.0),
        x0,
        step_size=0.1,
        n_steps=5,
        generator=gen(21),
        trace=trace,
        callback=lambda k, x: seen.__setitem__(k, x.clone()),
        progress=True,
    )
    assert sorted(seen) == [1, 2, 3, 4, 5]
    assert trace.steps == [0, 2, 4] and trace.states.shape == (3, 4, 3) and trace.states.device == x0.device
    assert torch.equal(trace.states[0], x0)
    assert torch.equal(trace.states[1], seen[2]) and torch.equal(trace.states[2], seen[4])
    assert torch.equal(seen[5], out)
    err = capsys.readouterr().err
    assert "langevin" in err


def test_progress_in_a_log_is_lines_with_rate_and_eta(capsys):
    # capsys's stderr is not a terminal: a log gets plain lines (no \r rewrites), with tqdm's rate and ETA
    fl.langevin(gaussian_score(0.0, 1.0), torch.zeros(4, 2), step_size=0.1, n_steps=40, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 3, lines  # start and end (a line per 30 s in between)
    assert "40/40" in lines[-1] and "step/s" in lines[-1] and "<00:00" in lines[-1]  # count, rate, ETA


def test_pc_sample_refuses_the_sde_class():
    for cls in (fl.VESDE, fl.VPSDE):
        with pytest.raises(TypeError, match=rf"pass an instance, e.g. {cls.__name__}\(\)"):
            fl.pc_sample(gaussian_score(0.0, 1.0), cls, shape=(4, 2), n_steps=2)
        with pytest.raises(TypeError, match="pass an instance"):
            sample_prior(cls, (4, 2))


def test_clamp_and_x0_untouched():
    x0 = torch.randn(50, 2, generator=gen(22)) * 3
    before = x0.clone()
    out = fl.annealed_langevin(
        gaussian_score(0.0, 4.0),
        x0,
        [2.0, 1.0],
        n_steps_each=3,
        step_lr=0.5,
        clamp=(-1.0, 1.0),
        generator=gen(23),
        denoise=False,
    )
    assert out.min() >= -1 and out.max() <= 1 and (out.abs() == 1).any()
    assert torch.equal(x0, before)


def test_score_from_energy():
    energy = lambda x, *a: 0.5 * ((x - 1.0) ** 2).sum(dim=1) / 2.0  # noqa: E731  N(1, 2)
    score = fl.score_from_energy(energy)
    x = torch.randn(6, 3)
    with torch.no_grad():
        torch.testing.assert_close(score(x), -(x - 1.0) / 2.0)
    x0 = torch.randn(3000, 1, generator=gen(24))
    out = fl.langevin(score, x0, step_size=0.2, n_steps=60, generator=gen(25))
    assert out.var().item() == pytest.approx(2.0 / (1 - 0.2 / 4.0), rel=0.08)
    with pytest.raises(ValueError, match="per-sample energies"):
        fl.score_from_energy(lambda x: x)(torch.randn(3, 2))


def test_profiler_labels_cover_the_phases():
    ve = fl.VESDE(sigma_min=0.05, sigma_max=2.0)
    x0 = torch.randn(3, 2)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fl.annealed_langevin(gaussian_score(0.0, 1.0), x0, [1.0], n_steps_each=1)
        fl.pc_sample(ve_gaussian(0.0, 1.0, ve), ve, x0, n_steps=2)
    names = {e.name for e in prof.events()}
    assert set(PHASES) <= names


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sigmas,match",
    [
        ([1.0, 2.0], "strictly decreasing"),
        ([1.0, 1.0], "strictly decreasing"),
        ([1.0, 0.0], "> 0"),
        ([1.0, -0.5], "> 0"),
        ([], "at least one"),
        (torch.ones(2, 2), "1-D"),
    ],
    ids=["increasing", "equal", "zero", "negative", "empty", "2d"],
)
def test_bad_sigmas(sigmas, match):
    with pytest.raises(ValueError, match=match):
        fl.annealed_langevin(gaussian_score(0, 1), torch.zeros(2, 2), sigmas)


def test_bad_step_counts():
    s, x = gaussian_score(0, 1), torch.zeros(2, 2)
    with pytest.raises(ValueError, match="n_steps must be an int >= 1"):
        fl.langevin(s, x, step_size=0.1, n_steps=0)
    with pytest.raises(ValueError, match="n_steps_each must be an int >= 1"):
        fl.annealed_langevin(s, x, [1.0], n_steps_each=0)
    with pytest.raises(ValueError, match="n_steps must be an int >= 1"):
        fl.pc_sample(s, fl.VESDE(), x, n_steps=0)
    with pytest.raises(ValueError, match="n_steps must be an int >= 1"):
        fl.mala(lambda x: -(x**2).sum(1), x, step_size=0.1, n_steps=-1)


def test_score_fn_of_wrong_shape():
    with pytest.raises(ValueError, match=r"score_fn must return a tensor shaped like x \(4, 2\), got \(4,\)"):
        fl.langevin(lambda x: x.sum(1), torch.zeros(4, 2), step_size=0.1, n_steps=2)
    with pytest.raises(ValueError, match="score_fn must return a tensor shaped like x"):
        fl.pc_sample(lambda x, t: x[:, :1], fl.VESDE(), torch.zeros(4, 2), n_steps=2)
    with pytest.raises(ValueError, match=r"log_prob_fn must return per-sample log-densities of shape \[4\]"):
        fl.mala(lambda x: -(x**2).sum(), torch.zeros(4, 2), step_size=0.1, n_steps=2)


def test_on_nonfinite_raise_names_the_step():
    calls = []

    def score(x, sigma):
        calls.append(1)
        s = -x
        if len(calls) == 5:
            s[1, 0] = float("nan")
        return s

    with pytest.raises(
        NonFiniteError, match=r"after step 5 of 6 \(noise level 3/3, sigma=0.25, step 1/2 of the level\)"
    ) as err:
        fl.annealed_langevin(score, torch.zeros(3, 2), [1.0, 0.5, 0.25], n_steps_each=2, on_nonfinite="raise")
    assert err.value.step == 5
    calls.clear()
    out = fl.annealed_langevin(
        score, torch.zeros(3, 2), [1.0, 0.5, 0.25], n_steps_each=2, denoise=False
    )  # default: ignore
    assert torch.isnan(out).any()
    with pytest.raises(ValueError, match="on_nonfinite must be"):
        fl.langevin(gaussian_score(0, 1), torch.zeros(2, 2), step_size=0.1, n_steps=1, on_nonfinite="warn")


def test_other_bad_input():
    s, x = gaussian_score(0, 1), torch.zeros(2, 2)
    with pytest.raises(ValueError, match="cuda_graph=True .* CUDA device"):
        fl.langevin(s, x, step_size=0.1, n_steps=2, cuda_graph=True)
    with pytest.raises(ValueError, match="exactly one of x0"):
        fl.pc_sample(s, fl.VESDE(), x, shape=(2, 2))
    with pytest.raises(ValueError, match="exactly one of x0"):
        fl.pc_sample(s, fl.VESDE())
    with pytest.raises(ValueError, match="predictor must be one of"):
        fl.pc_sample(s, fl.VESDE(), x, predictor="ode")
    with pytest.raises(ValueError, match="cannot both be 'none'"):
        fl.pc_sample(s, fl.VESDE(), x, predictor=None, corrector="none")
    with pytest.raises(TypeError, match="sde must be"):
        fl.pc_sample(s, "ve", x)
    with pytest.raises(ValueError, match="use n_steps > 20"):
        fl.pc_sample(s, fl.VPSDE(), x, n_steps=10)
    with pytest.raises(ValueError, match="sigma_min must be < sigma_max"):
        fl.VESDE(sigma_min=2.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="mala does not support clamp"):
        fl.mala(lambda x: -(x**2).sum(1), x, step_size=0.1, n_steps=1, clamp=(-1, 1))
    with pytest.raises(ValueError, match="step_lr must be finite and > 0"):
        fl.annealed_langevin(s, x, [1.0], step_lr=0.0)
    with pytest.raises(ValueError, match="Trace.every must be an int >= 1"):
        Trace(every=0)
    with pytest.raises(TypeError, match="x0 must be a torch.Tensor"):
        fl.langevin(s, [[0.0]], step_size=0.1, n_steps=1)


# ---------------------------------------------------------------------------------------
# CUDA graphs
# ---------------------------------------------------------------------------------------
class _ReplayBody:
    """Stand-in for a CUDA graph on CPU: 'replay' re-runs the recorded body."""

    def __init__(self, body):
        self.body = body

    def replay(self):
        self.body(False)


@pytest.mark.parametrize("name", ["langevin", "annealed", "pc_per_sample", "pc_vp_em", "mala"])
def test_graph_mode_bookkeeping_matches_eager(monkeypatch, name):
    """The graph path on CPU with replay = re-running the body: static slots refilled per
    step, warm-up undone (state and generator), last step eager. Must equal the eager run."""
    from fastlangevin.sampling.loop import Loop, LoopOptions

    run = _runners()[name]
    x0 = torch.randn(5, 2, 3, generator=gen(28))
    trace_eager, trace_graph = Trace(every=1), Trace(every=1)
    eager = run(x0, generator=gen(29), trace=trace_eager)
    monkeypatch.setattr(LoopOptions, "validate", lambda self, x: self)
    monkeypatch.setattr(Loop, "_record", lambda self, body: _ReplayBody(body))
    graphed = run(x0, generator=gen(29), trace=trace_graph, cuda_graph=True)
    torch.testing.assert_close(graphed, eager, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(trace_graph.states, trace_eager.states, atol=1e-6, rtol=1e-6)


@requires_cuda
def test_cuda_graph_replays_draw_fresh_noise():
    x0 = torch.zeros(4096, 2, device="cuda")
    tr = Trace(every=1)
    fl.langevin(lambda x: torch.zeros_like(x), x0, step_size=0.5, n_steps=3, cuda_graph=True, trace=tr)
    steps = tr.states[1:] - tr.states[:-1]  # pure noise increments, √(2·0.5) = 1 each
    assert not torch.equal(steps[1], steps[2])
    assert steps.std().item() == pytest.approx(1.0, rel=0.03)


@requires_cuda
def test_cuda_graph_ula_stationary_variance():
    g = torch.Generator(device="cuda").manual_seed(0)
    x0 = torch.randn(8192, 4, device="cuda")
    x = fl.langevin(gaussian_score(0.0, 2.0), x0, step_size=1.0, n_steps=60, generator=g, cuda_graph=True)
    assert_var_within(independent(x.cpu().reshape(-1, 1)), 2.0 / 0.75)  # see check_ula_stationary_variance


@requires_cuda
def test_cuda_graph_pc_and_annealed_statistics():
    sde = fl.VESDE(sigma_min=0.01, sigma_max=10.0)
    x = fl.pc_sample(ve_gaussian(1.5, 0.25, sde), sde, shape=(8192, 2), n_steps=150, device="cuda", cuda_graph=True)
    draws = independent(x.cpu().reshape(-1, 1))
    assert_mean_within(draws, 1.5)
    assert_var_within(draws, 0.25 * PC_VAR_FACTOR)
    x0 = torch.randn(8192, 2, device="cuda") * 3
    y = fl.annealed_langevin(
        gaussian_score(0.0, 1.0), x0, [2.0, 1.0], n_steps_each=50, step_lr=0.05, cuda_graph=True, denoise=False
    )
    # target at the last level: N(0, 1) with step 0.05: stationary 1 / (1 - 0.025)
    assert_var_within(independent(y.cpu().reshape(-1, 1)), 1 / 0.975)


# ---------------------------------------------------------------------------------------
# MALA step-size adaptation (dual averaging in a warm-up)
# ---------------------------------------------------------------------------------------
def check_mala_adaptation(seed):
    # N(0, diag(var)), variances log-spaced 1 … 100 (condition number 100), d = 10; chains start in the target
    d, B = 10, 64
    var = torch.logspace(0, 2, d, dtype=torch.float64)

    def log_prob(x):
        return -0.5 * (x.square() / var.to(x.dtype)).sum(1)

    g = gen(seed)
    x0 = torch.randn(B, d, generator=g) * var.sqrt().float()
    st = fl.RunningStats()
    res = fl.mala(log_prob, x0, step_size=0.05, n_steps=4000, adapt_steps=4000, generator=g, stats=st)
    samples, acc = res  # still the (samples, accept_rate) pair
    assert samples.shape == x0.shape and res.step_size.shape == (B,)
    # acceptance over the kept steps, per chain: its sampling SE at a fixed ε is ~0.009 over 4000 steps, the
    # adapted ε̄ spread adds ~0.007 (log ε̄ sd 0.015 over chains): ±0.05 is > 4 of those combined SEs
    assert (acc - 0.574).abs().max() <= 0.05, acc
    # marginal variances: E[x²] per chain (unbiased: the mean is known, 0), chains independent, so the MCSE of the
    # pooled estimate is the spread across chains / √B
    msq = st.var.double() * (st.count - 1) / st.count + st.mean.double().square()
    mcse = msq.std(0) / math.sqrt(B)
    assert ((msq.mean(0) - var).abs() <= 5 * mcse).all(), (msq.mean(0) - var) / mcse
    assert res.step_size.min() > 1.0  # adapted from 0.05 towards the optimum (~1.4 here)


def test_mala_adaptation_hits_target_acceptance_on_an_anisotropic_gaussian():
    check_mala_adaptation(300)


def test_mala_without_adaptation_returns_the_given_step_sizes():
    x0 = torch.randn(5, 2, generator=gen(301))
    res = fl.mala(lambda x: -0.5 * x.square().sum(1), x0, step_size=0.3, n_steps=3, generator=gen(302))
    out, acc = res
    assert torch.equal(res.step_size, torch.full((5,), 0.3)) and res.samples is out and res.accept_rate is acc
    bads = ((dict(adapt_steps=-1), "adapt_steps"), (dict(adapt_steps=5, target_accept=1.0), "target_accept"))
    for bad, match in bads:
        with pytest.raises(ValueError, match=match):
            fl.mala(lambda x: -0.5 * x.square().sum(1), x0, step_size=0.3, n_steps=3, **bad)


def test_graph_mode_with_warm_up_and_resume_matches_eager(monkeypatch, tmp_path):
    """The graph path (CPU fake, as above) with MALA's eager warm-up steps before the capture, and resumed
    from a checkpoint written in graph mode after the warm-up: equal to the eager run."""
    from fastlangevin.sampling.loop import Loop, LoopOptions

    x0 = torch.randn(5, 3, generator=gen(40))

    def run(**kw):
        tr = Trace(every=1)
        r = fl.mala(lambda x: -0.5 * x.square().sum(1), x0, step_size=0.3, n_steps=6, adapt_steps=4, trace=tr, **kw)
        return r[0], r[1], r.step_size, tr.states

    eager = run(generator=gen(41))
    monkeypatch.setattr(LoopOptions, "validate", lambda self, x: self)
    monkeypatch.setattr(Loop, "_record", lambda self, body: _ReplayBody(body))
    graphed = run(generator=gen(41), cuda_graph=True, checkpoint=tmp_path / "c", checkpoint_every=3)
    assert torch.load(tmp_path / "c", weights_only=False)["steps_done"] == 9  # written after 5 kept steps
    resumed = run(generator=gen(41), cuda_graph=True, resume=tmp_path / "c")
    for a, b, c in zip(eager, graphed, resumed):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-6)
        assert torch.equal(c, b)


def test_mala_diagonal_preconditioning_from_the_warm_up():
    check_mala_preconditioning(310)


def check_mala_preconditioning(seed):
    # the anisotropic Gaussian above, smaller run: with the warm-up's diagonal metric the widest direction
    # (variance 100) mixes like the narrowest instead of ~σ²_max/σ²_min times slower
    d, B = 10, 32
    var = torch.logspace(0, 2, d, dtype=torch.float64)

    def log_prob(x):
        return -0.5 * (x.square() / var.to(x.dtype)).sum(1)

    g = gen(seed)
    x0 = torch.randn(B, d, generator=g) * var.sqrt().float()
    st = fl.RunningStats()
    res = fl.mala(
        log_prob, x0, step_size=0.05, n_steps=2000, adapt_steps=2000, precondition=True, generator=g, stats=st
    )
    assert res.inv_metric.shape == x0.shape
    ratio = res.inv_metric.double() / var  # per-chain variance estimates from 500 correlated draws
    assert 0.7 < ratio.median() < 1.3 and (ratio > 0.1).all() and (ratio < 4).all()
    # acceptance: the per-chain metric noise adds to the spread seen without preconditioning (0.53–0.61 over
    # seeds 0, 1 at 4000 steps), so the mean is held to ±0.02 and each chain to ±0.07
    assert abs(res.accept_rate.mean() - 0.574) <= 0.02 and (res.accept_rate - 0.574).abs().max() <= 0.07
    msq = st.var.double() * (st.count - 1) / st.count + st.mean.double().square()
    assert ((msq.mean(0) - var).abs() <= 5 * msq.std(0) / math.sqrt(B)).all()
    # batch-means ESS of the widest coordinate, mean over chains: ~450 of 2000 here; ~37 without the metric
    assert st.ess()[:, -1].mean() > 150
    with pytest.raises(ValueError, match="adapt_steps >= 8"):
        fl.mala(log_prob, x0, step_size=0.05, n_steps=2, adapt_steps=4, precondition=True)
