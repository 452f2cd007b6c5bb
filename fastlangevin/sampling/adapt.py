"""Per-chain step-size adaptation for MALA by dual averaging (Hoffman & Gelman 2014, §3.2).

For chain b, warm-up iteration m = 1 … K with Metropolis acceptance probability α_m = min(1, e^{log α}):

    H̄_m      = (1 − 1/(m + t₀)) H̄_{m−1} + (δ − α_m) / (m + t₀)
    log ε_m  = μ − √m / γ · H̄_m                       (the step size of the next proposal)
    log ε̄_m  = m^{−κ} log ε_m + (1 − m^{−κ}) log ε̄_{m−1}

with μ = log(10 ε₀), γ = 0.05, t₀ = 10, κ = 0.75 (the paper's values) and H̄₀ = 0, log ε̄₀ = 0.

Two windows (as Stan restarts its step-size adaptation): the first half of the warm-up runs the
scheme above from ε₀ and finds the scale; the second half restarts it with μ = log ε̄ of the first
, κ = 1 (ε̄ = the plain average of the window's log-step iterates) and γ = 0.5 (a weaker gain). Why: MALA's α is one
proposal's acceptance probability per chain, far noisier than NUTS's tree average the paper's
constants were tuned on; with κ = 0.75 the frozen ε̄ keeps that noise (log ε̄ spread ≈ 0.03 over
chains, acceptance 0.55–0.64 on the test target), and since α is concave in log ε around the
optimum, a noisy iterate sequence whose mean α is δ freezes at an ε̄ with α(ε̄) > δ (+0.02 here).
A plain average over a window started near the optimum, with a gain 10× weaker, removes most of
both without dragging in the far-off early iterates (acceptance 0.53–0.62, mean 0.578).

After the warm-up the step size is frozen at ε̄_K: the kept chain is a time-homogeneous MALA
chain, so it is a valid MCMC for the target (adapting forever would not be, without the
diminishing-adaptation conditions). All state lives in ``[B]`` device tensors updated in place:
no host sync per step (m is a Python int from the loop).

ULA (:func:`fastlangevin.langevin`) gets no such adaptation: it has no accept/reject step, hence no
acceptance statistic that measures the discretisation error — its bias grows with ε while its
mixing improves, and nothing observable in one run trades the two off. Tuning ε for ULA needs
a bias estimate (e.g. comparing against a MALA run, or a Richardson pair of step sizes); run MALA
with adaptation to find a step size, or use MALA outright.
"""

from __future__ import annotations

import math

import torch

GAMMA, T0, KAPPA = 0.05, 10.0, 0.75
#: κ of the second window: a plain average of its iterates (they all start near the optimum)
KAPPA_FINAL = 1.0
#: γ of the second window: a weaker gain (less iterate noise) once μ is near the optimum
GAMMA_FINAL = 0.5


def check_adapt_steps(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"adapt_steps must be an int >= 0, got {k!r}")
    return k


def check_target_accept(d) -> float:
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 < float(d) < 1.0:
        raise ValueError(f"target_accept must be a number in (0, 1), got {d!r}")
    return float(d)


class DualAveraging:
    """The dual-averaging state of ``B`` chains: ``step_size`` ``[B]`` is the live step size."""

    def __init__(self, eps0, batch: int, target: float, *, device, dtype):
        e0 = eps0.to(device, dtype) if isinstance(eps0, torch.Tensor) else torch.tensor(float(eps0), dtype=dtype)
        self.step_size = e0.to(device).expand(batch).clone()
        self.mu = (10.0 * self.step_size).log()
        self.h_bar = torch.zeros(batch, dtype=dtype, device=device)
        self.log_eps_bar = torch.zeros(batch, dtype=dtype, device=device)
        self.target = target

    def tensors(self) -> list:
        """The state to snapshot/restore (CUDA-graph warm-up, checkpoints)."""
        return [self.step_size, self.mu, self.h_bar, self.log_eps_bar]

    def restart(self) -> None:
        """Start a new window from the current averaged step size (shrinking towards it)."""
        self.mu.copy_(self.log_eps_bar)
        self.step_size.copy_(self.log_eps_bar.exp())
        self.h_bar.zero_()
        self.log_eps_bar.zero_()

    def update(
        self, m: int, log_alpha: torch.Tensor, *, final: bool, kappa: float = KAPPA, gamma: float = GAMMA
    ) -> None:
        """Iteration ``m`` (from 1 in each window) with the step's log acceptance ratios;
        ``final``: freeze at ε̄ (the window's averaged iterate)."""
        alpha = torch.nan_to_num(log_alpha, nan=-math.inf).clamp(max=0.0).exp()  # NaN ratio: rejected
        w = 1.0 / (m + T0)
        self.h_bar.mul_(1.0 - w).add_(self.target - alpha, alpha=w)
        log_eps = self.mu - (math.sqrt(m) / gamma) * self.h_bar
        eta = m**-kappa
        self.log_eps_bar.mul_(1.0 - eta).add_(log_eps, alpha=eta)
        self.step_size.copy_((self.log_eps_bar if final else log_eps).exp())
