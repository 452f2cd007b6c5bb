"""``fastlangevin demo toy``: learn the score of a 2-D data set with ``dsm_loss``, then sample it.

A small noise-conditional MLP s_θ(x, σ) is trained with denoising score matching over a
geometric ladder of noise levels (NCSN), then sampled twice from noise: with annealed
Langevin dynamics (``fl.annealed_langevin``) and with the predictor–corrector sampler of the
VE SDE whose noise range matches the ladder (``fl.pc_sample``). Quality: MMD² of each sample
set against held-out data, beside the MMD² between two held-out sets (what a perfect sampler
gets, up to noise). A third sample set comes from the probability-flow ODE (``fl.ode_sample``, rk45),
and ``fl.log_likelihood`` gives the held-out bits/dim of the trained model (a continuous density:
−log p / (2 ln 2), no dequantisation) beside a shuffled-data baseline — the same test points with each
coordinate permuted independently (same marginals, no structure), which a model that learned the
structure must find less likely.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .common import DemoContext, DemoResult, pyplot, ran_summary, save_figure, timed
from .datasets import TWO_D, two_d
from .metrics import hist_tv, mmd2
from .nets import NoiseConditionalMLP
from .training import train_dsm


@dataclass(frozen=True)
class ToyConfig:
    data: str = "swissroll"  #: "swissroll" or "rings"
    n_train: int = 20000
    n: int = 2000  #: samples drawn by each sampler (and held-out points they are compared with)
    iters: int = 6000
    batch: int = 256
    lr: float = 2e-3
    hidden: int = 128
    sigma_max: float = 4.0  #: ≈ the data's diameter (NCSNv2's rule: σ₁ ~ the largest pairwise distance)
    sigma_min: float = 0.03  #: below the data's own noise (0.05-0.06)
    levels: int = 12
    steps_each: int = 50
    #: ε of αᵢ = ε σᵢ²/σ_L²: ε/σ_L² = 0.1, NCSN's regime (its toy: ε = 0.1 with σ_L = 1).
    step_lr: float = 9e-5
    pc_steps: int = 300
    snr: float = 0.16
    ode_rtol: float = 1e-4  #: rk45 tolerance of the ODE samples and the likelihood
    n_ll: int = 1000  #: held-out points whose likelihood is computed (and as many shuffled ones)

    @classmethod
    def quick(cls) -> "ToyConfig":
        return cls(n_train=5000, n=1000, iters=800, batch=512, lr=3e-3, steps_each=25, pc_steps=120, n_ll=300)


def run(ctx: DemoContext, cfg: ToyConfig = ToyConfig()) -> DemoResult:
    import fastlangevin as fl

    if cfg.data not in TWO_D:
        raise ValueError(f"data must be one of {', '.join(TWO_D)}, got {cfg.data!r}")
    res = DemoResult("toy")
    dev, g = ctx.device, ctx.generator
    train = two_d(cfg.data, cfg.n_train, g)
    test, test2 = two_d(cfg.data, cfg.n, g), two_d(cfg.data, cfg.n, g)
    net = NoiseConditionalMLP(hidden=cfg.hidden, data_var=float(train.var(0).mean())).to(dev)
    sigmas = fl.geometric_sigmas(cfg.sigma_max, cfg.sigma_min, cfg.levels, device=dev)
    sde = fl.VESDE(sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max)

    def score_t(x, t):  # the PC sampler asks for s(x, t); the VE SDE's σ(t) is our net's level
        return net(x, sde.marginal_std(t))

    with fl.track_backends() as ran, timed(ctx) as total:
        with timed(ctx) as t_train:
            losses, _ = train_dsm(
                ctx, net, train, sigmas, iters=cfg.iters, batch=cfg.batch, lr=cfg.lr, desc=f"training on {cfg.data}"
            )
        with torch.no_grad(), timed(ctx) as t_ald:
            x0 = torch.empty(cfg.n, 2, device=dev).uniform_(-cfg.sigma_max, cfg.sigma_max, generator=g)
            ald = fl.annealed_langevin(
                net, x0, sigmas, n_steps_each=cfg.steps_each, step_lr=cfg.step_lr, generator=g, progress=ctx.progress
            )
        with torch.no_grad(), timed(ctx) as t_pc:
            pc = fl.pc_sample(
                score_t,
                sde,
                shape=(cfg.n, 2),
                n_steps=cfg.pc_steps,
                snr=cfg.snr,
                device=dev,
                generator=g,
                progress=ctx.progress,
            )
        with torch.no_grad(), timed(ctx) as t_ode:
            ode, ode_nfe = fl.ode_sample(
                score_t,
                sde,
                shape=(cfg.n, 2),
                device=dev,
                generator=g,
                rtol=cfg.ode_rtol,
                atol=cfg.ode_rtol,
                return_nfe=True,
            )
        with timed(ctx) as t_ll:
            held = test[: cfg.n_ll].to(dev)
            perm = torch.stack([torch.randperm(held.shape[0], generator=g, device=dev) for _ in range(2)], 1)
            shuffled = torch.gather(held, 0, perm)
            ll_kw = dict(rtol=cfg.ode_rtol, atol=cfg.ode_rtol, trace="exact")
            ll_test = fl.log_likelihood(score_t, sde, held, **ll_kw)
            ll_shuf = fl.log_likelihood(score_t, sde, shuffled, **ll_kw)
    losses = losses.cpu()
    tail = max(1, cfg.iters // 10)
    m = res.metrics
    m["final_loss"] = float(losses[-tail:].mean())
    m["mmd_ref"] = mmd2(test, test2)
    m["mmd_annealed"], m["mmd_pc"] = mmd2(ald, test), mmd2(pc, test)
    m["tv_ref"], m["tv_annealed"], m["tv_pc"] = hist_tv(test, test2), hist_tv(ald, test), hist_tv(pc, test)
    m["mmd_ode"], m["tv_ode"], m["ode_nfe"] = mmd2(ode, test), hist_tv(ode, test), ode_nfe
    bits = 2 * math.log(2)  # nats per bit × dims
    m["bpd_test"] = float(-ll_test.logp.mean()) / bits
    m["bpd_shuffled"] = float(-ll_shuf.logp.mean()) / bits
    m["bpd_test_se"] = float(ll_test.logp.std()) / bits / math.sqrt(held.shape[0])
    m["ll_nfe"] = ll_test.nfe
    res.say(
        f"data: {cfg.data}, {cfg.n_train} training points; score net: FiLM-MLP, "
        f"{sum(p.numel() for p in net.parameters()):,} parameters"
    )
    res.say(
        f"training: {cfg.iters} steps of fl.dsm_loss (batch {cfg.batch}, σ {cfg.sigma_max:g} → "
        f"{cfg.sigma_min:g}, {cfg.levels} levels) "
        f"in {t_train.seconds:.1f} s; final loss {m['final_loss']:.4f} (mean of the last {tail} steps; starts ≈ "
        f"{float(losses[:10].mean()):.3f})"
    )
    res.say(f"quality vs {cfg.n} held-out points (MMD², RBF kernels; 2-D histogram TV distance, 24×24 cells):")
    res.say(f"    held-out vs held-out (the floor) MMD² {m['mmd_ref']:+.5f}   TV {m['tv_ref']:.3f}")
    res.say(
        f"    annealed Langevin ({cfg.levels}×{cfg.steps_each} steps, {t_ald.seconds:.1f} s)   MMD² "
        f"{m['mmd_annealed']:+.5f}   TV {m['tv_annealed']:.3f}"
    )
    res.say(
        f"    PC sampler (VE SDE, {cfg.pc_steps} steps, snr {cfg.snr:g}, {t_pc.seconds:.1f} s)    MMD² "
        f"{m['mmd_pc']:+.5f}   TV {m['tv_pc']:.3f}"
    )
    res.say(
        f"    PF-ODE (rk45, rtol {cfg.ode_rtol:g}, {ode_nfe} score evaluations, {t_ode.seconds:.1f} s)   "
        f"MMD² {m['mmd_ode']:+.5f}   TV {m['tv_ode']:.3f}"
    )
    res.say(
        f"held-out bits/dim (density, exact trace, rk45 {m['ll_nfe']} NFE; {held.shape[0]} points, "
        f"{t_ll.seconds:.1f} s): test {m['bpd_test']:.3f} ± {m['bpd_test_se']:.3f}   "
        f"shuffled-coordinates baseline {m['bpd_shuffled']:.3f}"
    )
    res.say(f"backends that ran: {ran_summary(ran)}")
    res.seconds = total.seconds

    if ctx.out is not None:
        _plot_samples(ctx, res, cfg, test.cpu(), ald.cpu(), pc.cpu(), ode.cpu())
        _plot_score(ctx, res, cfg, net, sigmas, train[:3000].cpu(), losses)
    return res


def _scatter(ax, pts, title, lim, color):
    ax.scatter(pts[:, 0].numpy(), pts[:, 1].numpy(), s=2, alpha=0.5, color=color)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title(title, fontsize=10)


def _plot_samples(ctx, res, cfg, test, ald, pc, ode) -> None:
    plt = pyplot()
    m, lim = res.metrics, 3.2
    fig, axes = plt.subplots(1, 4, figsize=(20, 5.4), layout="constrained")
    _scatter(
        axes[0],
        test,
        f"held-out data ({test.shape[0]} points)\nMMD² vs another held-out set {m['mmd_ref']:+.4f}",
        lim,
        "tab:blue",
    )
    _scatter(
        axes[1],
        ald,
        f"annealed Langevin, {cfg.levels} levels × {cfg.steps_each} steps\nMMD² vs held-out {m['mmd_annealed']:+.4f}",
        lim,
        "tab:green",
    )
    _scatter(
        axes[2], pc, f"PC sampler (VE SDE), {cfg.pc_steps} steps\nMMD² vs held-out {m['mmd_pc']:+.4f}", lim, "tab:red"
    )
    _scatter(
        axes[3],
        ode,
        f"probability-flow ODE (rk45), {m['ode_nfe']} NFE\nMMD² vs held-out {m['mmd_ode']:+.4f}",
        lim,
        "tab:purple",
    )
    fig.suptitle(
        f"{cfg.data}: data vs samples from a score network trained with fl.dsm_loss ({cfg.iters} steps)", fontsize=12
    )
    save_figure(ctx, res, fig, "toy_samples.png")


def _plot_score(ctx, res, cfg, net, sigmas, data, losses) -> None:
    plt = pyplot()
    lim = 3.2
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.4), layout="constrained")
    ax = axes[0]
    w = max(1, len(losses) // 50)
    smooth = losses.unfold(0, w, 1).mean(1) if len(losses) >= w else losses
    ax.plot(losses.numpy(), color="0.8", lw=0.5, label="per step")
    ax.plot(
        range(w - 1, w - 1 + len(smooth)), smooth.numpy(), color="tab:blue", lw=1.5, label=f"moving mean ({w} steps)"
    )
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("DSM loss (λ(σ) = σ²)")
    ax.set_title("training loss", fontsize=10)
    ax.legend()
    xs = torch.linspace(-lim, lim, 21)
    gx, gy = torch.meshgrid(xs, xs, indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    levels = sigmas.cpu().tolist()
    for ax, sig in zip(axes[1:], (levels[len(levels) // 3], levels[-3])):
        with torch.no_grad():
            s = net(pts.to(next(net.parameters()).device), sig).cpu()
        ax.scatter(data[:, 0].numpy(), data[:, 1].numpy(), s=1, alpha=0.3, color="tab:blue", label="data")
        norm = s.norm(dim=1, keepdim=True).clamp_min(1e-12)
        q = ax.quiver(
            gx.numpy(),
            gy.numpy(),
            (s / norm)[:, 0].reshape(gx.shape).numpy(),
            (s / norm)[:, 1].reshape(gx.shape).numpy(),
            norm.squeeze(1).reshape(gx.shape).log10().numpy(),
            cmap="magma",
            scale=30,
            width=0.004,
        )
        fig.colorbar(q, ax=ax, label="log₁₀ ‖s_θ(x, σ)‖", shrink=0.8)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        ax.set_title(f"learned score s_θ(x, σ = {sig:.3g})\narrows: direction, colour: log₁₀ of the norm", fontsize=10)
        ax.legend(loc="upper left", markerscale=6, fontsize=8)
    fig.suptitle(
        f"{cfg.data}: DSM training and the learned score field at a large and a small noise level", fontsize=12
    )
    save_figure(ctx, res, fig, "toy_score.png")
