"""Training a noise-conditional score network with ``fastlangevin.dsm_loss`` (toy and digits)."""

from __future__ import annotations

import copy
from typing import Optional, Tuple

import torch

from .common import DemoContext


def train_dsm(
    ctx: DemoContext,
    net: torch.nn.Module,
    data: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    iters: int,
    batch: int,
    lr: float,
    desc: str,
    ema: Optional[float] = None,
) -> Tuple[torch.Tensor, torch.nn.Module]:
    """NCSN training: each step draws a batch, one noise level per sample uniformly from
    ``sigmas`` (``fl.sample_noise_levels``) and minimises ``fl.dsm_loss`` (λ(σ) = σ², the
    default) with Adam and a cosine learning-rate decay. All draws come from ``ctx.generator``.

    ``ema``: decay of an exponential moving average of the weights (NCSNv2 samples with it).

    Returns ``(losses [iters], model)``: the per-step losses (kept on the device, read once at
    the end) and the network to sample with (the EMA copy when ``ema`` is given, else ``net``).
    """
    import fastlangevin as fl

    g = ctx.generator
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters)
    losses = torch.empty(iters, device=data.device)
    avg = copy.deepcopy(net).requires_grad_(False) if ema is not None else None
    params, avg_params = list(net.parameters()), (list(avg.parameters()) if avg is not None else None)
    net.train()
    with ctx.bar(iters, desc) as bar:
        for it in range(iters):
            idx = torch.randint(0, data.shape[0], (batch,), device=data.device, generator=g)
            _, sigma = fl.sample_noise_levels(sigmas, batch, generator=g)
            loss = fl.dsm_loss(net, data[idx], sigma, generator=g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if avg is not None:
                with torch.no_grad():
                    for a, p in zip(avg_params, params):
                        a.lerp_(p, 1.0 - ema)
            losses[it] = loss.detach()
            note = None
            if ctx.progress and (it % 100 == 99 or it == iters - 1):  # an occasional sync for the display only
                note = f"loss {float(losses[max(0, it - 99) : it + 1].mean()):.4f}"
            bar.update(1, note)
    net.eval()
    if avg is not None:
        avg.eval()
        return losses, avg
    return losses, net
