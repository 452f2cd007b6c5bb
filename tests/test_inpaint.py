"""pc_inpaint on a correlated 2-D Gaussian: known entries kept, unknown ones from the conditional."""

import math

import pytest
import torch

import fastlangevin as fl
from fastlangevin import track_backends
from fastlangevin.inpaint import pc_inpaint
from tests.gaussian_sde import one_thread  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("one_thread")

MU = torch.tensor([0.5, -0.5], dtype=torch.float64)
RHO, S2 = 0.8, 0.25  # Σ = S2 [[1, ρ], [ρ, 1]]


def score_for(sde):
    """Exact score of N(m μ, m² Σ + std² I) (2x2 inverse in closed form)."""

    def fn(x, t):
        tt = t.double()[:, None]
        m, sd2 = sde.marginal_mean_scale(tt), sde.marginal_std(tt) ** 2
        a, c = m * m * S2 + sd2, m * m * S2 * RHO  # C = [[a, c], [c, a]]
        y = x.double() - m * MU
        det = a * a - c * c
        inv_y = torch.stack([a[:, 0] * y[:, 0] - c[:, 0] * y[:, 1], a[:, 0] * y[:, 1] - c[:, 0] * y[:, 0]], 1)
        return (-inv_y / det).to(x.dtype)

    return fn


def test_keeps_known_entries_and_samples_the_conditional():
    sde = fl.VESDE(0.01, 5.0)
    B = 2000
    xk = torch.zeros(B, 2)
    xk[:, 0] = 1.0
    mask = torch.tensor([[True, False]])
    x = pc_inpaint(score_for(sde), sde, xk, mask, n_steps=200, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x[:, 0], xk[:, 0])
    cond_mean = float(MU[1] + RHO * (1.0 - MU[0]))
    cond_var = S2 * (1 - RHO**2)
    # iid samples (the batch-averaged corrector norm couples them only through one scalar per step)
    assert abs(x[:, 1].mean().item() - cond_mean) < 5 * math.sqrt(cond_var / B)
    assert abs(x[:, 1].var().item() - cond_var) < 5 * cond_var * math.sqrt(2 / (B - 1))
    # not the marginal N(μ_1, S2): the conditioning really happened
    assert abs(x[:, 1].mean().item() - float(MU[1])) > 20 * math.sqrt(cond_var / B)


def test_batch_invariance_and_backends(device_backend):
    device, backend = device_backend
    sde = fl.VESDE()  # any n_steps (VP needs n_steps > beta_max)
    xk = torch.randn(6, 2, generator=torch.Generator().manual_seed(1)).to(device)
    mask = torch.tensor([1.0, 0.0], device=device)
    n_steps = 2 if backend == "triton" else 10  # the interpreter runs the corrector kernel slowly
    kw = dict(n_steps=n_steps, corrector_norm="per_sample", backend=backend, rng="philox")
    sc = score_for(sde)

    def run(x, off=0):
        return pc_inpaint(
            sc, sde, x, mask, generator=torch.Generator(device=device).manual_seed(2), sample_offset=off, **kw
        )

    with track_backends() as ran:
        full = run(xk)
    assert {b for _, b in ran} == {backend}
    assert torch.equal(full[:, 0], xk[:, 0])
    assert torch.equal(full, run(xk)) and torch.equal(run(xk[:2]), full[:2]) and torch.equal(run(xk[2:], 2), full[2:])


def test_bad_input():
    sde = fl.VESDE()
    sc = score_for(sde)
    xk = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="mask"):
        pc_inpaint(sc, sde, xk, torch.ones(3), n_steps=2)
    with pytest.raises(TypeError, match="mask"):
        pc_inpaint(sc, sde, xk, [1, 0], n_steps=2)
    with pytest.raises(ValueError, match="predictor"):
        pc_inpaint(sc, sde, xk, torch.ones(2), predictor="ode", n_steps=2)
    with pytest.raises(TypeError, match="sde"):
        pc_inpaint(sc, None, xk, torch.ones(2), n_steps=2)
