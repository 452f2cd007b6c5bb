"""``fastlangevin demo digits``: a noise-conditional score network on real images, on a CPU.

scikit-learn's 1,797 handwritten digits (8×8, no download) are split into training and
held-out images. A small convolutional score network s_θ(x, σ) is trained with
``fl.dsm_loss`` over a geometric ladder of noise levels and sampled from noise with annealed
Langevin dynamics (NCSN, with the final denoising step of NCSNv2).

Quality numbers, all in pixel space against the training images:

* k-NN precision / recall (k = 3; Kynkäänniemi et al. 2019): the fraction of samples that fall
  inside the data's k-NN balls (realism), and of held-out digits inside the samples' balls
  (variety). Held-out real digits score the reference values.
* NN ratio: median distance from a sample to its nearest training image, divided by the same
  for held-out digits. ≈ 1: as close to the data as unseen real digits; ≫ 1: off the data
  manifold (noise, blur); ≪ 1: copies of training images.
* class coverage: exp(entropy) of the labels of the samples' nearest training images (10 = all
  ten digits equally often).
* test bits/dim: ``fl.log_likelihood`` of held-out digits under the VE SDE whose noise range is the
  ladder (the net is its score), Hutchinson trace, rk45. Pixels take 17 levels 0…16 (spacing 1/8 in
  [-1, 1]); they are dequantised uniformly within their bin, x + (u − ½)/8, so
  bits/dim = −log p/(64 ln 2) + log2 8 (score_sde's convention with bins of width 1/8:
  ``fl.bits_per_dim(logp, x, data_range=(-17/16, 17/16), n_levels=17)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .common import DemoContext, DemoResult, pyplot, ran_summary, save_figure, timed
from .datasets import load_digits
from .metrics import class_coverage, nearest, precision_recall
from .nets import ConvScoreNet
from .training import train_dsm


@dataclass(frozen=True)
class DigitsConfig:
    n: int = 500  #: samples drawn
    iters: int = 4000
    batch: int = 128
    lr: float = 2e-3
    ema: float = 0.999
    channels: int = 48
    blocks: int = 2
    sigma_max: float = 10.0  #: ≈ the largest distance between two training digits (9.5; NCSNv2's rule)
    sigma_min: float = 0.02
    levels: int = 20
    steps_each: int = 20
    #: ε of αᵢ = ε σᵢ²/σ_L²; ε/σ_L² = 0.25 (2e-5 left visible noise after 20 steps a level)
    step_lr: float = 1e-4
    ll_n: int = 200  #: held-out digits whose likelihood is computed
    ll_rtol: float = 1e-4  #: rk45 tolerance of the likelihood ODE

    @classmethod
    def quick(cls) -> "DigitsConfig":
        return cls(
            n=200, iters=250, batch=64, lr=3e-3, ema=0.95, channels=32, levels=10, steps_each=10, ll_n=24, ll_rtol=1e-3
        )


def run(ctx: DemoContext, cfg: DigitsConfig = DigitsConfig()) -> DemoResult:
    import fastlangevin as fl

    res = DemoResult("digits")
    dev, g = ctx.device, ctx.generator
    x_train, y_train, x_test, _ = load_digits(g)
    net = ConvScoreNet(ch=cfg.channels, blocks=cfg.blocks, data_var=float(x_train.var())).to(dev)
    sigmas = fl.geometric_sigmas(cfg.sigma_max, cfg.sigma_min, cfg.levels, device=dev)

    with fl.track_backends() as ran, timed(ctx) as total:
        with timed(ctx) as t_train:
            losses, model = train_dsm(
                ctx,
                net,
                x_train,
                sigmas,
                iters=cfg.iters,
                batch=cfg.batch,
                lr=cfg.lr,
                ema=cfg.ema,
                desc="training on digits",
            )
        with torch.no_grad(), timed(ctx) as t_sample:
            x0 = torch.empty(cfg.n, 1, 8, 8, device=dev).uniform_(-1, 1, generator=g)
            samples = fl.annealed_langevin(
                model, x0, sigmas, n_steps_each=cfg.steps_each, step_lr=cfg.step_lr, generator=g, progress=ctx.progress
            )
        with timed(ctx) as t_ll:
            sde = fl.VESDE(sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max)
            held = x_test[: cfg.ll_n]
            deq = held + (torch.rand(held.shape, generator=g, device=dev) - 0.5) / 8.0
            ll = fl.log_likelihood(
                lambda x, t: model(x, sde.marginal_std(t)), sde, deq, rtol=cfg.ll_rtol, atol=cfg.ll_rtol, generator=g
            )
            bpd = fl.bits_per_dim(ll.logp, deq, data_range=(-17 / 16, 17 / 16), n_levels=17)
    samples = samples.clamp(-1, 1)  # pixel range, for display and metrics (the final denoised values barely leave it)
    losses, m = losses.cpu(), res.metrics
    tail = max(1, cfg.iters // 10)
    m["final_loss"] = float(losses[-tail:].mean())
    m["precision"], m["recall"] = precision_recall(x_train, samples)
    m["precision_ref"], m["recall_ref"] = precision_recall(x_train, x_test)
    d_s, nn_idx = nearest(samples, x_train)
    d_t, _ = nearest(x_test, x_train)
    m["nn_ratio"] = float(d_s.median() / d_t.median())
    m["coverage"] = class_coverage(y_train[nn_idx])
    m["bpd_test"] = float(bpd.mean())
    m["bpd_test_se"] = float(bpd.std()) / max(1, bpd.numel() - 1) ** 0.5
    m["ll_nfe"] = ll.nfe
    n_params = sum(p.numel() for p in net.parameters())
    res.say(
        f"data: scikit-learn digits, {x_train.shape[0]} training / {x_test.shape[0]} held-out 8×8 images in [-1, 1]"
    )
    res.say(
        f"score net: conv, {cfg.channels} channels × {cfg.blocks} residual blocks, {n_params:,} parameters; EMA "
        f"{cfg.ema:g}"
    )
    res.say(
        f"training: {cfg.iters} steps of fl.dsm_loss (batch {cfg.batch}, σ {cfg.sigma_max:g} → "
        f"{cfg.sigma_min:g}, {cfg.levels} levels) "
        f"in {t_train.seconds:.1f} s; final loss {m['final_loss']:.3f} (mean of the last {tail}; starts ≈ "
        f"{float(losses[:10].mean()):.1f})"
    )
    res.say(
        f"sampling: {cfg.n} digits by annealed Langevin, {cfg.levels}×{cfg.steps_each} steps + denoising, in "
        f"{t_sample.seconds:.1f} s"
    )
    res.say("quality (pixel space, vs the training images; held-out real digits in brackets):")
    res.say(
        f"    k-NN precision {m['precision']:.3f} [{m['precision_ref']:.3f}]   recall {m['recall']:.3f} "
        f"[{m['recall_ref']:.3f}]"
    )
    res.say(
        f"    NN ratio {m['nn_ratio']:.2f} [1 by definition; ≫1 off the data, ≪1 copies]   class coverage "
        f"{m['coverage']:.2f} of 10"
    )
    res.say(
        f"    test bits/dim {m['bpd_test']:.3f} ± {m['bpd_test_se']:.3f} ({held.shape[0]} held-out digits, "
        f"dequantised; Hutchinson, rk45 rtol {cfg.ll_rtol:g}: {ll.nfe} NFE, {t_ll.seconds:.1f} s; "
        "uniform pixels: log2 17 = 4.09)"
    )
    res.say(f"backends that ran: {ran_summary(ran)}")
    res.seconds = total.seconds

    if ctx.out is not None:
        _plot(ctx, res, cfg, x_test.cpu(), samples.cpu(), x_train[nn_idx].cpu(), losses)
    return res


def _tile(imgs: torch.Tensor, rows: int, cols: int, gap: int = 1) -> torch.Tensor:
    """``[N, 1, 8, 8]`` → one ``[rows·9-1, cols·9-1]`` image with white (-1) gaps."""
    h = w = imgs.shape[-1]
    out = torch.full((rows * (h + gap) - gap, cols * (w + gap) - gap), -1.0)
    for k in range(min(rows * cols, imgs.shape[0])):
        r, c = divmod(k, cols)
        out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = imgs[k, 0]
    return out


def _plot(ctx, res, cfg, real, samples, nearest_train, losses) -> None:
    plt = pyplot()
    m = res.metrics
    rows = cols = 8
    fig, axes = plt.subplots(
        1, 4, figsize=(20, 5.4), layout="constrained", gridspec_kw={"width_ratios": [1, 1, 1, 1.1]}
    )
    panels = [
        (real, "held-out real digits"),
        (
            samples,
            f"samples (annealed Langevin)\nprecision {m['precision']:.2f}, recall {m['recall']:.2f}, NN ratio "
            f"{m['nn_ratio']:.2f}",
        ),
        (nearest_train, "nearest training image of each sample\n(a copied sample would look identical)"),
    ]
    for ax, (imgs, title) in zip(axes, panels):
        ax.imshow(_tile(imgs, rows, cols).numpy(), cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = axes[3]
    w = max(1, len(losses) // 50)
    ax.plot(losses.numpy(), color="0.8", lw=0.5, label="per step")
    if len(losses) >= w:
        ax.plot(
            range(w - 1, len(losses)),
            losses.unfold(0, w, 1).mean(1).numpy(),
            color="tab:blue",
            lw=1.5,
            label=f"moving mean ({w} steps)",
        )
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("DSM loss (λ(σ) = σ², summed over 64 pixels)")
    ax.set_title("training loss", fontsize=10)
    ax.legend()
    fig.suptitle(
        f"8×8 digits: a conv score network trained {cfg.iters} steps with fl.dsm_loss, sampled by annealed Langevin",
        fontsize=12,
    )
    save_figure(ctx, res, fig, "digits_samples.png")
