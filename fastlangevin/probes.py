"""Counter-based probe vectors for Hutchinson trace estimates and sliced score matching.

    v[k, i, j],  k < n_probes, i < B (rows), j < D = prod(shape[1:]);  E[v vᵀ] = I

Rademacher (±1) or Gaussian N(0, 1) entries from the kernels' Philox4x32-10 stream
(:mod:`fastlangevin._rng`), keyed by one int64 seed (one draw from ``generator`` per call) and the
logical index ``e = ((sample_offset + i) · n_probes + k) · D + j`` of the global sample: entry e is
output ``e % 4`` of Philox at counter ``e // 4`` (normals: Box–Muller, as ``tl.randn4x``;
Rademacher: the low bit of the integer output). A sample's probes therefore never depend on the
batch it sits in, nor on the device or block size.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from ._rng import draw_seed, philox_normal, philox_randint4x

PROBES = ("rademacher", "gaussian")


def check_probe(probe) -> str:
    if probe not in PROBES:
        raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {probe!r}")
    return probe


def probe_vectors(
    shape: Sequence[int],
    n_probes: int,
    probe: str = "rademacher",
    *,
    seed: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    sample_offset: int = 0,
) -> torch.Tensor:
    """Probes ``[n_probes, *shape]`` (``shape[0]`` the batch); draws one seed unless ``seed`` is given."""
    check_probe(probe)
    if isinstance(n_probes, bool) or not isinstance(n_probes, int) or n_probes < 1:
        raise ValueError(f"n_probes must be an int >= 1, got {n_probes!r}")
    shape = tuple(int(d) for d in shape)
    B, D = shape[0], math.prod(shape[1:])
    if seed is None:
        seed = draw_seed(torch.device(device or "cpu"), generator)
    device = seed.device if device is None else torch.device(device)
    start, n = sample_offset * n_probes * D, B * n_probes * D
    if probe == "gaussian":
        flat = philox_normal(seed, start, n, device=device)
    else:
        idx = torch.arange(start, start + n, dtype=torch.int64, device=device)
        outs = philox_randint4x(seed.to(device), idx // 4)
        word = torch.stack(outs, dim=-1).gather(-1, (idx % 4).unsqueeze(-1)).squeeze(-1)
        flat = 1.0 - 2.0 * word.bitwise_and(1).to(torch.float32)
    return flat.reshape(B, n_probes, D).transpose(0, 1).reshape((n_probes,) + shape).to(dtype)
