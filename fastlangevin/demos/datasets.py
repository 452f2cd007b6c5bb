"""Data sets of the demos, drawn from a torch generator (so a seed fixes them).

* 2-D: :func:`swiss_roll` and :func:`rings`, scaled to roughly unit standard deviation.
* Images: :func:`load_digits` — the 1,797 8×8 handwritten digits that ship with scikit-learn
  (no download), scaled to [-1, 1] and split into train / held-out.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch

TWO_D = ("swissroll", "rings")


def swiss_roll(n: int, generator: torch.Generator, noise: float = 0.05) -> torch.Tensor:
    """``[n, 2]``: points on the spiral r = t, angle t, t ∈ [1.5π, 4.5π], scaled by 1/5 (so the
    roll spans about [-2.8, 2.6]), plus Gaussian noise of std ``noise``."""
    dev = generator.device
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, device=dev))
    x = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1) / 5.0
    return x + noise * torch.randn(n, 2, generator=generator, device=dev)


def rings(n: int, generator: torch.Generator, radii=(0.8, 1.9), noise: float = 0.06) -> torch.Tensor:
    """``[n, 2]``: concentric circles, each point on ring k with probability ∝ its radius (equal
    density per unit length), plus Gaussian noise of std ``noise``."""
    dev = generator.device
    r = torch.tensor(radii, device=dev)
    k = torch.multinomial(r / r.sum(), n, replacement=True, generator=generator)
    a = 2 * math.pi * torch.rand(n, generator=generator, device=dev)
    x = r[k, None] * torch.stack([torch.cos(a), torch.sin(a)], dim=1)
    return x + noise * torch.randn(n, 2, generator=generator, device=dev)


def two_d(name: str, n: int, generator: torch.Generator) -> torch.Tensor:
    if name == "swissroll":
        return swiss_roll(n, generator)
    if name == "rings":
        return rings(n, generator)
    raise ValueError(f"data must be one of {', '.join(TWO_D)}, got {name!r}")


def load_digits(
    generator: torch.Generator, n_test: int = 297
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's 8×8 digits as ``(x_train [N, 1, 8, 8], y_train [N], x_test, y_test)`` on the
    generator's device, pixels 0…16 mapped linearly to [-1, 1], split at random."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "the digits demo needs scikit-learn (its 8x8 digits ship with it): pip install 'fastlangevin[demos]'"
        ) from exc
    d = sk_load_digits()
    dev = generator.device
    x = torch.tensor(d.images, dtype=torch.float32, device=dev)[:, None] / 8.0 - 1.0  # [1797, 1, 8, 8]
    y = torch.tensor(d.target, dtype=torch.long, device=dev)
    perm = torch.randperm(x.shape[0], generator=generator, device=dev)
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]
