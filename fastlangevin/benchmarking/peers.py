"""Peer libraries' own step functions, as optional providers (skipped, with a message, when absent).

Signatures used (read from the libraries' sources; versions noted):

* **torchebm** ``torchebm.cuda.fused_langevin.fused_langevin_step(x, grad, step_size,
  noise_scale=1.0, clamp=None, noise=None, seed=None, out=None)`` (0.8.x; ``torchebm.cuda``'s
  ``__init__`` does not re-export it, so it is imported from the submodule, falling back to
  ``torchebm.cuda.fused_langevin_step``). Update ``x - step_size * grad + noise_scale *
  sqrt(2 step_size) * N(0, I)`` with ``grad = ∇U = -score``; CUDA float32 contiguous only; in
  place with ``out=x``. We pass an incrementing integer ``seed`` (as its own benchmark does):
  with ``seed=None`` every call would sync the host for a ``.item()``.
* **torchebm** ``LangevinDynamics(model, step_size, noise_scale, ..., dtype, device)``: one
  step of its ``sample()`` loop. 0.8.x: ``sampler.integrator.step(state={"x": x},
  step_size=..., noise_scale=..., drift=lambda x, t: -model.gradient(x))["x"]`` (Euler–Maruyama,
  ``x + h f + sqrt(2 noise_scale^2) sqrt(h) z``); older releases: ``sampler.langevin_step(x,
  noise)`` with ``noise = randn_like(x)``. The model is a ``BaseModel`` whose ``gradient``
  returns the fixed ``-s`` (no autograd in the timed step). Out of place only. Its sampler
  cannot turn the noise off (``noise_scale > 0``), so the noise-off check injects zero noise
  through the same call's ``noise=`` argument. It rebinds ``x`` (no in-place form): in the
  in-place cases it is timed as ``x = step(x)``.
* **diffusers** ``ScoreSdeVeScheduler(snr=...)``, ``set_timesteps(n)``, then
  ``step_correct(model_output, sample, generator=None, return_dict=True)`` (0.42: returns
  ``SchedulerOutput(prev_sample)``; very old releases ``step_correct(result, x)`` returned the
  tensor). Its step is the SNR rule ``eps = 2 (snr ||z|| / ||s||)^2`` with batch-averaged norms;
  we set ``snr`` from the input so that ``eps`` equals the case's step size in expectation
  (``E||z||`` of a chi distribution). It draws its noise on the CPU and copies it to the
  device (``randn_tensor`` without a device), and returns float32 for a bfloat16 sample —
  so it runs for float32 only. No in-place form (rebinds, as above); no noise-off form.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Optional

import torch

from .checks import chi_mean
from .registry import BenchOptions, Case, Provider, ProviderUnavailable


@functools.lru_cache(maxsize=None)
def _import_error(module: str) -> Optional[str]:
    import importlib

    try:
        importlib.import_module(module)
    except Exception as exc:  # ImportError, or a broken install raising anything
        return f"{type(exc).__name__}: {exc}"
    return None


def _need(module: str, pip_name: str) -> Optional[str]:
    err = _import_error(module)
    return (
        None
        if err is None
        else f"{pip_name} not installed ({err.splitlines()[0][:120]}); pip install {pip_name} to compare"
    )


# ---------------------------------------------------------------------------------------
# torchebm fused Triton step
# ---------------------------------------------------------------------------------------
def _torchebm_fused_fn():
    try:
        from torchebm.cuda.fused_langevin import fused_langevin_step
    except ImportError:
        from torchebm.cuda import fused_langevin_step  # type: ignore[attr-defined]
    return fused_langevin_step


def _torchebm_fused_unavailable(case: Case, opts: BenchOptions) -> Optional[str]:
    err = _need("torchebm", "torchebm")
    if err:
        return err
    try:
        _torchebm_fused_fn()
    except Exception as exc:
        return f"this torchebm has no fused_langevin_step ({exc})"
    if case.device.type != "cuda":
        return "CUDA only"
    if case.dtype != torch.float32:
        return "float32 only"
    return None


def _torchebm_fused_make(case: Case, s: torch.Tensor, eps: float, noise_scale: Optional[float]):
    fused = _torchebm_fused_fn()
    grad = (-s).contiguous()  # its convention: grad of the energy
    b = math.sqrt(2.0 * eps) if noise_scale is None else float(noise_scale)
    factor = b / math.sqrt(2.0 * eps)
    seeds = itertools.count(1)
    if case.mode == "inplace":
        return lambda x: fused(x, grad, eps, factor, seed=next(seeds), out=x)
    return lambda x: fused(x, grad, eps, factor, seed=next(seeds))


# ---------------------------------------------------------------------------------------
# torchebm LangevinDynamics sampler step
# ---------------------------------------------------------------------------------------
def _torchebm_sampler_unavailable(case: Case, opts: BenchOptions) -> Optional[str]:
    err = _need("torchebm.samplers", "torchebm")
    if err:
        return err
    return None


@functools.lru_cache(maxsize=None)
def _fixed_score_model_class():
    try:
        from torchebm.core import BaseModel as Base
    except ImportError:  # releases before the BaseModel rename
        from torchebm.core import BaseEnergyFunction as Base  # type: ignore[no-redef]

    class FixedScoreModel(Base):
        """An energy model whose gradient is a fixed tensor (-score): times the sampler's step
        arithmetic, not a network."""

        def __init__(self, neg_score: torch.Tensor, **kw):
            super().__init__(**kw)
            self.neg_score = neg_score

        def forward(self, x):
            return (x * self.neg_score).flatten(1).sum(1)

        def gradient(self, x, *args, **kwargs):
            return self.neg_score

    return FixedScoreModel


def _torchebm_sampler_make(case: Case, s: torch.Tensor, eps: float, noise_scale: Optional[float]):
    from torchebm.samplers import LangevinDynamics

    b = math.sqrt(2.0 * eps) if noise_scale is None else float(noise_scale)
    zero_noise = b == 0.0
    factor = 1.0 if zero_noise else b / math.sqrt(2.0 * eps)
    try:
        model = _fixed_score_model_class()(-s, dtype=s.dtype)
        sampler = LangevinDynamics(model, step_size=eps, noise_scale=factor, dtype=s.dtype, device=s.device)
    except Exception as exc:
        raise ProviderUnavailable(
            f"could not build torchebm's LangevinDynamics here ({type(exc).__name__}: {exc})"
        ) from exc
    if hasattr(sampler, "integrator"):  # torchebm >= 0.8: Euler–Maruyama integrator step

        def drift(x_, t_):
            return -model.gradient(x_)

        def step(x):
            kw = {"noise": torch.zeros_like(x)} if zero_noise else {}
            return sampler.integrator.step(
                state={"x": x},
                step_size=sampler.get_scheduled_value("step_size"),
                noise_scale=sampler.get_scheduled_value("noise_scale"),
                drift=drift,
                **kw,
            )["x"]

        return step
    if hasattr(sampler, "langevin_step"):  # older releases: langevin_step(prev_x, noise)
        return lambda x: sampler.langevin_step(x, torch.zeros_like(x) if zero_noise else torch.randn_like(x))
    raise ProviderUnavailable("this torchebm's LangevinDynamics has neither .integrator nor .langevin_step")


# ---------------------------------------------------------------------------------------
# diffusers ScoreSdeVeScheduler.step_correct
# ---------------------------------------------------------------------------------------
def _diffusers_unavailable(case: Case, opts: BenchOptions) -> Optional[str]:
    err = _need("diffusers", "diffusers")
    if err:
        return err
    if case.dtype != torch.float32:
        return "float32 only (step_correct returns float32 for a lower-precision sample)"
    return None


def _diffusers_make(case: Case, s: torch.Tensor, eps: float, noise_scale: Optional[float]):
    if noise_scale is not None and abs(noise_scale - math.sqrt(2 * eps)) > 1e-12:
        raise ProviderUnavailable("step_correct always adds sqrt(2 eps) noise (no noise-off form)")
    from diffusers import ScoreSdeVeScheduler

    rows = s.reshape(s.shape[0], -1).float()
    grad_norm = float(rows.norm(dim=1).mean())
    snr = math.sqrt(eps / 2.0) * grad_norm / chi_mean(rows.shape[1])
    sched = ScoreSdeVeScheduler(snr=snr)
    sched.set_timesteps(1)

    def step(x):
        out = sched.step_correct(s, x)
        if isinstance(out, tuple):
            return out[0]
        return getattr(out, "prev_sample", out)

    return step


def _diffusers_corrector_make(case: Case, s: torch.Tensor, snr: float, alpha: float):
    if alpha != 1.0:
        raise ProviderUnavailable("ScoreSdeVeScheduler's corrector is the VE one (alpha = 1)")
    from diffusers import ScoreSdeVeScheduler

    sched = ScoreSdeVeScheduler(snr=snr)
    sched.set_timesteps(1)

    def step(x):
        out = sched.step_correct(s, x)
        if isinstance(out, tuple):
            return out[0]
        return getattr(out, "prev_sample", out)

    return step


def register_corrector_peers(workload) -> None:
    workload.add_provider(
        Provider(
            "diffusers",
            "diffusers ScoreSdeVeScheduler.step_correct",
            _diffusers_corrector_make,
            kind="peer",
            unavailable=_diffusers_unavailable,
            rebinds=True,
        )
    )


def register_step_peers(workload) -> None:
    add = workload.add_provider
    add(
        Provider(
            "torchebm_fused",
            "torchebm fused Triton step",
            _torchebm_fused_make,
            kind="peer",
            unavailable=_torchebm_fused_unavailable,
        )
    )
    add(
        Provider(
            "torchebm_sampler",
            "torchebm LangevinDynamics step",
            _torchebm_sampler_make,
            kind="peer",
            unavailable=_torchebm_sampler_unavailable,
            rebinds=True,
        )
    )
    add(
        Provider(
            "diffusers",
            "diffusers ScoreSdeVeScheduler.step_correct (SNR step)",
            _diffusers_make,
            kind="peer",
            unavailable=_diffusers_unavailable,
            rebinds=True,
        )
    )
