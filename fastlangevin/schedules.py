"""Noise-level schedules for score matching and annealed sampling.

* :func:`geometric_sigmas` — NCSN's levels σ_1 > … > σ_L, geometric from σ_max to σ_min;
* :func:`sample_noise_levels` — one level per training sample, uniform over the schedule,
  returning the indices (for networks conditioned on the level index) and the sigmas.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch


def _positive_finite(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {v}")
    return v


def geometric_sigmas(
    sigma_max: float,
    sigma_min: float,
    n: int,
    *,
    dtype: torch.dtype = torch.float32,
    device=None,
) -> torch.Tensor:
    """``[n]`` noise levels ``σ_i = σ_max · (σ_min/σ_max)^(i/(n-1))``, i = 0 … n-1 (descending).

    Computed in float64 (log-spaced) and cast to ``dtype``; the end points are exactly
    ``sigma_max`` and ``sigma_min`` (as rounded to ``dtype``). NCSN: ``geometric_sigmas(1, 0.01, 10)``;
    NCSNv2 on CIFAR-10: ``geometric_sigmas(50, 0.01, 232)``. ``n = 1`` needs ``sigma_max == sigma_min``.
    """
    hi = _positive_finite("sigma_max", sigma_max)
    lo = _positive_finite("sigma_min", sigma_min)
    if hi < lo:
        raise ValueError(
            f"sigma_max must be ≥ sigma_min (levels run from large to small), got sigma_max={hi} < sigma_min={lo}"
        )
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if n == 1:
        if hi != lo:
            raise ValueError(f"n=1 gives a single level: sigma_max and sigma_min must be equal, got {hi} and {lo}")
        return torch.tensor([hi], dtype=dtype, device=device)
    levels = torch.exp(torch.linspace(math.log(hi), math.log(lo), n, dtype=torch.float64))
    levels[0], levels[-1] = hi, lo
    return levels.to(dtype=dtype, device=device)


def sample_noise_levels(
    sigmas: torch.Tensor,
    batch_size: int,
    *,
    generator: Optional[torch.Generator] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Draw one noise level per sample, uniformly over a schedule.

    Args:
        sigmas: the schedule, a non-empty 1-D float tensor of levels > 0 (e.g. from
            :func:`geometric_sigmas`), on the device the batch lives on.
        batch_size: number of samples B ≥ 1.
        generator: torch generator on ``sigmas``' device type (None → the default one).

    Returns:
        ``(indices, levels)``: ``indices`` int64 ``[B]`` in ``[0, L)`` and ``levels = sigmas[indices]``
        (``[B]``, sigmas' dtype and device) — pass ``levels`` as ``dsm_loss``'s ``sigma`` and
        ``indices`` to a network conditioned on the level index (NCSN).
    """
    if not isinstance(sigmas, torch.Tensor):
        raise TypeError(f"sigmas must be a torch.Tensor, got {type(sigmas).__name__}")
    if not sigmas.dtype.is_floating_point:
        raise TypeError(f"sigmas must have a floating dtype, got {sigmas.dtype}")
    if sigmas.dim() != 1 or sigmas.shape[0] == 0:
        raise ValueError(f"sigmas must be a non-empty 1-D tensor of levels, got shape {tuple(sigmas.shape)}")
    if sigmas.device.type == "cpu":  # accelerator values are not inspected: no host sync
        bad = ~torch.isfinite(sigmas) | (sigmas <= 0)
        if bool(bad.any()):
            raise ValueError(f"sigmas must be finite and > 0 everywhere, got {sigmas[bad][:4].tolist()}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if generator.device.type != sigmas.device.type:
            raise ValueError(
                f"generator must be on sigmas' device type {sigmas.device.type!r}, "
                f"got a {generator.device.type!r} generator"
            )
    indices = torch.randint(0, sigmas.shape[0], (batch_size,), generator=generator, device=sigmas.device)
    return indices, sigmas[indices]
