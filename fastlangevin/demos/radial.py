"""Radial band masses: does a 2-D sample sit on the two rings, or fill the disc inside them?

The radius r = ‖x‖ of each point is put in one of five bands around the rings' radii
R₁ < R₂ (``RING_RADII``), each ring band ±w wide (``BAND_HALF_WIDTH`` = 3 × the data's noise
std, so a ring keeps ~99.7% of its points in its band):

    hole  r < R₁ - w  |  inner ring |r - R₁| ≤ w  |  gap  |  outer ring |r - R₂| ≤ w  |  outside r > R₂ + w

``radial_bands(x) → [5]`` fractions (float64, summing to 1; optional per-point weights, for a
density on a grid); ``band_tv(p, q) = ½ Σ_k |p_k - q_k|`` is their total-variation distance,
in [0, 1]. Why: the mass inside r < 1.35 (the old "inner ring" number, :func:`inner_mass`) is
the same for the inner ring and for a uniform blob of radius R₁ of the same mass
(:func:`fill_inner_ring`); the bands are not — the blob puts (1 - w/R₁)² ≈ 60% of its mass in
the hole, which the rings leave empty (a uniform disc alone: TV ≈ 0.70 to the rings; the rings
with the inner one filled in: ≈ 0.18).
``band_tv_se`` estimates the TV's standard error by a bootstrap over the samples.
"""

from __future__ import annotations

from typing import Optional

import torch

#: the radii of ``datasets.rings`` (its defaults; a test keeps the two equal)
RING_RADII = (0.8, 1.9)
#: 3 × the rings' noise std 0.06
BAND_HALF_WIDTH = 0.18
BAND_NAMES = ("hole", "inner ring", "gap", "outer ring", "outside")
#: the old metric's cut: r < 1.35 (half-way between the rings) counted as "the inner ring"
INNER_CUT = 0.5 * (RING_RADII[0] + RING_RADII[1])


def band_edges(radii=RING_RADII, w: float = BAND_HALF_WIDTH) -> torch.Tensor:
    """The four radii between the five bands: R₁ - w, R₁ + w, R₂ - w, R₂ + w (float64)."""
    r1, r2 = radii
    if not (w > 0 and r1 - w > 0 and r1 + w < r2 - w):
        raise ValueError(f"bands must be ordered and disjoint: radii {radii}, half-width {w}")
    return torch.tensor([r1 - w, r1 + w, r2 - w, r2 + w], dtype=torch.float64)


def band_index(x: torch.Tensor, radii=RING_RADII, w: float = BAND_HALF_WIDTH) -> torch.Tensor:
    """``[N]`` long: the band (0…4, see ``BAND_NAMES``) of each row of ``x [N, 2]``. A ring band
    includes its edges (|r - R| ≤ w)."""
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"x must be [N, 2], got {tuple(x.shape)}")
    r = x.detach().double().cpu().norm(dim=1)
    edges = band_edges(radii, w)
    # On an edge the two bucketize conventions disagree by one, and exactly one of them names
    # the ring band (odd index) beside it: take that one; elsewhere they agree.
    a, b = torch.bucketize(r, edges, right=False), torch.bucketize(r, edges, right=True)
    return torch.where(a % 2 == 1, a, b)


def radial_bands(
    x: torch.Tensor, weights: Optional[torch.Tensor] = None, radii=RING_RADII, w: float = BAND_HALF_WIDTH
) -> torch.Tensor:
    """``[5]`` float64: the fraction of the points of ``x [N, 2]`` (or of ``weights [N]``, ≥ 0,
    normalised here) in each band."""
    idx = band_index(x, radii, w)
    wt = None if weights is None else weights.detach().double().cpu().reshape(-1)
    if wt is not None and wt.shape[0] != idx.shape[0]:
        raise ValueError(f"weights must have one entry per point ({idx.shape[0]}), got {wt.shape[0]}")
    mass = torch.bincount(idx, weights=wt, minlength=len(BAND_NAMES)).double()
    total = mass.sum()
    if not total > 0:
        raise ValueError("radial_bands needs at least one point (of positive weight)")
    return mass / total


def band_tv(p: torch.Tensor, q: torch.Tensor) -> float:
    """Total-variation distance ½ Σ |p - q| between two band-mass vectors."""
    return float(0.5 * (p - q).abs().sum())


def radial_band_tv(x: torch.Tensor, y: torch.Tensor, radii=RING_RADII, w: float = BAND_HALF_WIDTH) -> float:
    """``band_tv`` of the samples ``x`` and ``y`` (each ``[N, 2]``)."""
    return band_tv(radial_bands(x, radii=radii, w=w), radial_bands(y, radii=radii, w=w))


def band_tv_se(
    x: torch.Tensor,
    y: torch.Tensor,
    x_weights: Optional[torch.Tensor] = None,
    reps: int = 200,
    seed: int = 0,
    radii=RING_RADII,
    w: float = BAND_HALF_WIDTH,
) -> float:
    """Bootstrap standard error of the band TV between ``x`` and ``y [N, 2]``: the samples are
    resampled with replacement ``reps`` times (a generator of its own, so a caller's stream is
    untouched). With ``x_weights`` (a density on the grid ``x``) ``x``'s masses are exact: they
    are held fixed and only ``y`` is resampled."""
    g = torch.Generator().manual_seed(seed)
    k = len(BAND_NAMES)

    def resampled(pts: torch.Tensor) -> torch.Tensor:  # [reps, k]: band fractions of each resample
        idx = band_index(pts, radii, w)
        n = idx.shape[0]
        draw = idx[torch.randint(0, n, (reps, n), generator=g)] + k * torch.arange(reps)[:, None]
        return torch.bincount(draw.reshape(-1), minlength=reps * k).reshape(reps, k).double() / n

    px = resampled(x) if x_weights is None else radial_bands(x, x_weights, radii, w).expand(reps, k)
    tvs = 0.5 * (px - resampled(y)).abs().sum(dim=1)
    return float(tvs.std())


def format_bands(p: torch.Tensor) -> str:
    """``"0.000 0.296 0.000 0.703 0.001"``: the five masses, in ``BAND_NAMES`` order."""
    return " ".join(f"{float(v):.3f}" for v in p)


def inner_mass(x: torch.Tensor, weights: Optional[torch.Tensor] = None) -> float:
    """The old number: the fraction of ``x [N, 2]`` (or of ``weights``) at r < ``INNER_CUT``. The
    same for the inner ring and for a blob of the same mass inside it (:func:`fill_inner_ring`)."""
    inside = (x.detach().double().cpu().norm(dim=1) < INNER_CUT).double()
    if weights is None:
        return float(inside.mean())
    wt = weights.detach().double().cpu().reshape(-1)
    return float((inside * wt).sum() / wt.sum())


def uniform_disc(n: int, seed: int, radius: float = RING_RADII[0]) -> torch.Tensor:
    """``[n, 2]`` float64, uniform on the disc r < ``radius`` (default: the inner ring's): a blob.
    Drawn from a generator of its own (``seed``), so a caller's stream is untouched."""
    g = torch.Generator().manual_seed(seed)
    r = radius * torch.rand(n, generator=g, dtype=torch.float64).sqrt()
    a = 2 * torch.pi * torch.rand(n, generator=g, dtype=torch.float64)
    return torch.stack([r * a.cos(), r * a.sin()], dim=1)


def fill_inner_ring(x: torch.Tensor, seed: int) -> torch.Tensor:
    """``x [N, 2]`` with every point at r < ``INNER_CUT`` moved to a uniform point of the disc
    r < R₁: the inner ring replaced by a blob of the same mass — what the old inner-mass number
    scores as perfect (float64, on the CPU)."""
    out = x.detach().double().cpu().clone()
    inside = out.norm(dim=1) < INNER_CUT
    out[inside] = uniform_disc(int(inside.sum()), seed)
    return out
