"""Workload ``sampler``: whole sampler runs, score evaluation included; throughput in steps/s.

    annealed (NCSN): for σ in σ₁ > … > σ_L:  α = ε σ² / σ_L²;  T times:  x ← x + α s(x, σ) + sqrt(2α) z
    langevin (ULA):  N times:  x ← x + ε s(x) + sqrt(2ε) z

State ``[B, D]``; z fresh N(0, I) each step. Options (``--param``): ``sampler=annealed|langevin`` (default
annealed), ``score=mlp|neg_x`` (:class:`~fastlangevin.benchmarking.scorenet.ScoreMLP`, or ``-x``), ``steps``
(default 50 = 10 levels x 5; no final denoising). Provider factory: ``make(case, score_fn, schedule) -> run(x0)``.

Check: the same provider driven by the exact score of a Gaussian target N(μ, v I) (smoothed by σ for
the annealed sampler). The update is then linear, so the mean and variance after the schedule follow
exactly from ``m ← (1 - α/c) m + α μ/c,  V ← (1 - α/c)² V + 2α`` (c = v + σ², or v), and the sample's
must match them within 6 standard errors; two runs must differ and the start state stay untouched.
"""

import functools
import math
from typing import Any

import torch

import fastlangevin as fl

from ... import reference
from ..checks import check_fresh, check_output_like
from ..engine import CheckFailed, Provider, Workload
from ..scorenet import ScoreMLP
from .common import MIN_CHECK_NUMEL, make_state, ours, triton_unavailable

LEVELS, SIGMA_MAX, SIGMA_MIN = 10, 1.0, 0.01
#: α₁ = STEP_LR (σ₁/σ_L)² = 0.5: the first levels move the state a lot (a sharp check), α/c < 2 stays stable.
STEP_LR, STEP_SIZE = 5e-5, 0.01
TARGET_MEAN, TARGET_VAR = 0.5, 1.0


def schedule(case) -> dict[str, Any]:
    steps = int(case.param("steps", 50))
    if case.param("sampler", "annealed") == "langevin":
        return {"sampler": "langevin", "levels": [(None, STEP_SIZE, steps)], "steps": steps}
    sig = [SIGMA_MAX * (SIGMA_MIN / SIGMA_MAX) ** (i / (LEVELS - 1)) for i in range(LEVELS)]
    lv = [(s, reference.annealed_step_size(STEP_LR, s, sig[-1]), max(1, steps // LEVELS)) for s in sig]
    return {"sampler": "annealed", "levels": lv, "sigmas": sig, "steps": sum(t for *_, t in lv)}


def gaussian_score(x: torch.Tensor, sigma=None) -> torch.Tensor:
    c = TARGET_VAR if sigma is None else TARGET_VAR + sigma.to(x.dtype)[:, None] ** 2
    return (TARGET_MEAN - x) / c


def predicted_moments(m: float, v: float, levels: list[tuple[Any, float, int]]) -> tuple[float, float]:
    """Exact mean and variance per element after the schedule, for :func:`gaussian_score`."""
    for sig, a, steps in levels:
        c = TARGET_VAR + (sig or 0.0) ** 2
        for _ in range(steps):
            m, v = (1 - a / c) * m + a * TARGET_MEAN / c, (1 - a / c) ** 2 * v + 2 * a
    return m, v


def _naive(case, score_fn, sch):
    if sch["sampler"] == "langevin":
        (_, eps, n), = sch["levels"]  # fmt: skip

        def run(x):
            for _ in range(n):
                x = reference.langevin_step(x, score_fn(x), eps, None, torch.randn_like(x))
            return x

        return run
    return lambda x0: reference.annealed_langevin(
        score_fn, x0, sch["sigmas"], sch["levels"][0][2], STEP_LR, torch.randn_like, denoise=False
    )


def _fastlangevin(case, score_fn, sch, backend, cuda_graph=False):
    kw = dict(backend=backend, cuda_graph=cuda_graph)
    if sch["sampler"] == "langevin":
        return lambda x0: fl.langevin(score_fn, x0, step_size=STEP_SIZE, n_steps=sch["steps"], **kw)
    n = sch["levels"][0][2]
    return lambda x0: fl.annealed_langevin(
        score_fn, x0, sch["sigmas"], n_steps_each=n, step_lr=STEP_LR, denoise=False, **kw
    )


_graphed = functools.partial(_fastlangevin, backend="triton", cuda_graph=True)


def _graph_unavailable(case, opts):
    return "CUDA graphs need a CUDA device" if case.device.type != "cuda" else triton_unavailable(1 << 16)(case, opts)


class Sampler(Workload):
    name = "sampler"
    description = "annealed Langevin (NCSN) or ULA runs with a score model (MLP or -x); sampler steps/s"
    bytes_note = "sampler: not a bandwidth figure, throughput is sampler steps/s (score + update per step)"
    default_sizes_cuda = (20, 22)
    default_sizes_cpu = (14,)
    dtypes = ("fp32",)
    unit = "steps/s"
    memory_per_element = 64  # the MLP's activations
    provider_list = (
        Provider("naive", "naive loop: x = x + a*score(x, sigma) + sqrt(2a)*randn_like(x)", _naive),
        *ours(_fastlangevin, "sampler", 1 << 16),
        Provider(
            "triton_graph", "fastlangevin sampler (Triton, cuda_graph=True)", _graphed, "ours", _graph_unavailable
        ),
    )

    def items(self, case):
        return schedule(case)["steps"]

    def setup(self, case, opts):
        (x0,) = make_state(case.shape, case.dtype, case.device, opts.seed, n=1)
        if case.param("score", "mlp") == "neg_x":
            score = (lambda x: -x) if schedule(case)["sampler"] == "langevin" else (lambda x, sigma: -x)
        else:
            cond = schedule(case)["sampler"] == "annealed"
            score = ScoreMLP(case.shape[1], conditional=cond, seed=opts.seed).to(case.device).eval()
        return {"x0": x0, "score": score}

    def check(self, provider, case, inputs, opts):
        sch = schedule(case)
        shape = case.shape if case.numel >= MIN_CHECK_NUMEL else (MIN_CHECK_NUMEL // case.shape[1], case.shape[1])
        (x0,) = make_state(shape, case.dtype, case.device, opts.seed + 1, n=1)
        run, x0_copy = provider.make(case, gaussian_score, sch), x0.clone()
        with torch.no_grad():
            out1, out2 = run(x0).clone(), run(x0).clone()
        if not torch.equal(x0, x0_copy):
            raise CheckFailed("the sampler modified its starting state")
        check_output_like(out1, x0, "sampler output")
        m_pred, v_pred = predicted_moments(0.0, 1.0, sch["levels"])
        o = out1.double()
        n, m, v = o.numel(), float(o.mean()), float(o.var())
        tol_m, tol_v = 6 * math.sqrt(v_pred / n), 6 * v_pred * math.sqrt(2.0 / n)
        if abs(m - m_pred) > tol_m:
            raise CheckFailed(f"sample mean {m:.5g} after the schedule, exact {m_pred:.5g} ± {tol_m:.2g} (n={n})")
        if abs(v - v_pred) > tol_v:
            raise CheckFailed(f"sample variance {v:.5g} after the schedule, exact {v_pred:.5g} ± {tol_v:.2g} (n={n})")
        fresh = check_fresh(out1, out2)
        return {"numel": n, "mean": m, "mean_exact": m_pred, "var": v, "var_exact": v_pred, "fresh_fraction": fresh}

    def timed(self, provider, case, inputs, opts):
        run, x0 = provider.make(case, inputs["score"], schedule(case)), inputs["x0"]
        return torch.no_grad()(lambda: run(x0)), {"steps": schedule(case)["steps"]}
