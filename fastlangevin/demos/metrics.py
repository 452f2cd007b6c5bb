"""Sample-quality numbers the demos report (and their tests check).

* :func:`mmd2` — squared maximum mean discrepancy with a sum of RBF kernels (unbiased);
* :func:`hist_tv` — total-variation distance between 2-D histograms;
* :func:`precision_recall` — k-NN precision / recall (Kynkäänniemi et al. 2019) in pixel space;
* :func:`class_coverage` — the effective number of classes among samples labelled by a
  nearest-neighbour classifier (exp of the entropy of the label histogram; at most 10 for digits).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] = (0.1, 0.2, 0.5, 1.0, 2.0)) -> float:
    """Unbiased MMD² between samples ``x [N, D]`` and ``y [M, D]`` with the kernel
    k(a, b) = Σ_h exp(-‖a - b‖² / (2h²)). Zero in expectation when both come from one
    distribution (so it can come out slightly negative)."""
    x, y = x.double().flatten(1), y.double().flatten(1)
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"mmd2 needs at least 2 points on each side, got {n} and {m}")

    def k(a, b):
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(sxx + syy - 2 * kxy.mean())


def hist_tv(x: torch.Tensor, y: torch.Tensor, lim: float = 3.0, bins: int = 24) -> float:
    """Total-variation distance ½ Σ |p - q| between the 2-D histograms of ``x`` and ``y``
    (``bins``² cells over [-lim, lim]²; points outside count in no cell, so a sample that
    escapes the box raises the distance)."""

    def h(p):
        p = p.double().cpu()
        idx = ((p + lim) / (2 * lim) * bins).floor().long()
        ok = ((idx >= 0) & (idx < bins)).all(dim=1)
        flat = idx[ok, 0] * bins + idx[ok, 1]
        return torch.bincount(flat, minlength=bins * bins).double() / p.shape[0]

    return float(0.5 * (h(x) - h(y)).abs().sum())


def _kth_nn_radius(a: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each row of ``a`` to its k-th nearest other row."""
    d = torch.cdist(a, a)
    return d.kthvalue(k + 1, dim=1).values  # the 1st smallest is the point itself (0)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> Tuple[float, float]:
    """k-NN precision and recall (Kynkäänniemi et al. 2019) of ``fake`` against ``real``.

    Each point's ball has the radius of its k-th nearest neighbour in its own set.
    precision = fraction of fake points inside some real ball (are samples realistic?);
    recall = fraction of real points inside some fake ball (is the data's variety covered?).
    """
    real, fake = real.double().flatten(1), fake.double().flatten(1)
    r_real, r_fake = _kth_nn_radius(real, k), _kth_nn_radius(fake, k)
    d = torch.cdist(fake, real)  # [F, R]
    precision = (d <= r_real[None]).any(dim=1).double().mean()
    recall = (d <= r_fake[:, None]).any(dim=0).double().mean()
    return float(precision), float(recall)


def nearest(query: torch.Tensor, ref: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(distance [Q], index [Q])`` of each query row's nearest row of ``ref``."""
    d = torch.cdist(query.double().flatten(1), ref.double().flatten(1))
    return d.min(dim=1)


def class_coverage(labels: torch.Tensor, n_classes: int = 10) -> float:
    """exp(entropy) of the label histogram: 10 when all ten digits are equally common, 1 when
    every sample is the same digit."""
    p = torch.bincount(labels.flatten().cpu(), minlength=n_classes).double()
    p = p / p.sum()
    nz = p[p > 0]
    return float(torch.exp(-(nz * nz.log()).sum()))
