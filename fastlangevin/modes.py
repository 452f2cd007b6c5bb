"""Modes of the fused update, defined once: the op schema, the launchers and the kernels share
these integers (the kernels take them as ``tl.constexpr`` arguments).

Where a per-call scale — the step size ``a`` or the noise scale ``b`` — comes from:

* ``SCALE_ARG``: a Python float passed as a kernel scalar;
* ``SCALE_TENSOR``: a 0-d device tensor (loaded once per program; no host sync);
* ``SCALE_ROWS``: a per-sample ``[B]`` device tensor (gathered per row).

The noise term ``b · z`` has two more modes:

* ``NOISE_NONE``: a deterministic update, no noise drawn at all;
* ``NOISE_SQRT2A``: ``b = sqrt(2 a)``, computed in the kernel (the Langevin default), so an
  annealed schedule passes one ``[B]`` tensor for both scales.
"""

SCALE_ARG = 0
SCALE_TENSOR = 1
SCALE_ROWS = 2
NOISE_NONE = 3
NOISE_SQRT2A = 4

SCALE_MODES = (SCALE_ARG, SCALE_TENSOR, SCALE_ROWS)
NOISE_MODES = SCALE_MODES + (NOISE_NONE, NOISE_SQRT2A)


def scale_mode(tensor) -> int:
    """The ``SCALE_*`` mode of a validated scale held as ``tensor`` (None: a Python float)."""
    if tensor is None:
        return SCALE_ARG
    return SCALE_ROWS if tensor.dim() == 1 else SCALE_TENSOR
