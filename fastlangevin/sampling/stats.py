"""Streaming per-chain statistics of a running sampler (no stored trajectory).

Recorded draws x₁ … x_N (the state after every ``every``-th step past ``burn_in``), per chain and
dimension, state shaped ``[B, ...]``:

    Welford:      mean_n = mean_{n-1} + (x_n − mean_{n-1}) / n
                  M2_n   = M2_{n-1} + (x_n − mean_{n-1}) ⊙ (x_n − mean_n),     var = M2_N / (N − 1)

    batch means:  the N draws cut into a = ⌊N / b⌋ consecutive batches of b (the first a·b draws);
                  S²_bm = sample variance of the a batch means (Welford again, over batches),
                  σ²_asy ≈ b · S²_bm,   ESS = a·b · var / σ²_asy,   MCSE(mean) = √(σ²_asy / (a·b))

Memory: five tensors shaped like the state (mean, M2, the open batch's sum, the batch means'
mean and M2), O(chains × dims) whatever the run length. Every update is a few in-place device ops:
no host sync per step; the step counter is a Python int known from the loop. The batch size
defaults to ⌊√N⌋ (so about √N batches: the usual consistent choice), fixed when the run starts.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from .loop import check_n, compute_dtype


class RunningStats:
    """Per chain and dimension mean, variance, ESS and MCSE of a sampler's draws, streamed.

    Pass it to any sampler as ``stats=``. Recorded draws: the state after steps
    ``burn_in + every, burn_in + 2·every, …`` (step counts from 1, over the whole run).

    Attributes (after the run; shaped like the state, fp32 — fp64 for fp64 states):
        mean, var: Welford mean and (unbiased) variance over the recorded draws.
        count: number of recorded draws N (a Python int).

    Methods ``ess()`` and ``mcse()``: batch-means estimates (see the module docstring); they
    need at least 2 complete batches (else ``ValueError``).

    Args:
        every: record every k-th step (>= 1).
        burn_in: steps skipped before recording (>= 0).
        batch_size: draws per batch for ``ess``/``mcse``; default ⌊√N⌋ with N the run's number of
            recorded draws.
    """

    def __init__(self, every: int = 1, *, burn_in: int = 0, batch_size: Optional[int] = None):
        self.every = check_n("RunningStats.every", every)
        if isinstance(burn_in, bool) or not isinstance(burn_in, int) or burn_in < 0:
            raise ValueError(f"RunningStats.burn_in must be an int >= 0, got {burn_in!r}")
        self.burn_in = burn_in
        self.batch_size = None if batch_size is None else check_n("RunningStats.batch_size", batch_size)
        self.count = 0
        self.mean: Optional[torch.Tensor] = None
        self._m2: Optional[torch.Tensor] = None
        self._bsum: Optional[torch.Tensor] = None
        self._bm_mean: Optional[torch.Tensor] = None
        self._bm_m2: Optional[torch.Tensor] = None
        self._b = 1
        self._n_batches = 0

    # -- results -----------------------------------------------------------------------
    @property
    def var(self) -> torch.Tensor:
        self._need(2, "var")
        return self._m2 / (self.count - 1)

    def _need(self, n: int, what: str) -> None:
        if self.mean is None or self.count < n:
            raise ValueError(f"RunningStats.{what} needs at least {n} recorded draws, got {self.count}")

    def _asy_var(self) -> torch.Tensor:
        if self._n_batches < 2:
            raise ValueError(
                f"RunningStats.ess/mcse need at least 2 complete batches of {self._b} draws, "
                f"got {self._n_batches} ({self.count} draws): run longer or pass a smaller batch_size"
            )
        return self._b * self._bm_m2 / (self._n_batches - 1)

    def ess(self) -> torch.Tensor:
        """Batch-means effective sample size per chain and dimension (shaped like the state)."""
        self._need(2, "ess")
        return self._n_batches * self._b * self.var / self._asy_var()

    def mcse(self) -> torch.Tensor:
        """Batch-means Monte Carlo standard error of ``mean`` per chain and dimension."""
        self._need(2, "mcse")
        return (self._asy_var() / (self._n_batches * self._b)).sqrt()

    # -- the loop's hooks -----------------------------------------------------------------
    def _start(self, x: torch.Tensor, n_steps: int) -> None:
        n_draws = max(0, (n_steps - self.burn_in) // self.every)
        self._b = self.batch_size or max(1, math.isqrt(n_draws))
        dt = compute_dtype(x.dtype)
        self.count, self._n_batches = 0, 0
        self.mean, self._m2, self._bsum, self._bm_mean, self._bm_m2 = (
            torch.zeros(x.shape, dtype=dt, device=x.device) for _ in range(5)
        )

    def _record(self, step: int, x: torch.Tensor) -> None:
        if step <= self.burn_in or (step - self.burn_in) % self.every:
            return
        xf = x.to(self.mean.dtype)
        self.count += 1
        delta = xf - self.mean
        self.mean.add_(delta, alpha=1.0 / self.count)
        self._m2.addcmul_(delta, xf - self.mean)
        self._bsum.add_(xf)
        if self.count % self._b == 0:  # a batch closed: Welford over the batch means
            self._n_batches += 1
            bm = self._bsum.div_(self._b)
            d = bm - self._bm_mean
            self._bm_mean.add_(d, alpha=1.0 / self._n_batches)
            self._bm_m2.addcmul_(d, bm - self._bm_mean)
            self._bsum.zero_()

    # -- checkpoints ----------------------------------------------------------------------
    _TENSORS = ("mean", "_m2", "_bsum", "_bm_mean", "_bm_m2")

    def state_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self._TENSORS}
        d.update(count=self.count, b=self._b, n_batches=self._n_batches)
        d.update(every=self.every, burn_in=self.burn_in, batch_size=self.batch_size)
        return d

    def load_state_dict(self, d: dict) -> None:
        for k in ("every", "burn_in", "batch_size"):
            if d[k] != getattr(self, k):
                raise ValueError(f"RunningStats.{k} differs from the checkpoint's: {getattr(self, k)!r} != {d[k]!r}")
        for k in self._TENSORS:
            setattr(self, k, d[k])
        self.count, self._b, self._n_batches = d["count"], d["b"], d["n_batches"]
