"""Workload ``langevin_step``: one Langevin update ``x + eps * s + sqrt(2 eps) * z``.

Bytes the op must move: read ``x`` and ``s``, write the new state — ``3 * numel * itemsize``; z never
has to touch memory. Every provider is charged that count ("effective" bandwidth).

Provider factory: ``make(case, s, eps, noise_scale) -> step(x)``; ``noise_scale`` None is the Langevin
``sqrt(2 eps)``, 0.0 the deterministic update (a provider that cannot turn the noise off raises
``ProviderUnavailable``). In mode ``inplace`` ``step(x)`` updates and returns ``x`` (a ``rebinds``
provider returns a new tensor, as ``x = x + ...`` in a user's loop); in mode ``out`` it leaves ``x``.

Check: noise off, the output equals the reference ``x + eps s`` to 2 ulp; noise on, the residual
``(out - x - eps s) / sqrt(2 eps)`` passes :func:`~fastlangevin.benchmarking.checks.check_noise` (each
figure within 6 standard errors of N(0, 1)); two calls draw different noise.

Peer ``torchebm_fused`` (skipped, with a message, when absent): torchebm's
``torchebm.cuda.fused_langevin.fused_langevin_step(x, grad, step_size, noise_scale=1.0, clamp=None,
noise=None, seed=None, out=None)`` (0.8.x; imported from the submodule, falling back to ``torchebm.cuda``):
``x - step_size * grad + noise_scale * sqrt(2 step_size) * N(0, I)`` with ``grad = -score``; CUDA float32
contiguous only; in place with ``out=x``. We pass an incrementing integer ``seed`` (as its own benchmark
does): ``seed=None`` would sync the host for an ``.item()``.
"""

from __future__ import annotations

import itertools
import math

import torch

from ..checks import check_deterministic, check_noise, noise_statistics
from ..engine import Provider, ProviderUnavailable, first_line
from .common import StateUpdate, call_checked, compile_unavailable, compiled, ours


def _noise(eps, noise_scale):
    return math.sqrt(2.0 * eps) if noise_scale is None else float(noise_scale)


def _fastlangevin(case, s, eps, noise_scale, backend):
    import fastlangevin as fl

    op = fl.langevin_step_ if case.mode == "inplace" else fl.langevin_step
    return lambda x: op(x, s, eps, noise_scale, backend=backend)


def _textbook(case, s, eps, noise_scale):
    """The textbook expression (out of place even in the in-place mode: ``x = x + ...``)."""
    b = _noise(eps, noise_scale)
    return lambda x: x + eps * s + b * torch.randn_like(x)


def _handwritten(case, s, eps, noise_scale):
    """As a user writes it in place: ``x.add_(s, alpha=eps).add_(randn_like(x), alpha=b)``."""
    b = _noise(eps, noise_scale)
    if case.mode == "inplace":
        return lambda x: x.add_(s, alpha=eps).add_(torch.randn_like(x), alpha=b)
    return lambda x: torch.add(x, s, alpha=eps).add_(torch.randn_like(x), alpha=b)


def _buffered(case, s, eps, noise_scale):
    """Best eager form: noise drawn at its scale into a reused buffer, then in-place adds."""
    b, z, out = _noise(eps, noise_scale), torch.empty_like(s), torch.empty_like(s)

    def step(x):
        z.normal_(0.0, b)
        return (x.add_(s, alpha=eps) if case.mode == "inplace" else torch.add(x, s, alpha=eps, out=out)).add_(z)

    return step


def _compile(case, s, eps, noise_scale):
    """``torch.compile`` of the textbook expression; in place, copied into x inside the graph."""
    b = _noise(eps, noise_scale)

    def build():
        def f(x, s):
            new = x + eps * s + b * torch.randn_like(x)
            return x.copy_(new) if case.mode == "inplace" else new

        return f

    return compiled(case, ("step", eps, b), build, s)


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
    if case.device.type != "cuda" or case.dtype != torch.float32:
        return "CUDA float32 only"
    return None


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
        Provider("compile", "torch.compile of the textbook expression", _compile, unavailable=compile_unavailable),
        Provider("torchebm_fused", "torchebm fused_langevin_step (Triton)", _torchebm, "peer", _torchebm_unavailable),
    )

    def arguments(self, opts, noisy=True):
        return opts.eps, None if noisy else 0.0

    def check_noise_off(self, provider, case, x, s, opts):
        try:
            step = provider.make(case, s, *self.arguments(opts, noisy=False))
        except ProviderUnavailable as exc:
            return {"noise_off": f"not checked: {exc}"}
        out = call_checked(step, x, case, provider, "noise-off output")
        return {"noise_off": check_deterministic(out, x, s, opts.eps)}

    def check_noisy(self, out, x, s, case, opts):
        b = math.sqrt(2.0 * opts.eps)
        return {"noise": check_noise(noise_statistics(out, x, s, opts.eps, b), case.dtype, b)}
