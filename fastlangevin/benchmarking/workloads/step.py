"""Workloads ``langevin_step`` and ``corrector``: one update ``x ← x + a s + b z`` of a state ``[B, ...]``
by a score-like ``s`` (both N(0, 1) draws); ``z`` is fresh N(0, I) at every call.

    langevin_step   x ← x + eps s + sqrt(2 eps) z                                   (out of place, in place)
    corrector       ε = 2 α (r · mean_i‖z_i‖ / mean_i‖s_i‖)²,   x ← x + ε s + sqrt(2ε) z       (in place)

Bytes (each class's ``bytes_note``) are what the op must move, z never touching memory. Provider factory:
``make(case, s, *arguments) -> step(x)``, arguments ``(eps, noise_scale)`` (None: ``sqrt(2 eps)``; 0.0: noise
off) or the corrector's ``(snr, alpha)``; in mode ``inplace`` ``step(x)`` updates and returns ``x`` (a
``rebinds`` provider returns a new tensor, as ``x = x + ...``), in ``out`` it leaves ``x``. Check
(:mod:`..checks`): noise off, the reference to 2 ulp; noise on, ``check_noise`` or ``check_snr_update``.
Peer ``torchebm_fused``: torchebm 0.8's ``fused_langevin_step(x, -s, eps, noise_scale, seed=, out=)`` (CUDA
float32), given an incrementing ``seed`` as its own benchmark does (``seed=None`` would sync the host).
"""

import functools
import itertools
import math

import torch

from ... import langevin_corrector_, langevin_step, langevin_step_, reference
from .. import checks
from ..engine import Provider, Workload, first_line
from .common import MIN_CHECK_NUMEL, compile_provider, make_state, ours

#: corrector: r = 1 keeps ε·‖s‖² of order one, so the check's fit of ε is tight (timing does not depend on it).
SNR, ALPHA = 1.0, 1.0


class StateUpdate(Workload):
    """Set-up, check (on fresh inputs of :data:`MIN_CHECK_NUMEL` elements for smaller cases) and timed call;
    a subclass gives ``arguments(opts, noisy)`` (the factory's; noise off: ``a`` first, or None) and ``check_noisy``."""

    def setup(self, case, opts):
        x, s = make_state(case.shape, case.dtype, case.device, opts.seed)
        return {"x": x, "s": s}

    def check(self, provider, case, inputs, opts):
        x, s = inputs["x"], inputs["s"]
        if case.numel < MIN_CHECK_NUMEL:
            x, s = make_state(self.shape_for(MIN_CHECK_NUMEL), case.dtype, case.device, opts.seed + 1)
        result, inplace = {"numel": x.numel()}, case.mode == "inplace" and not provider.rebinds
        if (noise_off := self.arguments(opts, noisy=False)) is not None:  # the update alone, to 2 ulp
            out = checks.call_checked(provider.make(case, s, *noise_off), x, "noise-off output", inplace)
            result["noise_off"] = checks.check_deterministic(out, x, s, noise_off[0])
        step = provider.make(case, s, *self.arguments(opts))
        out1 = checks.call_checked(step, x, f"{self.name} output", inplace)
        out2 = checks.call_checked(step, x, f"second {self.name} output", inplace)
        return result | self.check_noisy(out1, x, s, case, opts) | {"fresh_fraction": checks.check_fresh(out1, out2)}

    def timed(self, provider, case, inputs, opts):
        step = provider.make(case, inputs["s"], *self.arguments(opts))
        x = inputs["x"].clone() if case.mode == "inplace" else inputs["x"]
        return (lambda: step(x)), getattr(step, "extra", {})  # the compile provider's, filled by its first call


def _noise(eps, noise_scale):
    return math.sqrt(2.0 * eps) if noise_scale is None else float(noise_scale)


def _fastlangevin(case, s, eps, noise_scale, backend):
    op = langevin_step_ if case.mode == "inplace" else langevin_step
    return lambda x: op(x, s, eps, noise_scale, backend=backend)


def _textbook(case, s, eps, noise_scale):
    """The textbook expression (out of place even in the in-place mode: ``x = x + ...``)."""
    b = _noise(eps, noise_scale)
    return lambda x: x + eps * s + b * torch.randn_like(x)


def _handwritten(case, s, eps, noise_scale):
    b, add = _noise(eps, noise_scale), torch.Tensor.add_ if case.mode == "inplace" else torch.add
    return lambda x: add(x, s, alpha=eps).add_(torch.randn_like(x), alpha=b)


def _buffered(case, s, eps, noise_scale):
    """Best eager form: noise drawn at its scale into a reused buffer, then in-place adds."""
    b, z, out = _noise(eps, noise_scale), torch.empty_like(s), torch.empty_like(s)
    add = torch.Tensor.add_ if case.mode == "inplace" else functools.partial(torch.add, out=out)
    return lambda x: add(x, s, alpha=eps).add_(z.normal_(0.0, b))


def _fused():
    try:
        from torchebm.cuda.fused_langevin import fused_langevin_step
    except ImportError:
        from torchebm.cuda import fused_langevin_step  # type: ignore[attr-defined]
    return fused_langevin_step


def _torchebm_unavailable(case, opts):
    try:
        _fused()
    except Exception as exc:  # ImportError, or a broken install raising anything
        return f"torchebm's fused_langevin_step not importable ({first_line(exc)}); pip install torchebm to compare"
    return "CUDA float32 only" if case.device.type != "cuda" or case.dtype != torch.float32 else None


def _torchebm(case, s, eps, noise_scale):
    fused, grad, seeds = _fused(), (-s).contiguous(), itertools.count(1)
    factor = 1.0 if noise_scale is None else float(noise_scale) / math.sqrt(2.0 * eps)
    out = (lambda x: x) if case.mode == "inplace" else (lambda x: None)
    return lambda x: fused(x, grad, eps, factor, seed=next(seeds), out=out(x))


class LangevinStep(StateUpdate):
    name = "langevin_step"
    description = "Langevin step x + eps*s + sqrt(2 eps)*z (in place and out of place)"
    bytes_note = "langevin_step: 3 x numel x itemsize (read x, read s, write the new state; z never touches memory)"
    modes = ("out", "inplace")
    provider_list = (
        *ours(_fastlangevin, "langevin_step"),
        Provider("eager", "textbook eager x + eps*s + (2*eps)**0.5*randn_like(x)", _textbook, rebinds=True),
        Provider("eager_inplace", "hand-written eager x.add_(s, alpha=eps).add_(randn_like(x), alpha=b)", _handwritten),
        Provider("eager_buffer", "eager, best form (normal_ into a reused buffer, 2 add_)", _buffered),
        compile_provider("torch.compile of the textbook expression", _textbook),
        Provider("torchebm_fused", "torchebm fused_langevin_step (Triton)", _torchebm, "peer", _torchebm_unavailable),
    )

    def arguments(self, opts, noisy=True):
        return opts.eps, None if noisy else 0.0

    def check_noisy(self, out, x, s, case, opts):
        return {"noise": checks.check_noise(out, x, s, opts.eps, math.sqrt(2.0 * opts.eps))}


def _corrector(case, s, snr, alpha, backend):
    return lambda x: langevin_corrector_(x, s, snr, alpha=alpha, backend=backend)


def _corrector_textbook(case, s, snr, alpha):
    """The reference corrector with a fresh ``randn_like`` (as in the score-SDE code)."""
    return lambda x: reference.langevin_corrector(x, s, torch.randn_like(x), snr, alpha)


def _corrector_buffered(case, s, snr, alpha):
    """Best eager form: z into a reused buffer, ε as a 0-d tensor (no host sync), two addcmul_."""
    z = torch.empty_like(s)

    def step(x):
        eps = reference.snr_step_size(s, z.normal_(), snr, alpha).to(x.dtype)
        return x.addcmul_(s, eps).addcmul_(z, (2 * eps).sqrt())

    return step


class Corrector(StateUpdate):
    name = "corrector"
    description = "SNR Langevin corrector x + eps*s + sqrt(2 eps)*z, eps = 2 alpha (r mean||z|| / mean||s||)^2"
    bytes_note = "corrector: 4 x numel x itemsize (read s for the norms, then read x and s, write x)"
    modes = ("inplace",)
    bytes_per_element = 4
    provider_list = (
        *ours(_corrector, "corrector"),
        Provider("eager", "textbook eager corrector (randn_like, norms, update)", _corrector_textbook, rebinds=True),
        Provider("eager_inplace", "eager, best in-place form (normal_ into a buffer, 2 addcmul_)", _corrector_buffered),
        compile_provider("torch.compile of the textbook corrector", _corrector_textbook),
    )

    def arguments(self, opts, noisy=True):
        return (SNR, ALPHA) if noisy else None

    def check_noisy(self, out, x, s, case, opts):
        return checks.check_snr_update(out, x, s, SNR, ALPHA)
