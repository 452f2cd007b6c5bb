"""Workload ``corrector``: one SNR Langevin corrector step (score SDE), in place.

    ε = 2 α (r · mean_i‖z_i‖ / mean_i‖s_i‖)²,    x ← x + ε s + sqrt(2ε) z

Bytes: ``4 * numel * itemsize`` — s is read for the norms, then x and s are read and x written; z never
touches memory. Provider factory: ``make(case, s, snr, alpha) -> step(x)``. Check:
:func:`~fastlangevin.benchmarking.checks.check_snr_update` (ε fitted by regression within 6 standard
errors of the formula, the residual N(0, 1)), and fresh noise.
"""

from __future__ import annotations

import torch

from ... import reference
from ..checks import check_snr_update
from ..engine import Provider
from .common import StateUpdate, compile_unavailable, compiled, ours

#: r = 1 keeps ε·‖s‖² of order one, so the check's fit of ε is tight (timing does not depend on it).
SNR, ALPHA = 1.0, 1.0


def _fastlangevin(case, s, snr, alpha, backend):
    import fastlangevin as fl

    return lambda x: fl.langevin_corrector_(x, s, snr, alpha=alpha, backend=backend)


def _textbook(case, s, snr, alpha):
    """The reference corrector with a fresh ``randn_like`` (as in the score-SDE code)."""
    return lambda x: reference.langevin_corrector(x, s, torch.randn_like(x), snr, alpha)


def _buffered(case, s, snr, alpha):
    """Best eager form: z into a reused buffer, ε as a 0-d tensor (no host sync), two addcmul_."""
    z = torch.empty_like(s)

    def step(x):
        eps = reference.snr_step_size(s, z.normal_(), snr, alpha).to(x.dtype)
        return x.addcmul_(s, eps).addcmul_(z, (2 * eps).sqrt())

    return step


def _compile(case, s, snr, alpha):
    def build():
        return lambda x, s: x.copy_(reference.langevin_corrector(x, s, torch.randn_like(x), snr, alpha))

    return compiled(case, ("corrector", snr, alpha), build, s)


class Corrector(StateUpdate):
    name = "corrector"
    description = "SNR Langevin corrector x + eps*s + sqrt(2 eps)*z, eps = 2 alpha (r mean||z|| / mean||s||)^2"
    bytes_note = "corrector: 4 x numel x itemsize (read s for the norms, then read x and s, write x)"
    modes = ("inplace",)
    bytes_per_element = 4
    provider_list = (
        *ours(_fastlangevin, "corrector"),
        Provider("eager", "textbook eager corrector (randn_like, norms, update)", _textbook, rebinds=True),
        Provider("eager_inplace", "eager, best in-place form (normal_ into a buffer, 2 addcmul_)", _buffered),
        Provider("compile", "torch.compile of the textbook corrector", _compile, unavailable=compile_unavailable),
    )

    def arguments(self, opts, noisy=True):
        return SNR, ALPHA

    def check_noisy(self, out, x, s, case, opts):
        return check_snr_update(out, x, s, SNR, ALPHA)
