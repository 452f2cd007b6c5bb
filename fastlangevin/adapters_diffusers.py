"""A diffusers ``UNet2DModel`` (noise prediction, DDPM-trained) as a score function of a VP SDE.

    s(x, t) = −ε_θ(x, τ(t)) / std(t),      τ(t) = t · (num_train_timesteps − 1)

DDPM's discrete chain with linear betas β_i ∈ [β_1, β_N] (N = ``num_train_timesteps``) is the
VP SDE with β_min = N β_1, β_max = N β_N (diffusers' default 1e-4 … 0.02 at N = 1000: β ∈ [0.1, 20],
:class:`fastlangevin.VPSDE`'s default), and continuous time t maps to the network's timestep as
score_sde does (``labels = t * (N - 1)``). x: ``[B, C, H, W]``; t: per-sample ``[B]``.
Needs the optional extra ``fastlangevin[diffusers]``.
"""

from __future__ import annotations

from typing import Callable

import torch

from .adapters import score_from_eps
from .sde import VPSDE


def score_from_diffusers_unet(unet, sde: VPSDE = None, *, num_train_timesteps: int = 1000) -> Callable:
    """Score function ``score_fn(x, t)`` of a diffusers ``UNet2DModel`` predicting the added noise."""
    try:
        import diffusers  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("score_from_diffusers_unet needs diffusers: pip install 'fastlangevin[diffusers]'") from exc
    if not callable(unet):
        raise TypeError(f"unet must be a diffusers UNet2DModel (callable), got {type(unet).__name__}")
    sde = VPSDE() if sde is None else sde
    if not isinstance(sde, VPSDE):
        raise TypeError(f"a DDPM noise predictor is a VP model: sde must be a VPSDE, got {type(sde).__name__}")
    if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, int) or num_train_timesteps < 2:
        raise ValueError(f"num_train_timesteps must be an int >= 2, got {num_train_timesteps!r}")

    def eps_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        p = next(unet.parameters(), None)
        dt = x.dtype if p is None else p.dtype
        out = unet(x.to(dt), (t * (num_train_timesteps - 1)).to(dt)).sample
        return out.to(x.dtype)

    return score_from_eps(eps_model, sde)
