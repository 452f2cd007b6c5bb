"""Inpainting with a score SDE (Song et al. 2020, App. I.2): predictor–corrector sampling where the known
entries are replaced by their perturbed values after every update.

    x ← (1 − M) ⊙ x + M ⊙ (m(t_i) x_known + std(t_i) z),    z ~ N(0, I)

x, x_known: ``[B, ...]``; mask M: same shape (or broadcastable), 1/True = known. Start:
x = M ⊙ x_known + (1 − M) ⊙ prior draw. Each of the N steps at t_i (from 1 to eps, the SDE's
:meth:`schedule`) runs the Langevin corrector (``n_corrector_steps``) and the predictor, each followed by
the replacement, as the published ``get_pc_inpainter`` does. Updates and replacement draws are the
fused ops (noise keyed by global sample index; one seed per op call from ``generator``). Last step:
the predictor drops its noise (``denoise=True``), and the known entries are set to ``x_known`` itself
(the published code leaves m(eps)·x_known there, which differs from x_known for VP by ~1e-3 relative).

Accuracy: the replacement method is an approximation to conditional sampling. On a correlated 2-D
Gaussian (ρ = 0.8) with 200 steps, VE with the default corrector matched the exact conditional's mean and
variance within the sampling error (B = 2000); VP left a bias in the conditional mean (−0.19 vs −0.10,
marginal −0.5) that more corrector steps or a larger snr reduce (−0.13 with 3 corrector steps).

Batch invariance: with ``corrector_norm="per_sample"`` (or ``corrector=None``) a sample does not depend on
its batch; the default batch-averaged corrector norms couple the samples (see :func:`pc_sample`).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ._validate import check_scale, check_state
from .ops.corrector import NORM_MODES, langevin_corrector_
from .ops.langevin_step import langevin_step, langevin_step_
from .sampling.loop import _progress_bar, check_n, compute_dtype, eval_score, op_kwargs
from .sampling.pc import sample_prior
from .sde import VESDE, VPSDE

PREDICTORS = ("reverse_diffusion", "euler_maruyama")


def pc_inpaint(
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sde,
    x_known: torch.Tensor,
    mask: torch.Tensor,
    *,
    n_steps: int = 1000,
    predictor: str = "reverse_diffusion",
    corrector: Optional[str] = "langevin",
    snr: float = 0.16,
    n_corrector_steps: int = 1,
    corrector_norm: str = "batch",
    denoise: bool = True,
    eps: Optional[float] = None,
    generator: Optional[torch.Generator] = None,
    progress: bool = False,
    backend: Optional[str] = None,
    rng: Optional[str] = None,
    sample_offset: int = 0,
) -> torch.Tensor:
    """Fill the unknown entries (``mask`` 0/False) of ``x_known`` by PC sampling (see module doc).

    ``x_known``'s unknown entries are ignored. Returns a new tensor; its known entries equal ``x_known``."""
    if not isinstance(sde, (VESDE, VPSDE)):
        raise TypeError(f"sde must be a fastlangevin.VESDE or VPSDE, got {type(sde).__name__}")
    if predictor not in PREDICTORS:
        raise ValueError(f"predictor must be 'reverse_diffusion' or 'euler_maruyama', got {predictor!r}")
    if corrector not in ("langevin", None, "none"):
        raise ValueError(f"corrector must be 'langevin' or None, got {corrector!r}")
    corr = corrector == "langevin"
    if corrector_norm not in NORM_MODES:
        raise ValueError(f"corrector_norm must be 'batch' or 'per_sample', got {corrector_norm!r}")
    check_state("x_known", x_known)
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a tensor (1/True = known), got {type(mask).__name__}")
    try:
        known = torch.broadcast_to(mask, x_known.shape).to(torch.bool)
    except RuntimeError as exc:
        raise ValueError(f"mask {tuple(mask.shape)} must broadcast to x_known {tuple(x_known.shape)}") from exc
    if known.device != x_known.device:
        raise ValueError(f"mask must be on x_known's device {x_known.device}, got {mask.device}")
    n = check_n("n_steps", n_steps)
    n_corr = check_n("n_corrector_steps", n_corrector_steps) if corr else 0
    B = x_known.shape[0]
    if corr:
        check_scale("snr", snr, batch=B, device=x_known.device, allow_zero=False)
    sch = sde.schedule(n, eps)
    kw = op_kwargs(x_known, clamp=None, generator=generator, backend=backend, rng=rng, sample_offset=sample_offset)
    xk = x_known.detach().contiguous()
    prior_kw = {k: kw[k] for k in ("generator", "backend", "rng", "sample_offset")}
    x = sample_prior(sde, xk.shape, dtype=xk.dtype, device=xk.device, **prior_kw)
    x = torch.where(known, xk, x)
    cdt = compute_dtype(x.dtype)
    t_list, alpha = sch.t.tolist(), sch.alpha.tolist()
    c_list, a_list, b_list = (v.tolist() for v in sch.predictor(predictor))
    m_list = sde.marginal_mean_scale(sch.t).tolist()
    std_list = sde.marginal_std(sch.t).tolist()

    def replace(y: torch.Tensor, j: int) -> torch.Tensor:
        mk = xk * m_list[j]
        return torch.where(known, langevin_step(mk, mk, 0.0, std_list[j], **kw), y)

    bar = _progress_bar(progress, n, "pc_inpaint")
    with torch.no_grad():
        for j in range(n):
            t = torch.full((B,), t_list[j], dtype=cdt, device=x.device)
            for _ in range(n_corr):
                s = eval_score(score_fn, x, t)
                langevin_corrector_(x, s, snr, alpha=alpha[j], norm=corrector_norm, **kw)
                x = replace(x, j)
            s = eval_score(score_fn, x, t)
            last = j == n - 1
            if c_list[j] != 1.0:
                x.mul_(c_list[j])
            langevin_step_(x, s, a_list[j], 0.0 if (last and denoise) else b_list[j], **kw)
            x = torch.where(known, xk, x) if last else replace(x, j)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return x
