"""``fastlangevin demo ebm``: an energy-based model trained with short-run Langevin chains.

p_θ(x) ∝ exp(-E_θ(x)) with E_θ a small MLP (plus a broad Gaussian base term). Maximum
likelihood's gradient is E_data[∇θ E] - E_model[∇θ E]; the model expectation is estimated from
negative samples: short Langevin chains on the model's own score -∇ₓE
(``fl.score_from_energy``), started from a replay buffer kept on the device and written back to
it (persistent contrastive divergence; Du & Mordatch 2019). A small L2 penalty on the energies
keeps their scale in check. After training, fresh chains from uniform noise sample the model
(``fl.langevin`` with ``fl.score_from_energy``); quality is their MMD² against held-out data,
the model's own density (normalised on a grid) against the held-out histogram and, for the
rings, the mass in radial bands around each ring (:mod:`.radial`) of the model, the samples, a
uniform disc inside the inner ring, the data with that ring replaced by such a blob, and the
initial noise, side by side: a blob in place of the inner ring puts ~60% of that ring's mass in
the hole the data leave empty, which the old number (the mass at r < 1.35) could not see.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .common import DemoContext, DemoResult, pyplot, ran_summary, save_figure, timed
from .datasets import TWO_D, two_d
from .metrics import hist_tv, mmd2
from .nets import EnergyMLP
from .radial import (
    BAND_HALF_WIDTH,
    INNER_CUT,
    RING_RADII,
    band_edges,
    band_tv,
    band_tv_se,
    fill_inner_ring,
    format_bands,
    inner_mass,
    radial_bands,
    uniform_disc,
)
from .replay import ReplayBuffer

BINS = 24  #: histogram cells per axis for the TV distances


@dataclass(frozen=True)
class EbmConfig:
    data: str = "rings"  #: "rings" or "swissroll"
    n_train: int = 20000
    n: int = 2000  #: final samples (and held-out points they are compared with)
    iters: int = 2500
    batch: int = 256
    lr: float = 2e-3
    #: weight of the penalty reg · (f(x⁺)² + f(x⁻)²) on the learned part f of E = f + base: it
    #: caps |f| near 1/(2 reg), so far from the data E keeps the base term's slope back to it
    #: (a penalty on E itself flattened the energy there, and chains from noise stalled)
    reg: float = 0.1
    hidden: int = 128
    base_std: float = 2.0  #: the Gaussian base term's std (the data's radius is ~2)
    box: float = 3.0  #: buffer / noise starts are uniform in [-box, box]²
    buffer: int = 2000
    reinit: float = 0.05  #: fraction of negatives restarted from noise each step
    chain_steps: int = 10  #: Langevin steps per training iteration
    step_size: float = 0.005  #: ε of x ← x - ε ∇E + √(2ε) z (≈ the rings' width² 0.06² ≈ 0.004)
    sample_steps: int = 1000  #: steps of the final chains from noise, at ``step_size`` ...
    #: ... then ``fine_steps`` at a 10× smaller step: ULA's stationary law is wider than the
    #: model's (for a Gaussian of variance v: v / (1 - ε/2v)); with the rings' width² ≈ 0.004
    #: and ε = 0.005 that is ~3× the variance, at ε = 0.0005 +7%.
    fine_steps: int = 300
    fine_step_size: float = 0.0005

    @classmethod
    def quick(cls) -> "EbmConfig":
        return cls(n_train=5000, n=1000, iters=300, sample_steps=300, fine_steps=100)


def run(ctx: DemoContext, cfg: EbmConfig = EbmConfig()) -> DemoResult:
    import fastlangevin as fl

    if cfg.data not in TWO_D:
        raise ValueError(f"data must be one of {', '.join(TWO_D)}, got {cfg.data!r}")
    res = DemoResult("ebm")
    dev, g = ctx.device, ctx.generator
    train = two_d(cfg.data, cfg.n_train, g)
    test, test2 = two_d(cfg.data, cfg.n, g), two_d(cfg.data, cfg.n, g)
    energy = EnergyMLP(hidden=cfg.hidden, base_std=cfg.base_std).to(dev)
    score = fl.score_from_energy(energy)
    opt = torch.optim.Adam(energy.parameters(), lr=cfg.lr, betas=(0.0, 0.999))  # β₁ = 0: the usual EBM choice
    buf = ReplayBuffer(cfg.buffer, (2,), low=-cfg.box, high=cfg.box, generator=g, reinit=cfg.reinit)
    gaps = torch.empty(cfg.iters, device=dev)  # E(x⁻) - E(x⁺): the contrastive gap

    with fl.track_backends() as ran, timed(ctx) as total:
        with timed(ctx) as t_train, ctx.bar(cfg.iters, f"training an EBM on {cfg.data}") as bar:
            for it in range(cfg.iters):
                neg, idx = buf.sample(cfg.batch)
                neg = fl.langevin(score, neg, step_size=cfg.step_size, n_steps=cfg.chain_steps, generator=g)
                buf.push(neg, idx)
                pos = train[torch.randint(0, train.shape[0], (cfg.batch,), device=dev, generator=g)]
                f_pos, f_neg = energy.residual(pos), energy.residual(neg)
                e_pos, e_neg = f_pos + energy.base(pos), f_neg + energy.base(neg)
                loss = e_pos.mean() - e_neg.mean() + cfg.reg * (f_pos.pow(2).mean() + f_neg.pow(2).mean())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                gaps[it] = (e_neg.mean() - e_pos.mean()).detach()
                note = (
                    f"gap E(x-)-E(x+) {float(gaps[it]):.3f}"
                    if ctx.progress and (it % 50 == 49 or it == cfg.iters - 1)
                    else None
                )
                bar.update(1, note)
        with timed(ctx) as t_sample:
            x0 = torch.empty(cfg.n, 2, device=dev).uniform_(-cfg.box, cfg.box, generator=g)
            samples = fl.langevin(
                score, x0, step_size=cfg.step_size, n_steps=cfg.sample_steps, generator=g, progress=ctx.progress
            )
            samples = fl.langevin(
                score, samples, step_size=cfg.fine_step_size, n_steps=cfg.fine_steps, generator=g, progress=ctx.progress
            )
    m = res.metrics
    m["mmd_ref"], m["mmd_samples"], m["mmd_buffer"] = (
        mmd2(test, test2),
        mmd2(samples, test),
        mmd2(buf.states[: cfg.n], test),
    )
    grid, grid_mass = _model_density(energy, cfg.box)
    m["tv_density"] = _density_tv(grid_mass, test, cfg.box)
    bands, radial_sets = None, None
    if cfg.data == "rings":
        # each set is compared with the held-out `test` (key → (points, weights or None)): a second
        # held-out set shows the TV a perfect sampler gets at this n; a uniform disc, the data
        # with the inner ring filled in by a blob (the old inner mass is right), and the initial
        # noise show what a blob and no learning get
        radial_sets = {
            "data": (test2, None),
            "model": (grid, grid_mass),
            "samples": (samples, None),
            "buffer": (buf.states[: cfg.n], None),
            "disc": (uniform_disc(cfg.n, ctx.seed), None),
            "filled": (fill_inner_ring(test2, ctx.seed), None),
            "noise": (x0, None),
        }
        bands = _band_rows(radial_sets, test, ctx.seed)
        for key, row in bands.items():
            m[f"hole_{key}"], m[f"bands_tv_{key}"], m[f"inner_{key}"] = float(row[0][0]), row[1], row[3]
        m["width_data"], m["width_samples"] = _ring_width(test), _ring_width(samples)
    m["tv_ref"], m["tv_samples"] = (
        hist_tv(test, test2, lim=cfg.box, bins=BINS),
        hist_tv(samples, test, lim=cfg.box, bins=BINS),
    )
    m["final_gap"] = float(gaps[-max(1, cfg.iters // 10) :].mean())
    res.say(
        f"data: {cfg.data}, {cfg.n_train} training points; energy: MLP + ‖x‖²/(2·{cfg.base_std:g}²), "
        f"{sum(p.numel() for p in energy.parameters()):,} parameters"
    )
    res.say(
        f"training: {cfg.iters} steps of persistent CD in {t_train.seconds:.1f} s: each {cfg.batch} negatives "
        f"from a {cfg.buffer}-state replay "
        f"buffer on {dev} ({cfg.reinit:.0%} restarted from noise), {cfg.chain_steps} Langevin steps of "
        f"ε={cfg.step_size:g}"
    )
    res.say(
        f"    final contrastive gap E(x⁻) - E(x⁺) = {m['final_gap']:+.3f} (mean of the last 10%; the restarted "
        "negatives keep it > 0)"
    )
    res.say(
        f"sampling: {cfg.n} fresh chains from uniform [-{cfg.box:g}, {cfg.box:g}]², "
        "fl.langevin(fl.score_from_energy(E)): "
        f"{cfg.sample_steps} steps of ε={cfg.step_size:g} then {cfg.fine_steps} of ε={cfg.fine_step_size:g}, in "
        f"{t_sample.seconds:.1f} s"
    )
    res.say(f"quality vs {cfg.n} held-out points (held-out vs held-out in brackets):")
    res.say(
        f"    MMD² fresh samples {m['mmd_samples']:+.5f}, replay buffer {m['mmd_buffer']:+.5f}  [{m['mmd_ref']:+.5f}]"
    )
    res.say(
        f"    the model's own density exp(-E)/Z (Z by quadrature on the grid) vs the held-out histogram, "
        f"{BINS}×{BINS} cells: "
        f"TV {m['tv_density']:.3f}  [{m['tv_ref']:.3f}]"
    )
    if bands is not None:
        for line in _band_lines(bands):
            res.say(line)
        res.say(
            f"    median distance to the nearer ring: data {m['width_data']:.3f}, fresh samples "
            f"{m['width_samples']:.3f}"
        )
    res.say(f"backends that ran: {ran_summary(ran)}")
    res.seconds = total.seconds

    if ctx.out is not None:
        _plot(ctx, res, cfg, energy, test.cpu(), buf.states[: cfg.n].cpu(), samples.cpu(), radial_sets)
    return res


#: the rows of the radial-band table: metric key → label
BAND_ROWS = {
    "data": "held-out data",
    "model": "model density exp(-E)/Z",
    "samples": "fresh samples",
    "buffer": "replay buffer",
    "disc": f"uniform disc r < {RING_RADII[0]:g} (a blob)",
    "filled": "data, inner ring -> a blob",
    "noise": "initial noise (uniform box)",
}
BAND_NOTES = {
    "data": "  (a second held-out set: the floor)",
    "model": "  (exact masses: SE of the held-out side)",
}


def _band_rows(sets, test: torch.Tensor, seed: int):
    """key → (band masses [5], TV to the held-out ``test``, its bootstrap SE, old inner mass) for
    each of ``sets`` (key → (points [N, 2], per-point weights or None))."""
    ref = radial_bands(test)
    rows = {}
    for key, (x, wt) in sets.items():
        p = radial_bands(x, wt)
        rows[key] = (p, band_tv(p, ref), band_tv_se(x, test, x_weights=wt, seed=seed), inner_mass(x, wt))
    return rows


def _band_lines(rows):
    r1, r2 = RING_RADII
    lo, _, _, hi = (float(e) for e in band_edges())
    width = max(len(label) for label in BAND_ROWS.values())
    lines = [
        f"    mass by radius in bands ±{BAND_HALF_WIDTH:g} around the rings ({r1:g}, {r2:g}), TV to held-out ± "
        f"bootstrap SE; the old number, mass at r < {INNER_CUT:g}, last:",
        f"        {'':<{width}}  {'hole':<6}{'inner':<6}{'gap':<6}{'outer':<6}{'out':<8}{'band TV':<16}r<{INNER_CUT:g}",
        f"        {'':<{width}}  {'<%.2f' % lo:<24}{'>%.2f' % hi}",
    ]
    for key, (p, tv, se, inner) in rows.items():
        lines.append(
            f"        {BAND_ROWS[key]:<{width}}  {format_bands(p)}   {tv:.3f} ± {se:.3f}   {inner:.3f}"
            f"{BAND_NOTES.get(key, '')}"
        )
    return lines


def _ring_width(x: torch.Tensor) -> float:
    """Median distance from a point to the nearer of the two rings: the data's noise gives
    0.674 × 0.06 ≈ 0.04; chains without noise would collapse onto the rings (→ 0). The median
    ignores the few chains still far out."""
    r = x.double().norm(dim=1)
    return float(torch.minimum((r - RING_RADII[0]).abs(), (r - RING_RADII[1]).abs()).median())


SUB = 8  #: fine-grid cells per histogram cell and axis, for the model's normaliser


def _model_density(energy, lim: float):
    """The model's own density on [-lim, lim]²: exp(-E) normalised by quadrature on a grid of
    (BINS·SUB)² cells (2-D makes the partition function computable; mass outside the box is
    left out). Returns ``(cell centres [(BINS·SUB)², 2] float64, cell masses [(BINS·SUB)²],
    summing to 1)``, rows in x-major order."""
    n = BINS * SUB
    c = (torch.arange(n, dtype=torch.float64) + 0.5) / n * 2 * lim - lim
    gx, gy = torch.meshgrid(c, c, indexing="ij")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    dev = next(energy.parameters()).device
    with torch.no_grad():
        e = energy(pts.to(dev, torch.float32)).double().cpu().reshape(-1)
    return pts, torch.softmax(-e, 0)


def _density_tv(grid_mass: torch.Tensor, test: torch.Tensor, lim: float) -> float:
    """TV distance between the model density of :func:`_model_density`, summed into ``BINS``²
    cells, and the held-out data's histogram on the same cells. It scores the energy itself,
    whatever a sampler makes of it."""
    w = grid_mass.reshape(BINS, SUB, BINS, SUB).sum(dim=(1, 3))  # [BINS, BINS], sums to 1
    t = test.double().cpu()
    idx = ((t + lim) / (2 * lim) * BINS).floor().long()
    ok = ((idx >= 0) & (idx < BINS)).all(dim=1)
    h = torch.bincount(idx[ok, 0] * BINS + idx[ok, 1], minlength=BINS * BINS).double().reshape(BINS, BINS) / t.shape[0]
    return float(0.5 * (w - h).abs().sum())


def _plot(ctx, res, cfg, energy, test, buffer, samples, radial_sets) -> None:
    """Energy landscape, held-out data, buffer, fresh samples and (rings: ``radial_sets`` not
    None) the radial profiles behind the band table."""
    plt = pyplot()
    m, lim = res.metrics, cfg.box
    n_maps = 4
    extra = int(radial_sets is not None)
    fig, axes = plt.subplots(1, n_maps + extra, figsize=(21 + 5 * extra, 5.2), layout="constrained")
    xs = torch.linspace(-lim, lim, 161)
    gx, gy = torch.meshgrid(xs, xs, indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    dev = next(energy.parameters()).device
    with torch.no_grad():
        e = energy(pts.to(dev)).cpu().reshape(gx.shape)
    logp = -(e - e.min())  # log p up to its normaliser, 0 at the lowest energy
    ax = axes[0]
    im = ax.imshow(
        logp.numpy(),
        origin="lower",
        extent=(-lim, lim, -lim, lim),
        cmap="viridis",
        vmin=max(float(logp.min()), -12),
        vmax=0,
    )
    fig.colorbar(im, ax=ax, label="-E(x) + min E  (log density + const)", shrink=0.85)
    ax.set_title(
        f"learned energy landscape\nmodel density vs held-out histogram: TV {m['tv_density']:.3f} [{m['tv_ref']:.3f}]",
        fontsize=10,
    )
    panels = [
        (buffer, f"replay buffer after training\nMMD² vs held-out {m['mmd_buffer']:+.4f}", "tab:orange"),
        (
            samples,
            f"fresh chains from noise, {cfg.sample_steps} + {cfg.fine_steps} steps\nMMD² vs held-out "
            f"{m['mmd_samples']:+.4f}",
            "tab:red",
        ),
    ]
    axes[1].scatter(test[:, 0].numpy(), test[:, 1].numpy(), s=2, alpha=0.5, color="tab:blue")
    axes[1].set_title(f"held-out data\nMMD² vs another held-out set {m['mmd_ref']:+.4f}", fontsize=10)
    for ax, (pts_, title, color) in zip(axes[2:], panels):
        ax.scatter(pts_[:, 0].numpy(), pts_[:, 1].numpy(), s=2, alpha=0.5, color=color)
        ax.set_title(title, fontsize=10)
    for ax in axes[:n_maps]:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
    if radial_sets is not None:
        _plot_radial_profiles(axes[n_maps], m, test, radial_sets, lim)
    fig.suptitle(
        f"{cfg.data}: energy-based model trained by persistent contrastive divergence ({cfg.iters} steps), "
        "sampled with fl.score_from_energy",
        fontsize=12,
    )
    save_figure(ctx, res, fig, "ebm.png")


def _plot_radial_profiles(ax, m, test, sets, lim: float) -> None:
    """Histograms of ‖x‖ (per unit radius) with the band edges: the rings are two narrow peaks
    and an empty hole; a blob fills the hole."""
    edges = torch.linspace(0, lim * 2**0.5, 86)
    curves = [
        (test, "held-out data", "tab:blue", "data"),
        (sets["samples"][0], "fresh samples", "tab:red", "samples"),
        (sets["filled"][0], "data, inner ring -> a blob", "tab:purple", "filled"),
        (sets["disc"][0], "uniform disc (a blob)", "tab:gray", "disc"),
        (sets["noise"][0], "initial noise", "tab:green", "noise"),
    ]
    for pts, label, color, key in curves:
        r = pts.double().cpu().norm(dim=1)
        tv = "" if key == "data" else f", band TV {m[f'bands_tv_{key}']:.3f}"
        ax.hist(r.numpy(), bins=edges.numpy(), density=True, histtype="step", color=color, label=f"{label}{tv}")
    for e in band_edges():
        ax.axvline(float(e), color="black", lw=0.6, ls=":")
    ax.set_xlabel("radius ‖x‖  (dotted: band edges, rings ± {:g})".format(BAND_HALF_WIDTH))
    ax.set_ylabel("density of the radius")
    ax.set_title(
        f"radial profiles; band TV to held-out: samples {m['bands_tv_samples']:.3f}, "
        f"model {m['bands_tv_model']:.3f}\n[a second held-out set {m['bands_tv_data']:.3f}]",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper left")
