"""Reference SNR Langevin corrector (Song et al. 2020, predictor–corrector sampling).

    ‖s_i‖², ‖z_i‖²  (pass 1: per-sample squared norms, ``[B, 2]``)
    ε = 2 α (r ‖z‖ / ‖s‖)²,      x ← clamp(x + ε s + √(2ε) z)

``norm="batch"``: ‖z‖ and ‖s‖ are batch means of the per-sample norms (one ε for the batch, as
in the published code); ``norm="per_sample"``: each sample's own norms (ε is ``[B]``).
``add_noise=False`` is the noise-free mean ``x + ε s`` (ε still uses ‖z‖).
"""

from __future__ import annotations

import torch

from .step import langevin_step


def corrector_norms(s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``[B, 2]``: per-sample ``(‖s_i‖², ‖z_i‖²)`` of ``[B, ...]`` tensors."""
    s, z = s.flatten(1), z.flatten(1)
    return torch.stack([(s * s).sum(1), (z * z).sum(1)], dim=1)


def snr_step_size_from_norms(norms: torch.Tensor, snr, alpha=1.0, norm: str = "batch") -> torch.Tensor:
    """ε from the ``[B, 2]`` squared norms: 0-d for ``norm="batch"`` with float snr / alpha."""
    s_norm, z_norm = norms[:, 0].sqrt(), norms[:, 1].sqrt()
    ratio = z_norm.mean() / s_norm.mean() if norm == "batch" else z_norm / s_norm
    return 2 * alpha * (snr * ratio) ** 2


def snr_step_size(s: torch.Tensor, z: torch.Tensor, snr, alpha=1.0, norm: str = "batch") -> torch.Tensor:
    return snr_step_size_from_norms(corrector_norms(s, z), snr, alpha, norm)


def langevin_corrector(x, s, z, snr, alpha=1.0, norm: str = "batch", clamp=None, add_noise: bool = True):
    eps = snr_step_size(s.to(x.dtype), z.to(x.dtype), snr, alpha, norm)
    return langevin_step(x, s, eps, None, z if add_noise else None, clamp)
