"""PyTorch fallback of the Langevin corrector's pass 1 — per-row ``(‖s‖², ‖z‖²)``.

Same semantics as ``kernels/corrector.py``: sums in fp32 (fp64 for float64 scores), z drawn
from the stream the update pass will redraw it from (``rng="philox"``: the kernels' stream;
``rng="torch"``: the chunk-keyed CPU stream of ``fastlangevin.fallback.langevin_step``), at the
rows' global element indices. z is never stored whole: rows are processed in blocks of about
``BLOCK_ELEMENTS`` elements.
"""

from __future__ import annotations

import torch

from .._rng import philox_normal, torch_normal

#: Elements per block of rows (a row larger than this is one block on its own).
BLOCK_ELEMENTS = 1 << 18


def corrector_norms_torch(score: torch.Tensor, seed: torch.Tensor, *, sample_offset: int, rng: str) -> torch.Tensor:
    """``[B, 2]`` per-row ``(Σ s², Σ z²)`` of a contiguous ``[B, row_size]`` score."""
    rows, row_size = score.shape
    acc = torch.float64 if score.dtype == torch.float64 else torch.float32
    out = torch.zeros(rows, 2, dtype=acc, device=score.device)
    if rows == 0 or row_size == 0:
        return out
    if rng == "torch":
        if score.device.type != "cpu":
            raise ValueError(f"rng='torch' draws from torch's CPU generator; use rng='philox' on {score.device.type}")
        seed_int = int(seed.reshape(()).item())  # CPU: no device sync
    elif rng != "philox":
        raise ValueError(f"rng must be 'torch' or 'philox', got {rng!r}")
    per_block = max(1, BLOCK_ELEMENTS // row_size)
    for r0 in range(0, rows, per_block):
        r1 = min(rows, r0 + per_block)
        start, n = (sample_offset + r0) * row_size, (r1 - r0) * row_size
        z = torch_normal(seed_int, start, n) if rng == "torch" else philox_normal(seed, start, n)
        z = z.to(device=score.device, dtype=acc).view(r1 - r0, row_size)
        s = score[r0:r1].to(acc)
        out[r0:r1, 0] = (s * s).sum(dim=1)
        out[r0:r1, 1] = (z * z).sum(dim=1)
    return out
