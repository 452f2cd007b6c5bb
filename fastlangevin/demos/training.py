"""Training a noise-conditional score network with ``fastlangevin.dsm_loss`` (toy and digits)."""

from __future__ import annotations

import torch

from .common import DemoContext


def train_dsm(ctx: DemoContext, net: torch.nn.Module, data: torch.Tensor, sigmas: torch.Tensor, *, iters: int, batch: int, lr: float, desc: str) -> torch.Tensor:
    """NCSN training: each step draws a batch, one noise level per sample uniformly from
    ``sigmas`` (``fl.sample_noise_levels``) and minimises ``fl.dsm_loss`` (λ(σ) = σ², the
    default) with Adam and a cosine learning-rate decay. All draws come from ``ctx.generator``.

    Returns the per-step losses ``[iters]`` (kept on the device; read once at the end).
    """
    import fastlangevin as fl

    g = ctx.generator
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters)
    losses = torch.empty(iters, device=data.device)
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
            losses[it] = loss.detach()
            note = None
            if ctx.progress and (it % 100 == 99 or it == iters - 1):  # an occasional sync for the display only
                note = f"loss {float(losses[max(0, it - 99): it + 1].mean()):.4f}"
            bar.update(1, note)
    net.eval()
    return losses
