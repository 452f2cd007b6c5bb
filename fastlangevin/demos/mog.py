"""``fastlangevin demo mog``: Langevin dynamics on a 2-D Gaussian mixture with its exact score.

Two lessons, one picture each:

1. *The noise makes it a sampler.* Chains started at the density's local minimum between the
   modes (where the score is ~0) reach different modes: the drift ε·s(x) alone would leave
   them there; the noise √(2ε)·z pushes them off, and the score then carries them downhill.
2. *Annealing recovers the weights.* From a broad start, plain Langevin puts each chain in the
   mode whose basin it started in, so the mode weights come out as the basins' areas, not the
   true 0.6 / 0.3 / 0.1. Annealed Langevin (Song & Ermon 2019) first samples the mixture
   smoothed by a large σ — one broad bump whose mass is split by the weights — and follows it
   down to a small σ, so the chains end up in the modes in the right proportions.
3. *R̂ tells them apart without knowing the answer.* Group the chains by the quadrant of the
   box they started in: four groups with overdispersed starts, as Gelman & Rubin prescribe.
   If the result forgot its start, the groups agree and the rank R̂ over ``[4 groups, m
   chains, 2]`` is ≈ 1; plain Langevin's groups sit in different modes (their chains are stuck
   in their basins), so its R̂ is far above 1.01 and its bulk ESS a small fraction of the
   chains. (The "draws" of a group are its independent chains' final states.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .common import DemoContext, DemoResult, pyplot, ran_summary, save_figure, timed
from .mixture import GaussianMixture2D


@dataclass(frozen=True)
class MogConfig:
    n: int = 20000  #: chains for the plain-vs-annealed comparison
    box: float = 8.0  #: chains start uniform in [-box, box]²
    plain_steps: int = 1000
    plain_step: float = 0.05
    sigma_max: float = 10.0  #: ≥ the modes' spread: at σ_max the smoothed mixture is one bump
    sigma_min: float = 0.1  #: ≪ the modes' std (1): the last level is the mixture itself
    levels: int = 10
    steps_each: int = 100
    #: ε of αᵢ = ε σᵢ²/σ_L². Stability at the top level needs α₁ / (1 + σ₁²) < 2, i.e.
    #: ε < 2 σ_L² = 0.02; 2e-3 keeps ε/σ_L² = 0.2, as in NCSN.
    step_lr: float = 2e-3
    traj_chains: int = 64  #: chains from the local minimum (picture 1)
    traj_steps: int = 150  #: chains are committed to a mode after ~100 steps
    traj_step: float = 0.05

    @classmethod
    def quick(cls) -> "MogConfig":
        return cls(n=2000, plain_steps=300, steps_each=30)


def _tv(w: torch.Tensor, target: torch.Tensor) -> float:
    """Total-variation distance ½ Σ |w_k - w*_k| between two weight vectors."""
    return 0.5 * float((w - target).abs().sum())


def _mode_variance(mix: GaussianMixture2D, x: torch.Tensor) -> torch.Tensor:
    """``[K]``: per-coordinate variance of the points around the mean they are nearest to."""
    k = mix.assign(x)
    out = torch.full((len(mix.weights),), float("nan"))
    for j in range(len(mix.weights)):
        pts = x[k == j]
        if pts.shape[0] > 1:
            out[j] = float(((pts - mix.means[j]) ** 2).mean())
    return out


def by_start_quadrant(x0: torch.Tensor, *finals: torch.Tensor) -> list:
    """Each ``finals[i]`` ``[n, 2]`` as ``[4, m, 2]``: the chains grouped by the quadrant of their
    start ``x0`` ``[n, 2]`` (the first ``m`` of each, ``m`` = the smallest group), in the layout
    ``[chains, draws, *event]`` of :mod:`fastlangevin.diagnostics`."""
    quadrant = (x0[:, 0] >= 0).long() + 2 * (x0[:, 1] >= 0).long()
    members = [torch.nonzero(quadrant == q).squeeze(1) for q in range(4)]
    m = min(len(i) for i in members)
    return [torch.stack([f[i[:m]] for i in members]) for f in finals]


def run(ctx: DemoContext, cfg: MogConfig = MogConfig()) -> DemoResult:
    import fastlangevin as fl

    res = DemoResult("mog")
    dev, g = ctx.device, ctx.generator
    mix = GaussianMixture2D.default(dev)
    target = mix.weights.cpu()
    fmt = lambda w: "[" + ", ".join(f"{v:.3f}" for v in w.tolist()) + "]"  # noqa: E731
    res.say(
        f"target: 3 unit-variance Gaussians 7.8 apart, weights {fmt(target)}; exact score of the σ-smoothed mixture"
    )

    with fl.track_backends() as ran, timed(ctx) as total:
        # --- 1. trajectories from the local minimum --------------------------------------------
        start = mix.local_minimum().to(dev)
        x0 = start.expand(cfg.traj_chains, 2).contiguous()
        trace = fl.Trace(every=1)
        ends = fl.langevin(
            mix.score,
            x0,
            step_size=cfg.traj_step,
            n_steps=cfg.traj_steps,
            generator=g,
            trace=trace,
            progress=ctx.progress,
        )
        reached = torch.bincount(mix.assign(ends), minlength=3).cpu()
        first = [int(torch.nonzero(mix.assign(ends) == k)[0]) for k in range(3) if reached[k] > 0]
        paths = trace.states[:, first].cpu()  # [steps + 1, ≤3, 2]
        res.metrics["modes_reached"] = float((reached > 0).sum())
        res.say(
            f"picture 1: {cfg.traj_chains} chains from the density's local minimum ({start[0]:.2f}, "
            f"{start[1]:.2f}), where "
            f"the score is ~0, reached the modes {reached.tolist()} times: the noise decides"
        )

        # --- 2. plain vs annealed Langevin from a broad start ------------------------------------
        x0 = torch.empty(cfg.n, 2, device=dev).uniform_(-cfg.box, cfg.box, generator=g)
        fl.langevin(
            mix.score, x0[:256], step_size=cfg.plain_step, n_steps=3, generator=g
        )  # warm-up (compiles kernels on a GPU)
        with timed(ctx) as t_plain:
            plain = fl.langevin(
                mix.score, x0, step_size=cfg.plain_step, n_steps=cfg.plain_steps, generator=g, progress=ctx.progress
            )
        sigmas = fl.geometric_sigmas(cfg.sigma_max, cfg.sigma_min, cfg.levels, device=dev)
        with timed(ctx) as t_ann:
            annealed = fl.annealed_langevin(
                mix.score,
                x0,
                sigmas,
                n_steps_each=cfg.steps_each,
                step_lr=cfg.step_lr,
                generator=g,
                progress=ctx.progress,
            )
    w_plain, w_ann = mix.mode_weights(plain).cpu(), mix.mode_weights(annealed).cpu()
    var_ann = _mode_variance(mix.to("cpu"), annealed.cpu())
    m = res.metrics
    m["tv_plain"], m["tv_annealed"] = _tv(w_plain, target), _tv(w_ann, target)
    m["var_annealed_max_err"] = float((var_ann - 1.0).abs().nan_to_num(nan=float("inf")).max())  # an empty mode: inf
    m["chain_steps_per_s"] = cfg.n * cfg.plain_steps / t_plain.seconds
    m["samples_per_s_annealed"] = cfg.n / t_ann.seconds
    res.say(
        f"plain Langevin, {cfg.n} chains from uniform [-{cfg.box:g}, {cfg.box:g}]², {cfg.plain_steps} steps of "
        f"ε={cfg.plain_step:g}:"
    )
    res.say(
        f"    mode weights {fmt(w_plain)}  (TV distance to the target {m['tv_plain']:.3f}: the basins' areas, "
        "not the weights)"
    )
    res.say(
        f"annealed Langevin, σ {cfg.sigma_max:g} → {cfg.sigma_min:g} over {cfg.levels} levels × "
        f"{cfg.steps_each} steps, "
        f"step_lr={cfg.step_lr:g}, final denoising step:"
    )
    res.say(
        f"    mode weights {fmt(w_ann)}  (TV distance {m['tv_annealed']:.3f}); per-mode variance {fmt(var_ann)} "
        "(target 1)"
    )
    plain_g, ann_g = by_start_quadrant(x0, plain, annealed)
    for key, draws in (("plain", plain_g), ("annealed", ann_g)):
        m[f"rhat_{key}"] = float(fl.diagnostics.rhat(draws).max())
        m[f"ess_bulk_{key}"] = float(fl.diagnostics.ess(draws, "bulk").min())
    res.say(
        f"can I trust them? chains grouped by their start's quadrant ({plain_g.shape[0]} groups × {plain_g.shape[1]}), "
        "rank R̂ and bulk ESS, worst coordinate:"
    )
    for key, draws in (("plain", plain_g), ("annealed", ann_g)):
        r = m[f"rhat_{key}"]
        verdict = (
            "≤ 1.01: the start is forgotten"
            if r <= 1.01
            else "> 1.01: the result depends on where the chains started"
            if r > 1.01
            else "undefined: the chains collapsed onto a point, no spread to compare"
        )
        res.say(f"    {key:<8} R̂ {r:.3f}, ESS {m[f'ess_bulk_{key}']:,.0f} of {draws[:, :, 0].numel()}  ({verdict})")
    res.say(
        f"speed on {dev}: plain ULA {m['chain_steps_per_s']:,.0f} chain-steps/s (score + fused step); annealed "
        f"{m['samples_per_s_annealed']:,.0f} samples/s ({cfg.levels * cfg.steps_each} steps each)"
    )
    res.say(f"backends that ran: {ran_summary(ran)}")
    res.seconds = total.seconds

    if ctx.out is not None:
        _plot_trajectories(ctx, res, mix, start.cpu(), paths, reached)
        _plot_annealing(ctx, res, mix, plain.cpu(), annealed.cpu(), w_plain, w_ann, cfg)
    return res


# ---------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------
MODE_COLORS = ("tab:red", "tab:orange", "tab:purple")


def _grid(lim: float, n: int):
    xs = torch.linspace(-lim, lim, n)
    gx, gy = torch.meshgrid(xs, xs, indexing="xy")
    return gx, gy, torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


def _plot_trajectories(ctx, res, mix, start, paths, reached) -> None:
    plt = pyplot()
    mix = mix.to("cpu")
    lim, floor = 7.5, -30.0
    gx, gy, pts = _grid(lim, 121)
    logp = mix.log_prob(pts).clamp_min(floor).reshape(gx.shape)

    fig = plt.figure(figsize=(15, 6.5))
    ax = fig.add_subplot(1, 2, 1, projection="3d", computed_zorder=False)  # lines drawn over the surface
    ax.plot_surface(
        gx.numpy(),
        gy.numpy(),
        logp.numpy(),
        cmap="viridis",
        alpha=0.6,
        linewidth=0,
        antialiased=True,
        rcount=60,
        ccount=60,
    )
    for k, (mu, w) in enumerate(zip(mix.means, mix.weights)):
        ax.text(float(mu[0]), float(mu[1]), 3.0, f"mode {k + 1}\nw = {w:.1f}", color="black", fontsize=9, ha="center")
    for j in range(paths.shape[1]):
        p = paths[:, j]
        k = int(mix.assign(p[-1:])[0])
        z = mix.log_prob(p).clamp_min(floor) + 0.4  # drawn just above the surface
        ax.plot(
            p[:, 0].numpy(),
            p[:, 1].numpy(),
            z.numpy(),
            color=MODE_COLORS[k],
            lw=1.6,
            label=f"chain ending in mode {k + 1}",
        )
        ax.scatter([p[-1, 0]], [p[-1, 1]], [float(z[-1])], color=MODE_COLORS[k], s=30, depthshade=False)
    z0 = float(mix.log_prob(start[None])[0])
    ax.scatter(
        [start[0]],
        [start[1]],
        [z0 + 0.4],
        marker="*",
        s=220,
        color="white",
        edgecolor="black",
        depthshade=False,
        label="common start",
    )
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_zlabel("log p(x)")
    ax.set_zlim(floor, 4)
    ax.view_init(elev=42, azim=-60)
    ax.set_title(
        f"log-density surface (clipped at {floor:g})\nwith three Langevin trajectories from one start", fontsize=11
    )
    ax.legend(loc="upper left", fontsize=8)

    ax = fig.add_subplot(1, 2, 2)
    cs = ax.contourf(gx.numpy(), gy.numpy(), logp.numpy(), levels=np.linspace(floor, 0, 16), cmap="viridis", alpha=0.85)
    fig.colorbar(cs, ax=ax, label="log p(x)", shrink=0.85)
    qx, qy, qpts = _grid(lim, 19)
    s = mix.score(qpts)
    u = s / s.norm(dim=1, keepdim=True).clamp_min(1e-12)
    ax.quiver(
        qx.numpy(),
        qy.numpy(),
        u[:, 0].reshape(qx.shape).numpy(),
        u[:, 1].reshape(qx.shape).numpy(),
        color="white",
        alpha=0.8,
        scale=32,
        width=0.003,
    )
    for j in range(paths.shape[1]):
        p = paths[:, j]
        k = int(mix.assign(p[-1:])[0])
        ax.plot(p[:, 0].numpy(), p[:, 1].numpy(), color=MODE_COLORS[k], lw=1.2)
        ax.plot([p[-1, 0]], [p[-1, 1]], "o", color=MODE_COLORS[k], ms=6, mec="black")
    ax.plot([start[0]], [start[1]], "*", ms=16, color="white", mec="black")
    for k, (mu, w) in enumerate(zip(mix.means, mix.weights)):
        out = 1.55 * mu  # label outside the mode, away from the trajectories
        ax.text(
            float(out[0]),
            float(out[1]),
            f"mode {k + 1}, w = {w:.1f}",
            color="black",
            fontsize=9,
            ha="center",
            va="center",
            bbox=dict(boxstyle="round", fc="white", ec=MODE_COLORS[k], alpha=0.9),
        )
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title(
        f"score field ∇log p (arrows: direction) over log p, same trajectories\n"
        f"{int(reached.sum())} chains from ★ (score ≈ 0), {paths.shape[0] - 1} steps: they reached modes 1/2/3 "
        f"{'/'.join(str(v) for v in reached.tolist())} times",
        fontsize=11,
    )
    fig.suptitle(
        "Langevin dynamics x ← x + ε ∇log p(x) + √(2ε) z: the noise decides which mode a chain reaches", fontsize=13
    )
    save_figure(ctx, res, fig, "mog_trajectories.png")


def _plot_annealing(ctx, res, mix, plain, annealed, w_plain, w_ann, cfg) -> None:
    plt = pyplot()
    mix = mix.to("cpu")
    show = min(4000, plain.shape[0])
    data = mix.sample(show, generator=torch.Generator().manual_seed(ctx.seed))
    fmt = lambda w: " / ".join(f"{v:.2f}" for v in w.tolist())  # noqa: E731
    panels = [
        ("exact samples", data, mix.weights),
        (f"plain Langevin ({cfg.plain_steps} steps)", plain[:show], w_plain),
        (f"annealed Langevin ({cfg.levels}×{cfg.steps_each} steps)", annealed[:show], w_ann),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.9), gridspec_kw={"width_ratios": [1, 1, 1, 1.15]})
    for ax, (title, pts, w) in zip(axes, panels):
        k = mix.assign(pts)
        for j in range(3):
            sel = pts[k == j]
            ax.scatter(sel[:, 0].numpy(), sel[:, 1].numpy(), s=2, alpha=0.4, color=MODE_COLORS[j])
        ax.set_xlim(-cfg.box, cfg.box)
        ax.set_ylim(-cfg.box, cfg.box)
        ax.set_aspect("equal")
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        ax.set_title(f"{title}\nmode weights {fmt(w)}", fontsize=10)
    ax = axes[3]
    width = 0.26
    idx = np.arange(3)
    for off, (label, w, hatch) in zip(
        (-width, 0, width), (("target", mix.weights, ""), ("plain", w_plain, "//"), ("annealed", w_ann, ".."))
    ):
        ax.bar(
            idx + off,
            w.numpy(),
            width,
            label=label,
            color=[MODE_COLORS[j] for j in range(3)],
            alpha=0.9 if label == "target" else 0.55,
            hatch=hatch,
            edgecolor="black",
        )
    ax.set_xticks(idx, [f"mode {j + 1}" for j in range(3)])
    ax.set_ylabel("fraction of samples")
    ax.set_ylim(0, 0.75)
    ax.legend(title="bars, left to right")
    ax.set_title("measured mode weights", fontsize=10)
    fig.suptitle(
        f"plain vs annealed Langevin from uniform [-{cfg.box:g}, {cfg.box:g}]² ({plain.shape[0]} chains, {show} "
        "shown): "
        "only annealing recovers the weights 0.6 / 0.3 / 0.1",
        fontsize=12,
    )
    save_figure(ctx, res, fig, "mog_annealing.png")
