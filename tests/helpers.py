"""Helpers shared by the op tests (states, noise-only steps, backend tracking, the formula)."""

import torch

import fastlangevin as fl
from fastlangevin import reference


def make_state(shape, dtype, score_dtype, device="cpu", seed=0):
    """A state ``x`` and a score ``s`` of ``shape`` (standard normal draws of a fixed seed)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    s = torch.randn(shape, generator=g).to(device=device, dtype=score_dtype)
    return x, s


def plain_step(x, s, a, b, z, clamp=None):
    """:func:`fastlangevin.reference.langevin_step` in the ops' compute dtype (fp32; fp64 for
    fp64 states), rounded to x's dtype: what every backend must give for the noise ``z``."""
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    zc = None if z is None else z.to(torch.float32).to(cdt)
    return reference.langevin_step(x.to(cdt), s.to(cdt), a, b, zc, clamp).to(x.dtype)


def noise_only(n, device, backend, rng=None, generator=None, offset=0):
    """The op's noise for ``n`` elements at sample offset ``offset``: a step from x = s = 0, b = 1."""
    x = torch.zeros(n, device=device)
    return fl.langevin_step(x, x, 0.0, 1.0, backend=backend, rng=rng, generator=generator, sample_offset=offset)


def backend_ran(fn):
    """``(fn(), [backends that ran])``."""
    with fl.track_backends() as ran:
        out = fn()
    return out, [b for _, b in ran]
