"""Reference SNR Langevin corrector (Song et al. 2020, predictor–corrector sampling).

    ε = 2 α (r ‖z‖ / ‖s‖)²,      x ← clamp(x + ε s + √(2ε) z)

``norm="batch"``: ‖z‖ and ‖s‖ are batch means of the per-sample norms (one ε for the batch, as
in the published code); ``norm="per_sample"``: each sample's own norms (ε is ``[B]``).
"""

from __future__ import annotations

import torch

from .step import langevin_step


def snr_step_size(s: torch.Tensor, z: torch.Tensor, snr, alpha=1.0, norm: str = "batch") -> torch.Tensor:
    s_norm = s.flatten(1).norm(dim=1)
    z_norm = z.flatten(1).norm(dim=1)
    ratio = z_norm.mean() / s_norm.mean() if norm == "batch" else z_norm / s_norm
    return 2 * alpha * (snr * ratio) ** 2


def langevin_corrector(x, s, z, snr, alpha=1.0, norm: str = "batch", clamp=None) -> torch.Tensor:
    eps = snr_step_size(s.to(x.dtype), z.to(x.dtype), snr, alpha, norm)
    return langevin_step(x, s, eps, None, z, clamp)
