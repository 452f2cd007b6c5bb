"""Workload ``sampler``: whole sampler runs, score evaluation included; throughput in steps/s.

    annealed (NCSN): for σ in σ₁ > … > σ_L:  α = ε σ² / σ_L²;  T times:  x ← x + α s(x, σ) + sqrt(2α) z
    langevin (ULA):  N times:  x ← x + ε s(x) + sqrt(2ε) z

State ``[B, D]``, z fresh N(0, I) each step; ``--param sampler=annealed|langevin``, ``score=mlp|neg_x``
(:class:`ScoreMLP` or ``-x``), ``steps`` (default 50 = 10 levels x 5, no denoising). Provider factory:
``make(case, score_fn, schedule) -> run(x0)``. Check: driven by the exact score of N(μ, v I) (smoothed by
σ), the update is linear, so the mean and variance after the schedule follow exactly from
``m ← (1 - α/c) m + α μ/c,  V ← (1 - α/c)² V + 2α`` (c = v + σ², or v); the sample's must match within 6
standard errors, two runs differ and the start state stays untouched.
"""

import functools
import math
from typing import Any

import torch
from torch import nn

from ... import annealed_langevin, langevin, reference
from ..checks import Z_BOUND, call_checked, check_fresh, expect
from ..engine import Provider, Workload
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
    """The loop as usually written: :func:`fastlangevin.reference.annealed_langevin` (ULA: one level of step ε)."""
    if sch["sampler"] == "langevin":
        sigmas, n, lr, score = [1.0], sch["steps"], STEP_SIZE, lambda x, sigma: score_fn(x)
    else:
        sigmas, n, lr, score = sch["sigmas"], sch["levels"][0][2], STEP_LR, score_fn
    return lambda x0: reference.annealed_langevin(score, x0, sigmas, n, lr, torch.randn_like, denoise=False)


def _fastlangevin(case, score_fn, sch, backend, cuda_graph=False, denoise=False):
    """``denoise``: annealed's final noise-free step, as users run it (the profiler's; the check's moments omit it)."""
    kw = dict(backend=backend, cuda_graph=cuda_graph)
    if sch["sampler"] == "langevin":
        return lambda x0: langevin(score_fn, x0, step_size=STEP_SIZE, n_steps=sch["steps"], **kw)
    kw |= dict(n_steps_each=sch["levels"][0][2], step_lr=STEP_LR, denoise=denoise)
    return lambda x0: annealed_langevin(score_fn, x0, sch["sigmas"], **kw)


_graphed = functools.partial(_fastlangevin, backend="triton", cuda_graph=True)


def _no_graphs(case, opts):
    return "CUDA graphs need a CUDA device" if case.device.type != "cuda" else triton_unavailable(case, opts, 1 << 16)


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
        Provider("triton_graph", "fastlangevin sampler (Triton, cuda_graph=True)", _graphed, "ours", _no_graphs),
    )

    def items(self, case):
        return schedule(case)["steps"]

    def setup(self, case, opts):
        (x0,) = make_state(case.shape, case.dtype, case.device, opts.seed, n=1)
        cond = schedule(case)["sampler"] == "annealed"
        if case.param("score", "mlp") == "neg_x":
            score = (lambda x, sigma: -x) if cond else (lambda x: -x)
        else:
            score = ScoreMLP(case.shape[1], conditional=cond, seed=opts.seed).to(case.device).eval()
        return {"x0": x0, "score": score}

    def check(self, provider, case, inputs, opts):
        sch, (b, d) = schedule(case), case.shape
        (x0,) = make_state((max(b, MIN_CHECK_NUMEL // d), d), case.dtype, case.device, opts.seed + 1, n=1)
        run = provider.make(case, gaussian_score, sch)
        with torch.no_grad():
            out1, out2 = (call_checked(run, x0, "sampler output") for _ in range(2))
        m_pred, v_pred = predicted_moments(0.0, 1.0, sch["levels"])
        o = out1.double()
        n, at = o.numel(), f"after the schedule (exact; n={o.numel()})"
        m = expect(f"sample mean {at}", float(o.mean()), m_pred, Z_BOUND * math.sqrt(v_pred / n))
        v = expect(f"sample variance {at}", float(o.var()), v_pred, Z_BOUND * v_pred * math.sqrt(2.0 / n))
        fresh = check_fresh(out1, out2)
        return {"numel": n, "mean": m, "mean_exact": m_pred, "var": v, "var_exact": v_pred, "fresh_fraction": fresh}

    def timed(self, provider, case, inputs, opts):
        sch, x0 = schedule(case), inputs["x0"]
        run = provider.make(case, inputs["score"], sch)
        return torch.no_grad()(lambda: run(x0)), {"steps": sch["steps"]}


class ScoreMLP(nn.Module):
    """``s_θ(x, σ) = MLP([x, log σ]) / σ`` (not conditional: ``MLP(x)``) for ``x [B, dim]``, ``sigma`` a float,
    0-d or ``[B]``; also the profiler's. Seeded random weights: the loop is timed, not a trained model."""

    def __init__(self, dim: int, hidden: int = 256, depth: int = 3, conditional: bool = True, seed: int = 0):
        super().__init__()
        g, self.conditional = torch.Generator().manual_seed(seed), conditional
        sizes = [dim + (1 if conditional else 0)] + [hidden] * depth + [dim]
        lins = [nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
        with torch.no_grad():
            for lin in lins:
                lin.weight.copy_(torch.randn(lin.out_features, lin.in_features, generator=g) / lin.in_features**0.5)
                lin.bias.zero_()
        self.net = nn.Sequential(*[m for lin in lins for m in (lin, nn.SiLU())][:-1])  # no SiLU after the last

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor | None = None) -> torch.Tensor:
        if not self.conditional:
            return self.net(x)
        if sigma is None:
            raise ValueError("sigma: this ScoreMLP is noise-conditional; pass sigma (float, 0-d or [B] tensor)")
        sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])  # a float, 0-d or [B]
        return self.net(torch.cat([x, sig.log()[:, None]], dim=1)) / sig[:, None]
