"""Peer libraries' own step functions as optional providers (skipped, with a message, when absent).

**torchebm** ``torchebm.cuda.fused_langevin.fused_langevin_step(x, grad, step_size, noise_scale=1.0,
clamp=None, noise=None, seed=None, out=None)`` (0.8.x; imported from the submodule, falling back to
``torchebm.cuda``): ``x - step_size * grad + noise_scale * sqrt(2 step_size) * N(0, I)`` with
``grad = -score``; CUDA float32 contiguous only; in place with ``out=x``. We pass an incrementing
integer ``seed`` (as its own benchmark does): ``seed=None`` would sync the host for an ``.item()``.
"""

from __future__ import annotations

import itertools
import math
from typing import Optional

import torch

from .engine import BenchOptions, Case, Provider


def _fused():
    try:
        from torchebm.cuda.fused_langevin import fused_langevin_step
    except ImportError:
        from torchebm.cuda import fused_langevin_step  # type: ignore[attr-defined]
    return fused_langevin_step


def _unavailable(case: Case, opts: BenchOptions) -> Optional[str]:
    try:
        _fused()
    except Exception as exc:  # ImportError, or a broken install raising anything
        return f"torchebm's fused_langevin_step not importable ({_short(exc)}); pip install torchebm to compare"
    if case.device.type != "cuda" or case.dtype != torch.float32:
        return "CUDA float32 only"
    return None


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:120]


def _make(case: Case, s: torch.Tensor, eps: float, noise_scale: Optional[float]):
    fused, grad, seeds = _fused(), (-s).contiguous(), itertools.count(1)
    factor = 1.0 if noise_scale is None else float(noise_scale) / math.sqrt(2.0 * eps)
    out = (lambda x: x) if case.mode == "inplace" else (lambda x: None)
    return lambda x: fused(x, grad, eps, factor, seed=next(seeds), out=out(x))


TORCHEBM_FUSED = Provider("torchebm_fused", "torchebm fused_langevin_step (Triton)", _make, "peer", _unavailable)
