"""The reference: every equation of fastlangevin as a few lines of plain torch — the oracle.

No tricks (no chunking, no scratch buffers, no folded scales, no in-kernel noise): the noise is
an argument, scales broadcast per row, and everything runs in float64 when given float64.
Tests, the benchmark's correctness gates and its naive providers import these functions; the
Triton kernels and the optimised PyTorch fallback are both tested against them.

Modules, one per op family:

* :mod:`.step` — the Langevin update ``x + a·s + b·z`` (clamped);
* :mod:`.corrector` — the SNR Langevin corrector of score-SDE predictor–corrector sampling;
* :mod:`.optim` — the SGLD, pSGLD and SGHMC updates (and cSGLD's cyclical step size);
* :mod:`.dsm` — perturbation, the denoising score-matching loss and its gradient in the score;
* :mod:`.samplers` — one annealed-Langevin (NCSN) step, the naive annealed loop, and one
  predictor step of the VE / VP reverse SDE.
"""

from .corrector import corrector_norms, langevin_corrector, snr_step_size, snr_step_size_from_norms
from .dsm import dsm_loss, dsm_loss_rows, dsm_perturb, dsm_score_grad
from .optim import cyclical_lr, grad_potential, psgld_step, sghmc_step, sgld_step
from .samplers import (
    annealed_langevin,
    annealed_step_size,
    euler_maruyama_step,
    ve_reverse_diffusion_step,
    vp_reverse_diffusion_step,
)
from .step import langevin_step, rows

__all__ = [
    "annealed_langevin",
    "annealed_step_size",
    "corrector_norms",
    "cyclical_lr",
    "dsm_loss",
    "dsm_loss_rows",
    "dsm_perturb",
    "dsm_score_grad",
    "euler_maruyama_step",
    "grad_potential",
    "langevin_corrector",
    "langevin_step",
    "psgld_step",
    "rows",
    "sghmc_step",
    "sgld_step",
    "snr_step_size",
    "snr_step_size_from_norms",
    "ve_reverse_diffusion_step",
    "vp_reverse_diffusion_step",
]
