"""Reference Langevin update.

    out = clamp(x + a · s + b · z, lo, hi)

``x``, ``s``, ``z``: ``[B, ...]``. ``a``, ``b``: Python floats, 0-d tensors or per-sample ``[B]``
tensors (broadcast over each sample's event dims). ``b=None`` is the Langevin default
``sqrt(2 a)``. ``z`` is given (the oracle never draws noise); ``z=None`` means no noise term.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch


def rows(v, like: torch.Tensor):
    """A scale broadcast over ``like``'s event dims: floats stay floats, ``[B]`` → ``[B, 1, ...]``."""
    if not isinstance(v, torch.Tensor):
        return v
    v = v.to(like.dtype)
    return v.reshape(-1, *([1] * (like.dim() - 1))) if v.dim() == 1 else v


def sqrt2a(a):
    return torch.sqrt(2 * a) if isinstance(a, torch.Tensor) else math.sqrt(2 * a)


def langevin_step(
    x: torch.Tensor,
    s: torch.Tensor,
    a,
    b=None,
    z: Optional[torch.Tensor] = None,
    clamp: Optional[Sequence[Optional[float]]] = None,
) -> torch.Tensor:
    a = rows(a, x)
    out = x + a * s.to(x.dtype)
    if z is not None:
        b = sqrt2a(a) if b is None else rows(b, x)
        out = out + b * z.to(x.dtype)
    if clamp is not None:
        out = out.clamp(clamp[0], clamp[1])
    return out
