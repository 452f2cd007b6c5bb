"""``fastlangevin demo bayes``: a Bayesian MLP on 1-D regression with a gap, sampled by pSGLD.

    y = sin(2x) / 2 + x / 4 + ε,  ε ~ N(0, σ²),  x ∈ [−3, −1] ∪ [1, 3]   (no data in (−1, 1))

Posterior p(θ | data) ∝ Π_n N(y_n | f_θ(x_n), σ²) · N(θ | 0, I/λ) over the weights θ of a
1 → 64 → 64 → 1 tanh MLP. A point estimate (MAP, Adam with the same prior) is the baseline;
:class:`fastlangevin.optim.pSGLD` with ``num_data = N`` (minibatch mean NLL scaled by N) and
cSGLD's :class:`~fastlangevin.optim.CyclicalLR` draws posterior samples, starting from the MAP,
one every ``thin`` steps in each cycle's sampling stage. The posterior predictive is the
mixture of N(f_θs(x), σ²): its mean and a ±2 sd band, which widens in the gap and beyond the
data while the point estimate's band (±2σ) does not. Held-out log-likelihood (per point, on test
points over the whole range [−4, 4], gap included) of both: log mean_s N(y | f_θs(x), σ²) vs
log N(y | f_MAP(x), σ²).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .common import DemoContext, DemoResult, pyplot, ran_summary, save_figure, timed

SIGMA = 0.1


def target(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.sin(2 * x) + 0.25 * x


def gap_data(n: int, g: torch.Generator, lo: float = 1.0, hi: float = 3.0):
    """``n`` points with |x| uniform in [lo, hi], random sign; y with noise σ."""
    mag = lo + (hi - lo) * torch.rand(n, generator=g)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    x = (mag * sign)[:, None]
    return x, target(x) + SIGMA * torch.randn(n, 1, generator=g)


@dataclass(frozen=True)
class BayesConfig:
    n_train: int = 100
    n: int = 400  #: held-out test points over [−4, 4]
    hidden: int = 64
    prior_precision: float = 1.0
    map_iters: int = 3000
    iters: int = 12000  #: pSGLD steps
    cycles: int = 4
    exploration: float = 0.3
    lr: float = 3e-3
    batch: int = 32
    thin: int = 50

    @classmethod
    def quick(cls) -> "BayesConfig":
        return cls(n_train=60, n=200, hidden=32, map_iters=600, iters=1500, cycles=2, thin=25)


def _mlp(hidden):
    return torch.nn.Sequential(
        torch.nn.Linear(1, hidden),
        torch.nn.Tanh(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.Tanh(),
        torch.nn.Linear(hidden, 1),
    )


def _gaussian_ll(y, mean, var):
    return -0.5 * (math.log(2 * math.pi) + torch.log(var) + (y - mean) ** 2 / var)


def run(ctx: DemoContext, cfg: BayesConfig = BayesConfig()) -> DemoResult:
    import fastlangevin as fl
    from fastlangevin.optim import CyclicalLR, pSGLD

    res = DemoResult("bayes")
    dev, g = ctx.device, ctx.generator
    cpu_g = torch.Generator().manual_seed(ctx.seed)  # data and minibatches: the same on every device
    x, y = gap_data(cfg.n_train, cpu_g)
    x_test = torch.rand(cfg.n, 1, generator=cpu_g) * 8 - 4
    y_test = target(x_test) + SIGMA * torch.randn(cfg.n, 1, generator=cpu_g)
    x, y, x_test, y_test = (t.to(dev) for t in (x, y, x_test, y_test))
    grid = torch.linspace(-4.5, 4.5, 300, device=dev)[:, None]
    net = _mlp(cfg.hidden).to(dev)
    N = cfg.n_train

    def minibatch():
        idx = torch.randint(N, (cfg.batch,), generator=cpu_g).to(dev)
        return x[idx], y[idx]

    def mean_nll(xb, yb):  # minibatch mean of −log N(y | f(x), σ²), constants dropped
        return ((net(xb) - yb) ** 2).mean() / (2 * SIGMA**2)

    with fl.track_backends() as ran, timed(ctx) as total:
        # MAP: minimise N·mean NLL + λ/2 ‖θ‖², i.e. the potential divided by N (Adam on the mean).
        adam = torch.optim.Adam(net.parameters(), lr=3e-3)
        with ctx.bar(cfg.map_iters, "MAP (Adam)") as bar:
            for _ in range(cfg.map_iters):
                xb, yb = minibatch()
                reg = sum((p**2).sum() for p in net.parameters()) * cfg.prior_precision / (2 * N)
                loss = mean_nll(xb, yb) + reg
                adam.zero_grad()
                loss.backward()
                adam.step()
                bar.update(note=f"loss {loss.item():.3f}")
        with torch.no_grad():
            map_grid, map_test = net(grid), net(x_test)

        opt = pSGLD(net.parameters(), lr=cfg.lr, num_data=N, prior_precision=cfg.prior_precision, generator=g, eps=1e-3)
        sched = CyclicalLR(opt, total_steps=cfg.iters, num_cycles=cfg.cycles, exploration=cfg.exploration)
        preds_grid, preds_test = [], []
        with ctx.bar(cfg.iters, "pSGLD (cyclical)") as bar:
            for k in range(cfg.iters):
                xb, yb = minibatch()
                opt.zero_grad()
                loss = mean_nll(xb, yb)
                loss.backward()
                opt.step()
                sampling = sched.is_sampling()
                sched.step()
                if sampling and k % cfg.thin == 0:
                    with torch.no_grad():
                        preds_grid.append(net(grid))
                        preds_test.append(net(x_test))
                bar.update(note=f"nll {loss.item():.3f}, samples {len(preds_grid)}")
    pg, pt = torch.stack(preds_grid).cpu(), torch.stack(preds_test).cpu()
    grid_c, x_t, y_t = grid.cpu(), x_test.cpu(), y_test.cpu()
    var_noise = torch.tensor(SIGMA**2)
    # Posterior predictive: mixture of N(f_s(x), σ²) over the S samples.
    ll_s = _gaussian_ll(y_t[None], pt, var_noise)  # [S, n, 1]
    ll_bayes = (torch.logsumexp(ll_s, 0) - math.log(pt.shape[0])).squeeze(1)
    ll_point = _gaussian_ll(y_t, map_test.cpu(), var_noise).squeeze(1)
    pred_mean, pred_sd = pg.mean(0).squeeze(1), (pg.var(0) + SIGMA**2).sqrt().squeeze(1)
    xs = grid_c.squeeze(1)
    in_data = (xs.abs() >= 1.2) & (xs.abs() <= 2.8)
    gap = xs.abs() <= 0.5
    outside = xs.abs() >= 3.8
    in_gap_test = x_t.squeeze(1).abs() < 1
    m = res.metrics
    m["samples"] = float(pt.shape[0])
    m["band_sd_data"], m["band_sd_gap"], m["band_sd_outside"] = (
        float(pred_sd[in_data].mean()),
        float(pred_sd[gap].mean()),
        float(pred_sd[outside].mean()),
    )
    m["ll_bayes"], m["ll_point"] = float(ll_bayes.mean()), float(ll_point.mean())
    m["ll_bayes_gap"], m["ll_point_gap"] = float(ll_bayes[in_gap_test].mean()), float(ll_point[in_gap_test].mean())
    m["ll_bayes_data"] = float(ll_bayes[~in_gap_test & (x_t.squeeze(1).abs() <= 3)].mean())
    m["ll_point_data"] = float(ll_point[~in_gap_test & (x_t.squeeze(1).abs() <= 3)].mean())
    m["seconds"] = total.seconds
    res.say(f"{N} training points, |x| in [1, 3] (a gap in (-1, 1)); {cfg.n} held-out points over [-4, 4]")
    res.say(f"pSGLD: {cfg.iters} steps, {cfg.cycles} cycles (cSGLD), {int(m['samples'])} posterior samples kept")
    res.say(
        f"predictive sd: {m['band_sd_data']:.3f} on the data, {m['band_sd_gap']:.3f} in the gap, "
        f"{m['band_sd_outside']:.3f} beyond |x| = 3.8 (point estimate: {SIGMA:.3f} everywhere)"
    )
    res.say(
        f"held-out log-likelihood per point: Bayesian {m['ll_bayes']:.3f}, point estimate {m['ll_point']:.3f} "
        f"(on the data range: {m['ll_bayes_data']:.3f} vs {m['ll_point_data']:.3f}; "
        f"in the gap: {m['ll_bayes_gap']:.3f} vs {m['ll_point_gap']:.3f})"
    )
    res.say(f"ran: {ran_summary(ran)}; {total.seconds:.1f} s")
    res.seconds = total.seconds
    if ctx.out is not None:
        _plot(ctx, res, x.cpu(), y.cpu(), xs, pred_mean, pred_sd, map_grid.cpu().squeeze(1), pg.squeeze(-1))
    return res


def _plot(ctx, res, x, y, xs, mean, sd, map_pred, samples) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), layout="constrained", sharey=True)
    truth = target(xs)
    for ax in axes:
        ax.scatter(x.squeeze(1), y.squeeze(1), s=8, color="k", zorder=3, label="training data")
        ax.plot(xs, truth, color="0.5", ls="--", lw=1, label="true function")
        ax.axvspan(-1, 1, color="0.93", zorder=0)
        ax.set_xlabel("x")
    ax = axes[0]
    ax.plot(xs, map_pred, color="tab:red", lw=1.5, label="point estimate (MAP)")
    ax.fill_between(xs, map_pred - 2 * SIGMA, map_pred + 2 * SIGMA, color="tab:red", alpha=0.2, label="±2σ")
    ax.set_title("point estimate: the same band everywhere", fontsize=10)
    ax.set_ylabel("y")
    ax = axes[1]
    for s in samples[:: max(1, len(samples) // 20)]:
        ax.plot(xs, s, color="tab:blue", lw=0.4, alpha=0.4)
    ax.plot(xs, mean, color="tab:blue", lw=1.5, label="posterior predictive mean")
    ax.fill_between(xs, mean - 2 * sd, mean + 2 * sd, color="tab:blue", alpha=0.2, label="±2 sd (predictive)")
    ax.set_title("pSGLD posterior: the band widens in the gap and beyond the data", fontsize=10)
    for ax in axes:
        ax.set_ylim(-2.5, 2.5)
        ax.legend(loc="upper left", fontsize=8)
    m = res.metrics
    fig.suptitle(
        f"Bayesian MLP, 1-D regression with a gap; held-out log-likelihood: "
        f"Bayesian {m['ll_bayes']:.2f}, point estimate {m['ll_point']:.2f}",
        fontsize=11,
    )
    save_figure(ctx, res, fig, "bayes_regression.png")
