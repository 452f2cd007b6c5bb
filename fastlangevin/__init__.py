"""fastlangevin: fused Triton kernels for Langevin sampling and score matching in PyTorch.

Public API (see README):

* :func:`langevin_step`, :func:`langevin_step_` — the fused update
  ``x + a * s + b * z`` with in-kernel noise;
* :func:`backend_for`, :func:`track_backends` — which implementation runs;
"""

from ._backend import BackendUnavailableError, backend_for, track_backends
from .ops.langevin_step import langevin_step, langevin_step_

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "backend_for",
    "langevin_step",
    "langevin_step_",
    "track_backends",
    "__version__",
]
