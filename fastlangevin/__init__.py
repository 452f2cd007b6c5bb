"""fastlangevin: fused Triton kernels for Langevin sampling and score matching in PyTorch.

Public API (see README):

* :func:`langevin_step`, :func:`langevin_step_` — the fused update
  ``x + a * s + b * z`` with in-kernel noise;
* :func:`dsm_loss` — the denoising score-matching loss, fused (noise regenerated in backward);
* :func:`geometric_sigmas`, :func:`sample_noise_levels` — noise-level schedules;
* :func:`backend_for`, :func:`track_backends` — which implementation runs;
* samplers: :func:`langevin` (ULA), :func:`annealed_langevin` (NCSN), :func:`pc_sample` with
  :class:`VESDE` / :class:`VPSDE` (predictor–corrector), :func:`mala`, :func:`score_from_energy`,
  with :class:`Trace`; the fused SNR corrector :func:`langevin_corrector_`;
* :mod:`fastlangevin.distributed` — samplers sharded across ``torchrun`` ranks
  (``sample_sharded``), ``dsm_loss`` under DistributedDataParallel (``sample_offset``,
  ``synced_generator``, ``shard_weight``), clear errors when a rank fails;
* :mod:`fastlangevin.diagnostics` — ESS, R̂, MCSE and a summary table of ``[chains, draws, ...]``
  chains, in torch on the chains' device;
* score-SDE extras: :func:`ode_sample` / :func:`ode_encode` (probability-flow ODE),
  :func:`log_likelihood` / :func:`bits_per_dim` (exact likelihood),
  :func:`karras_sigmas` / :func:`edm_sample` (EDM samplers),
  :func:`score_from_denoiser` / :func:`score_from_eps` and the reverse adapters,
  :func:`pc_inpaint` (inpainting), :func:`sliced_score_matching_loss`;
"""

from . import diagnostics, optim
from ._backend import BackendUnavailableError, backend_for, track_backends
from .adapters import denoiser_from_score, eps_from_score, score_from_denoiser, score_from_eps
from .edm import edm_sample, karras_sigmas
from .inpaint import pc_inpaint
from .likelihood import LikelihoodResult, bits_per_dim, log_likelihood
from .ops.corrector import langevin_corrector_
from .ops.dsm import dsm_loss
from .ops.langevin_step import langevin_step, langevin_step_
from .probability_flow import ode_encode, ode_sample
from .sampling import NonFiniteError, Trace, annealed_langevin, langevin, mala, pc_sample, score_from_energy
from .sampling.stats import RunningStats
from .schedules import geometric_sigmas, sample_noise_levels
from .sde import VESDE, VPSDE
from .sliced import sliced_score_matching_loss

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "LikelihoodResult",
    "NonFiniteError",
    "RunningStats",
    "Trace",
    "VESDE",
    "VPSDE",
    "annealed_langevin",
    "backend_for",
    "diagnostics",
    "denoiser_from_score",
    "bits_per_dim",
    "dsm_loss",
    "edm_sample",
    "eps_from_score",
    "geometric_sigmas",
    "karras_sigmas",
    "langevin",
    "langevin_corrector_",
    "langevin_step",
    "langevin_step_",
    "log_likelihood",
    "mala",
    "optim",
    "ode_encode",
    "ode_sample",
    "pc_inpaint",
    "pc_sample",
    "sample_noise_levels",
    "score_from_denoiser",
    "score_from_energy",
    "score_from_eps",
    "sliced_score_matching_loss",
    "track_backends",
    "__version__",
]
