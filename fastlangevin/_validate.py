"""Argument checks shared by the ops. Every error names the argument and what was expected.

Scale arguments (step sizes, noise scales, sigmas) are normalised into :class:`Scale`:
a Python float, or a float tensor that is 0-d or per-sample ``[B]``.  Values of tensors that
live on an accelerator are *not* inspected (that would be a host sync in the hot path);
CPU tensors and Python numbers are.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Optional, Tuple

import numpy as np
import torch

from ._backend import _is_compiling

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def check_state(name: str, t, *, min_dim: int = 1) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have a floating dtype (float32, bfloat16, float16, float64), got {t.dtype}")
    if t.dim() < min_dim:
        raise ValueError(
            f"{name} must have at least {min_dim} dimension(s) (dim 0 is the batch), got shape {tuple(t.shape)}"
        )
    return t


def check_like(name: str, t, ref: torch.Tensor, ref_name: str) -> torch.Tensor:
    """``t`` must be a float tensor with ``ref``'s shape and device (dtype may differ)."""
    check_state(name, t, min_dim=0)
    if t.shape != ref.shape:
        raise ValueError(f"{name} must have the shape of {ref_name} {tuple(ref.shape)}, got {tuple(t.shape)}")
    if t.device != ref.device:
        raise ValueError(f"{name} must be on {ref_name}'s device {ref.device}, got {t.device}")
    return t


class Scale(NamedTuple):
    """A validated scale: ``value`` (float) when scalar, else ``tensor`` (0-d or ``[B]``)."""

    value: float = 0.0
    tensor: Optional[torch.Tensor] = None

    @property
    def per_row(self) -> bool:
        return self.tensor is not None and self.tensor.dim() == 1

    @property
    def is_zero(self) -> bool:
        return self.tensor is None and self.value == 0.0


def _real_scalar(v) -> bool:
    """Python and numpy real numbers (np.float32, np.float16, np.int64, ...); not bools."""
    return not isinstance(v, (bool, np.bool_)) and isinstance(v, numbers.Real)


def check_scale(name: str, v, *, batch: int, device: torch.device, allow_zero: bool = True) -> Scale:
    """A non-negative finite scale: a real number (Python or numpy, any float type), a 0-d
    tensor or a per-sample ``[batch]`` tensor."""
    if type(v) is float or (type(v) is not torch.Tensor and _real_scalar(v)):
        v = float(v)
        if not (v > 0.0 and v < math.inf) and not (v == 0.0 and allow_zero):
            what = "≥ 0" if allow_zero else "> 0"
            raise ValueError(f"{name} must be finite and {what}, got {v}")
        return Scale(v)
    if not isinstance(v, torch.Tensor):
        raise TypeError(
            f"{name} must be a float (any real number), a 0-d tensor or a [B] tensor, got {type(v).__name__}"
        )
    if not v.dtype.is_floating_point:
        raise TypeError(f"{name} tensor must have a floating dtype, got {v.dtype}")
    dim = v.dim()
    if dim > 1 or (dim == 1 and v.shape[0] != batch):
        raise ValueError(
            f"{name} tensor must be 0-d or per-sample of shape [{batch}] (x.shape[0]), got {tuple(v.shape)}"
        )
    if v.requires_grad and torch.is_grad_enabled():
        raise ValueError(f"{name} is treated as a constant (no gradient flows to it); pass {name}.detach()")
    on_cpu = v.is_cpu  # (`device.type` builds a string each time)
    if v.device != device:
        if on_cpu and dim == 0:
            return check_scale(name, float(v), batch=batch, device=device, allow_zero=allow_zero)
        raise ValueError(f"{name} tensor must be on x's device {device}, got {v.device}")
    if on_cpu and v.numel() and not _is_compiling():
        lo, hi = torch.aminmax(v)  # one pass; NaN propagates into both
        lo, hi = lo.item(), hi.item()
        if not ((lo >= 0.0 if allow_zero else lo > 0.0) and hi < math.inf):
            what = "≥ 0" if allow_zero else "> 0"
            bad = ~torch.isfinite(v) | (v < 0) if allow_zero else ~torch.isfinite(v) | (v <= 0)
            raise ValueError(
                f"{name} must be finite and {what} everywhere, got {v.flatten()[bad.flatten()][:4].tolist()}"
            )
    return Scale(0.0, v)


def check_clamp(clamp) -> Optional[Tuple[float, float]]:
    if clamp is None:
        return None
    if not isinstance(clamp, (tuple, list)) or len(clamp) != 2:
        raise TypeError(f"clamp must be a (lo, hi) pair of numbers or None, got {clamp!r}")
    lo = -math.inf if clamp[0] is None else clamp[0]
    hi = math.inf if clamp[1] is None else clamp[1]
    for side, b in (("lo", lo), ("hi", hi)):
        if not _real_scalar(b):
            raise TypeError(f"clamp {side} must be a number or None, got {type(b).__name__}")
        if math.isnan(b):
            raise ValueError(f"clamp {side} must not be NaN")
    lo, hi = float(lo), float(hi)
    if lo > hi:
        raise ValueError(f"clamp must satisfy lo <= hi, got lo={lo} > hi={hi}")
    return lo, hi


def check_generator(generator, device: torch.device) -> Optional[torch.Generator]:
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator.device != device and generator.device.type != device.type:
        raise ValueError(
            f"generator must be on x's device type {device.type!r}, got a {generator.device.type!r} generator"
        )
    return generator


def check_offset(name: str, v) -> int:
    if type(v) is int and v >= 0:
        return v
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{name} must be a non-negative int, got {v!r}")
    return v
