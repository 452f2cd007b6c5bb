"""Workload ``annealed``: full annealed-Langevin steps (NCSN) with a small MLP score network.

    for σ in σ₁ > … > σ_L:  α = ε σ² / σ_L²;  T times:  x ← x + α s_θ(x, σ) + sqrt(2α) z

Each call runs L = 10 levels × T = 5 steps (no final denoising), score network included;
throughput is sampler **steps per second** (a step = one score evaluation + one update), not a
bandwidth. The state is ``[numel // 1024, 1024]``; the score network is
:class:`~fastlangevin.benchmarking.scorenet.ScoreMLP` (1025 → 256 → 256 → 256 → 1024, SiLU,
output / σ), fp32.

Providers: ``naive`` — the loop as usually written (``x = x + a * net(x, σ) + sqrt(2a) *
torch.randn_like(x)``); ``triton`` / ``torch`` — :func:`fastlangevin.annealed_langevin` on that
backend; ``triton_graph`` — the same with ``cuda_graph=True`` (one step captured once per call
and replayed; the capture is inside the timed call). The target of issue 5 compares
``triton_graph`` with ``naive``.

Check (every provider, before timing): the same sampler driven by the exact score of a Gaussian
target N(μ, v I) smoothed by σ, ``s(x, σ) = -(x - μ) / (v + σ²)``. The update is then linear, so
the mean and variance after the whole schedule follow exactly from

    m ← (1 - α/c) m + α μ / c,    V ← (1 - α/c)² V + 2α,    c = v + σ²

and the sample mean and variance must match them to 6 standard errors. A wrong step size, a
wrong noise scale, a missing level or stale noise all move them.

Provider factory signature: ``make(case, score_fn, sigmas, n_steps_each, step_lr) -> run(x0) -> x``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..checks import CheckFailed, check_fresh, check_output_like
from ..registry import BenchOptions, Case, Provider, Workload, register_workload
from .common import triton_unavailable

ROW = 1024
LEVELS = 10
STEPS_EACH = 5
SIGMA_MAX, SIGMA_MIN = 1.0, 0.01
#: α₁ = STEP_LR · (σ₁/σ_L)² = 0.5: the first levels move the state a lot (a sharp check);
#: α/c < 2 at every level keeps the linear check dynamics stable.
STEP_LR = 5e-5
HIDDEN = 256
MIN_CHECK_NUMEL = 1 << 16
MAX_INTERPRETER_NUMEL = 1 << 16
#: Gaussian target of the check.
TARGET_MEAN, TARGET_VAR = 0.5, 1.0


def sigmas() -> List[float]:
    return [SIGMA_MAX * (SIGMA_MIN / SIGMA_MAX) ** (i / (LEVELS - 1)) for i in range(LEVELS)]


def state_shape(numel: int) -> Tuple[int, int]:
    row = ROW if numel % ROW == 0 else numel
    return (numel // row, row)


def gaussian_score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Exact score of N(TARGET_MEAN, TARGET_VAR I) convolved with N(0, σ² I); ``sigma`` [B]."""
    c = TARGET_VAR + sigma.to(x.dtype) ** 2
    return (TARGET_MEAN - x) / c[:, None]


def predicted_moments(
    m0: float, v0: float, sigs: List[float], n_steps_each: int, step_lr: float
) -> Tuple[float, float]:
    """Exact mean and variance per element after the schedule, for :func:`gaussian_score`."""
    m, v = m0, v0
    for sig in sigs:
        a = step_lr * (sig / sigs[-1]) ** 2
        c = TARGET_VAR + sig**2
        k = 1 - a / c
        for _ in range(n_steps_each):
            m = k * m + a * TARGET_MEAN / c
            v = k * k * v + 2 * a
    return m, v


# ---------------------------------------------------------------------------------------
# Providers
# ---------------------------------------------------------------------------------------
def _naive_make(case: Case, score_fn, sigs: List[float], n_steps_each: int, step_lr: float):
    def run(x0):
        x = x0
        B = x.shape[0]
        with torch.no_grad():
            for sig in sigs:
                a = step_lr * (sig / sigs[-1]) ** 2
                sigma = torch.full((B,), sig, device=x.device, dtype=x.dtype)
                for _ in range(n_steps_each):
                    s = score_fn(x, sigma)
                    x = x + a * s + math.sqrt(2 * a) * torch.randn_like(x)
        return x

    return run


def _fastlangevin_make(backend: str, cuda_graph: bool = False):
    def make(case: Case, score_fn, sigs: List[float], n_steps_each: int, step_lr: float):
        import fastlangevin as fl

        return lambda x0: fl.annealed_langevin(
            score_fn,
            x0,
            sigs,
            n_steps_each=n_steps_each,
            step_lr=step_lr,
            denoise=False,
            backend=backend,
            cuda_graph=cuda_graph,
        )

    return make


def _graph_unavailable(case: Case, opts: BenchOptions) -> Optional[str]:
    if case.device.type != "cuda":
        return "CUDA graphs need a CUDA device"
    return triton_unavailable(case, opts)


# ---------------------------------------------------------------------------------------
# The workload
# ---------------------------------------------------------------------------------------
class AnnealedWorkload(Workload):
    name = "annealed"
    description = (
        f"annealed Langevin ({LEVELS} levels x {STEPS_EACH} steps per call) with a small MLP score net; steps/s"
    )
    bytes_note = "annealed: not a bandwidth figure — throughput is sampler steps/s (score network + update per step)"
    default_sizes_cuda = (20, 22)
    default_sizes_cpu = (14,)
    dtypes = ("fp32",)
    modes = ("out",)

    def bytes_moved(self, case: Case) -> Optional[int]:
        return None

    def items(self, case: Case):
        return (LEVELS * STEPS_EACH, "steps/s")

    def memory_per_element(self, dtype: torch.dtype) -> int:
        return 64 * torch.empty((), dtype=dtype).element_size()  # activations of the MLP (hidden 256 per 1024-row)

    def setup(self, case: Case, opts: BenchOptions) -> Dict[str, Any]:
        from ..scorenet import ScoreMLP

        B, D = state_shape(case.numel)
        g = torch.Generator(device=case.device).manual_seed(opts.seed)
        net = ScoreMLP(D, hidden=HIDDEN, conditional=True, seed=opts.seed).to(case.device).eval()
        x0 = torch.randn(B, D, generator=g, device=case.device, dtype=torch.float32).to(case.dtype)
        return {"net": net, "x0": x0}

    def check(self, provider: Provider, case: Case, inputs, opts: BenchOptions) -> Dict[str, Any]:
        numel = max(case.numel, MIN_CHECK_NUMEL)
        B, D = state_shape(numel)
        g = torch.Generator(device=case.device).manual_seed(opts.seed + 1)
        x0 = torch.randn(B, D, generator=g, device=case.device, dtype=torch.float32).to(case.dtype)
        run = provider.make(case, gaussian_score, sigmas(), STEPS_EACH, STEP_LR)
        x0_copy = x0.clone()
        out1 = run(x0)
        if not torch.equal(x0, x0_copy):
            raise CheckFailed("the sampler modified its starting state")
        check_output_like(out1, x0, "sampler output")
        out1 = out1.clone()
        out2 = run(x0).clone()
        m_pred, v_pred = predicted_moments(0.0, 1.0, sigmas(), STEPS_EACH, STEP_LR)
        o = out1.double()
        n = o.numel()
        m, v = float(o.mean()), float(o.var())
        tol_m = 6 * math.sqrt(v_pred / n)
        tol_v = 6 * v_pred * math.sqrt(2.0 / n)
        if abs(m - m_pred) > tol_m:
            raise CheckFailed(f"sample mean {m:.5g} after the schedule, exact {m_pred:.5g} ± {tol_m:.2g} (n={n})")
        if abs(v - v_pred) > tol_v:
            raise CheckFailed(f"sample variance {v:.5g} after the schedule, exact {v_pred:.5g} ± {tol_v:.2g} (n={n})")
        return {
            "numel": n,
            "mean": m,
            "mean_exact": m_pred,
            "var": v,
            "var_exact": v_pred,
            "fresh_fraction": check_fresh(out1, out2),
        }

    def timed(self, provider: Provider, case: Case, inputs, opts: BenchOptions):
        net, x0 = inputs["net"], inputs["x0"]
        run = provider.make(case, net, sigmas(), STEPS_EACH, STEP_LR)

        def call():
            with torch.no_grad():
                return run(x0)

        return call, {"levels": LEVELS, "steps_each": STEPS_EACH, "hidden": HIDDEN}


def register(workload: AnnealedWorkload) -> None:
    add = workload.add_provider
    add(Provider("naive", "naive loop: x = x + a*net(x, sigma) + sqrt(2a)*randn_like(x)", _naive_make))
    add(
        Provider(
            "triton",
            "fastlangevin.annealed_langevin (Triton)",
            _fastlangevin_make("triton"),
            kind="ours",
            unavailable=lambda c, o: triton_unavailable(c, o, MAX_INTERPRETER_NUMEL),
        )
    )
    add(
        Provider("torch", "fastlangevin.annealed_langevin (PyTorch fallback)", _fastlangevin_make("torch"), kind="ours")
    )
    add(
        Provider(
            "triton_graph",
            "fastlangevin.annealed_langevin (Triton, cuda_graph=True)",
            _fastlangevin_make("triton", cuda_graph=True),
            kind="ours",
            unavailable=_graph_unavailable,
        )
    )


WORKLOAD = register_workload(AnnealedWorkload())
register(WORKLOAD)
