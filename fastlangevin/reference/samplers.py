"""Reference sampler steps, written from the published equations.

Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1; NCSNv2's final denoising step):

    a_i = step_lr · σ_i² / σ_L²,     x ← x + a_i s(x, σ_i) + √(2 a_i) z     (T steps per level)
    denoise:  x ← x + σ_L² s(x, σ_L)

Reverse-SDE predictors (Song et al. 2020) at discrete step k of N (``s`` the score at x):

* VE reverse diffusion:  x ← x + (σ_k² − σ_{k−1}²) s + √(σ_k² − σ_{k−1}²) z
* VP reverse diffusion:  x ← (2 − √(1 − β_k)) x + β_k s + √β_k z
* Euler–Maruyama, dt = −1/N:  x ← x − (f(x, t) − g(t)² s)/N + g(t) √(1/N) z

Noise is an argument; ``z=None`` gives the noise-free (last-step / mean) update.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch

from .step import langevin_step


def annealed_step_size(step_lr: float, sigma: float, sigma_last: float) -> float:
    return step_lr * sigma**2 / sigma_last**2


def annealed_langevin(
    score_fn: Callable,
    x0: torch.Tensor,
    sigmas: Sequence[float],
    n_steps_each: int,
    step_lr: float,
    noise: Callable[[torch.Tensor], torch.Tensor],
    denoise: bool = True,
) -> torch.Tensor:
    """The naive NCSN loop; ``noise(x)`` returns each step's z (e.g. ``torch.randn_like``)."""
    x, batch = x0.clone(), x0.shape[0]
    for sigma in sigmas:
        a = annealed_step_size(step_lr, sigma, sigmas[-1])
        sig = torch.full((batch,), float(sigma), dtype=x.dtype, device=x.device)
        for _ in range(n_steps_each):
            x = langevin_step(x, score_fn(x, sig), a, None, noise(x))
    if denoise:
        sig = torch.full((batch,), float(sigmas[-1]), dtype=x.dtype, device=x.device)
        x = x + sigmas[-1] ** 2 * score_fn(x, sig)
    return x


def ve_reverse_diffusion_step(x, s, sigma_k: float, sigma_prev: float, z: Optional[torch.Tensor] = None):
    var = sigma_k**2 - sigma_prev**2
    return langevin_step(x, s, var, math.sqrt(var), z)


def vp_reverse_diffusion_step(x, s, beta_k: float, z: Optional[torch.Tensor] = None):
    f = math.sqrt(1.0 - beta_k) * x - x  # the discretised forward drift
    mean = x - (f - beta_k * s)
    return mean if z is None else mean + math.sqrt(beta_k) * z


def euler_maruyama_step(x, s, drift_f: torch.Tensor, g2: float, n_steps: int, z: Optional[torch.Tensor] = None):
    """``drift_f`` = f(x, t), ``g2`` = g(t)²: one reverse-time Euler–Maruyama step of size 1/N."""
    mean = x - (drift_f - g2 * s) / n_steps
    return mean if z is None else mean + math.sqrt(g2 / n_steps) * z
