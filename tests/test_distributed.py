"""fastlangevin.distributed on two CPU processes (gloo): sharded sampling equals the one-process
run sample for sample, seeds give the same samples whatever the world size, a failing rank is a
clear error on every rank within a bounded time; shard helpers in one process.

Each multi-process test is one 2-process job (``tests/dist_harness.py``: spawn, gloo, a hard
deadline, one thread per worker) that writes its results to files; the test compares them with
the same calls made here in one process.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import time

import pytest
import torch

import fastlangevin as fl
from fastlangevin import distributed as fd

from .dist_harness import launch, launch_killed

B = 7  # odd: shards of 4 and 3 rows
SEED = 1234


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------
# Cases: the same calls on 2 ranks (sharded) and here (one process)
# ---------------------------------------------------------------------------------------
def ring_score(x):  # score of a ring-shaped density: nonlinear, row-wise
    r2 = (x * x).sum(dim=1, keepdim=True)
    return -x * (r2 - 1.0)


def sigma_score(x, sigma):
    return -x / (1.0 + sigma[:, None] ** 2)


def _ve():
    return fl.VESDE(sigma_min=0.01, sigma_max=5.0)


def ve_score(x, t):
    return -x / (1.0 + _ve().marginal_std(t)[:, None] ** 2)


def vp_score(x, t):
    return -x


def log_prob(x):
    return -0.5 * (x * x).sum(dim=1) - 0.25 * (x**4).sum(dim=1)


def zero_score(x):
    return torch.zeros_like(x)


def _x0():
    return torch.randn(B, 3, generator=gen(5))


@fd.register_sharding(per_sample=("temperature", "center"))
def tempered_langevin(score_fn, x0, *, temperature, center, n_steps, generator=None, sample_offset=0):
    """A third-party sampler: per-sample temperatures [B] and centres [B, D], declared once."""
    step = 0.05
    t = temperature if isinstance(temperature, torch.Tensor) else torch.tensor(temperature)
    return fl.langevin(
        lambda x: score_fn(x - center),
        x0,
        step_size=step,
        noise_scale=(2 * step * t).sqrt(),
        n_steps=n_steps,
        generator=generator,
        sample_offset=sample_offset,
        backend="torch",
    )


def cases():
    """name -> (sampler, positional args, start {"x0": ...} or {"shape": ...}, keyword options)."""
    x0 = _x0()
    return {
        "langevin-torch": (fl.langevin, (ring_score,), {"x0": x0}, dict(step_size=0.05, n_steps=4, backend="torch")),
        "langevin-triton": (fl.langevin, (ring_score,), {"x0": x0}, dict(step_size=0.05, n_steps=2, backend="triton")),
        "langevin-philox-clamp": (
            fl.langevin,
            (ring_score,),
            {"x0": x0},
            dict(step_size=0.3, n_steps=3, backend="torch", rng="philox", clamp=(-1.0, 1.0)),
        ),
        "noise-only": (
            fl.langevin,
            (zero_score,),
            {"x0": torch.zeros(B, 3)},
            dict(step_size=0.5, n_steps=1, backend="torch"),
        ),
        "annealed-per-sample-lr": (
            fl.annealed_langevin,
            (sigma_score,),
            {"x0": x0},
            dict(sigmas=[1.0, 0.5, 0.1], n_steps_each=2, step_lr=torch.linspace(1e-3, 3e-3, B), backend="torch"),
        ),
        "pc-ve-batch-norms-torch": (
            fl.pc_sample,
            (ve_score, _ve()),
            {"shape": (B, 3)},
            dict(n_steps=5, backend="torch"),
        ),
        "pc-ve-batch-norms-triton": (
            fl.pc_sample,
            (ve_score, _ve()),
            {"shape": (B, 3)},
            dict(n_steps=2, backend="triton"),
        ),
        "pc-vp-per-sample-snr-2-correctors": (
            fl.pc_sample,
            (vp_score, fl.VPSDE(beta_min=0.1, beta_max=2.0)),
            {"x0": x0},
            dict(
                n_steps=4,
                predictor="euler_maruyama",
                n_corrector_steps=2,
                snr=torch.linspace(0.1, 0.2, B),
                backend="torch",
            ),
        ),
        "pc-per-sample-norms": (
            fl.pc_sample,
            (ve_score, _ve()),
            {"shape": (B, 3)},
            dict(n_steps=3, corrector_norm="per_sample", backend="torch"),
        ),
        "mala": (fl.mala, (log_prob,), {"x0": x0}, dict(step_size=0.4, n_steps=5, backend="torch")),
        "third-party-declared": (
            tempered_langevin,
            (ring_score,),
            {"x0": x0},
            dict(temperature=torch.linspace(0.5, 2.0, B), center=torch.randn(B, 3, generator=gen(6)), n_steps=3),
        ),
    }


def one_process(name, generator=None):
    sampler, args, start, kw = cases()[name]
    return sampler(*args, generator=generator or gen(SEED), **start, **kw)


# ---------------------------------------------------------------------------------------
# The 2-process sampling job
# ---------------------------------------------------------------------------------------
def _sampling_job(rank, world, out_dir):
    results = {}
    for name, (sampler, args, start, kw) in cases().items():
        results[name] = fd.sample_sharded(sampler, *args, seed=SEED, **start, **kw)
        assert (results[name] is None) == (rank != 0), "gather='dst' returns the batch on rank 0 only"

    sampler, args, start, kw = cases()["pc-ve-batch-norms-torch"]
    # every rank gets the whole batch
    results["all"] = fd.sample_sharded(sampler, *args, seed=SEED, gather="all", **start, **kw)
    # negative control: the corrector's norms NOT gathered (each shard's own batch means)
    results["no-gather"] = fd.sample_sharded(sampler, *args, seed=SEED, corrector_gather_norms=None, **start, **kw)
    # per-rank files
    own = fd.sample_sharded(sampler, *args, seed=SEED, gather="none", **start, **kw)
    fd.save_shard(os.path.join(out_dir, "shards"), own, batch=B)
    mala_own = fd.sample_sharded(
        fl.mala, log_prob, x0=_x0(), seed=SEED, gather="none", step_size=0.4, n_steps=5, backend="torch"
    )
    fd.save_shard(os.path.join(out_dir, "mala-shards"), mala_own, batch=B)

    sampler, args, start, kw = cases()["langevin-torch"]
    # a generator whose state differs per rank: rank 0's state is broadcast
    g = gen(SEED if rank == 0 else 999)
    results["generator"] = fd.sample_sharded(sampler, *args, generator=g, **start, **kw)
    # no seed: rank 0's default generator draws one (other ranks' default generators differ)
    torch.manual_seed(77 if rank == 0 else 1000 + rank)
    results["default-seed"] = fd.sample_sharded(sampler, *args, **start, **kw)
    # x0 as a callable building the shard
    x0 = start["x0"]
    results["x0-callable"] = fd.sample_sharded(
        sampler, *args, x0=lambda a, b: x0[a:b].clone(), batch=B, seed=SEED, **kw
    )
    # seeds that disagree between ranks: a ValueError on every rank (and the group stays usable)
    try:
        fd.sample_sharded(sampler, *args, seed=SEED + rank, **start, **kw)
        results["bad-seed"] = "no error"
    except ValueError as e:
        results["bad-seed"] = str(e)
    try:  # batch sizes that disagree: the same
        fd.sample_sharded(sampler, *args, x0=torch.zeros(B + rank, 3), seed=SEED, **kw)
        results["bad-batch"] = "no error"
    except ValueError as e:
        results["bad-batch"] = str(e)
    results["after-bad-seed"] = fd.sample_sharded(sampler, *args, seed=SEED, **start, **kw)
    results["shard"] = fd.shard(torch.arange(2.0 * B).reshape(B, 2))
    results["shard_weight"] = fd.shard_weight(B)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.fixture(scope="module")
def sampling_job(tmp_path_factory):
    out = tmp_path_factory.mktemp("sampling")
    wall = launch(_sampling_job, 2, out, str(out), deadline_s=120)
    print(f"2-process sampling job: {wall:.1f} s")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)], out


@pytest.mark.parametrize("name", list(cases()))
def test_sharded_equals_one_process(sampling_job, name):
    (r0, r1), _ = sampling_job
    assert r1[name] is None
    got, want = r0[name], one_process(name)
    if isinstance(want, tuple):  # mala: (samples, accept_rate), both per sample
        assert isinstance(got, tuple) and len(got) == 2
        for g, w in zip(got, want):
            assert torch.equal(g, w)
    else:
        assert got.shape == want.shape and got.dtype == want.dtype
        assert torch.equal(got, want), f"max |diff| {(got - want).abs().max().item():.3g}"


def test_one_process_sample_sharded_is_the_sampler():
    """Without torch.distributed, sample_sharded is the sampler on the whole batch (world size 1)."""
    for name in ("langevin-torch", "pc-ve-batch-norms-torch", "mala"):
        sampler, args, start, kw = cases()[name]
        got = fd.sample_sharded(sampler, *args, seed=SEED, **start, **kw)
        want = one_process(name)
        for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            assert torch.equal(g, w)


def test_ranks_noise_is_distinct(sampling_job):
    (r0, _), _ = sampling_job
    z = r0["noise-only"]  # x0 = 0, score 0: one step is pure noise, rows 0-3 from rank 0, 4-6 from rank 1
    assert torch.unique(z.reshape(-1)).numel() == z.numel()
    assert not torch.allclose(z[:3], z[4:7])


def test_batch_norms_need_the_gather(sampling_job):
    """Negative control: shards using their own batch means differ from the one-process run."""
    (r0, _), _ = sampling_job
    want = one_process("pc-ve-batch-norms-torch")
    assert not torch.allclose(r0["no-gather"], want, rtol=1e-4, atol=1e-5)


def test_gather_all_and_per_rank_files(sampling_job):
    (r0, r1), out = sampling_job
    want = one_process("pc-ve-batch-norms-torch")
    assert torch.equal(r0["all"], want) and torch.equal(r1["all"], want)
    assert torch.equal(fd.load_shards(str(out / "shards")), want)
    got = fd.load_shards(str(out / "mala-shards"))
    for g, w in zip(got, one_process("mala")):
        assert torch.equal(g, w)


def test_shard_and_weight_per_rank(sampling_job):
    (r0, r1), _ = sampling_job
    t = torch.arange(2.0 * B).reshape(B, 2)
    assert torch.equal(r0["shard"], t[:4]) and torch.equal(r1["shard"], t[4:])
    assert r0["shard_weight"] == pytest.approx(2 * 4 / 7) and r1["shard_weight"] == pytest.approx(2 * 3 / 7)
    assert torch.equal(fd.shard(t), t) and fd.shard_weight(B) == 1.0  # one process


def test_seed_sources(sampling_job):
    (r0, r1), _ = sampling_job
    want = one_process("langevin-torch")
    assert torch.equal(r0["generator"], want)  # rank 0's generator state, broadcast
    assert torch.equal(r0["x0-callable"], want)
    assert torch.equal(r0["after-bad-seed"], want)
    torch.manual_seed(77)
    drawn = int(torch.randint(0, 1 << 62, (1,)).item())
    assert torch.equal(r0["default-seed"], one_process("langevin-torch", gen(drawn)))
    for r in (r0, r1):
        assert "seed must be the same on every rank" in r["bad-seed"] and "[1234, 1235]" in r["bad-seed"]
        assert "the whole batch must have the same size on every rank, got [7, 8]" in r["bad-batch"]


# ---------------------------------------------------------------------------------------
# A rank failing mid-run
# ---------------------------------------------------------------------------------------
FAILURES = {
    # rank 1 raises in its score function and carries on (its process stays alive): rank 0,
    # waiting in the corrector's all-gather, times out and reports rank 1's error
    "raise-and-stay": "short group",
    # rank 1 stalls past the group's timeout: rank 0 times out; rank 1, back, finds rank 0 gone
    "stall": "short group",
    # rank 1 raises and its process exits (what torchrun's workers do): rank 0's collective
    # fails at once with a closed connection, and it reports rank 1's error
    "raise-and-exit": "default group",
}


def _failure_job(rank, world, out_dir):
    import datetime

    import torch.distributed as dist

    fl.pc_sample(ve_score, _ve(), shape=(2, 3), n_steps=1, backend="torch")  # warm-up: first-call imports
    short = {k: dist.new_group(timeout=datetime.timedelta(seconds=2.0)) for k in ("raise-and-stay", "stall")}
    records = {}
    for mode in FAILURES:
        dist.barrier()  # the default group (long timeout) lines the ranks up between cases
        calls = [0]

        def score(x, t):
            calls[0] += 1
            if rank == 1 and calls[0] == 3:
                if mode == "stall":
                    time.sleep(4.5)  # past the group's 2 s timeout
                else:
                    raise ValueError(f"boom: score network failed at call 3 ({mode})")
            return ve_score(x, t)

        t0 = time.monotonic()
        try:
            fd.sample_sharded(
                fl.pc_sample, score, _ve(), shape=(B, 3), seed=SEED, n_steps=6, backend="torch", group=short.get(mode)
            )
            rec = {"error": None}
        except Exception as e:
            rec = {
                "error": type(e).__name__,
                "rank_failed": isinstance(e, fd.RankFailedError),
                "message": str(e),
                "failed_rank": getattr(e, "failed_rank", "n/a"),
                "error_type": getattr(e, "error_type", None),
                "error_class": getattr(e, "error_class", None),
                "cause": type(e.__cause__).__name__ if e.__cause__ is not None else None,
            }
        rec["seconds"] = time.monotonic() - t0
        records[mode] = rec
        torch.save(records, os.path.join(out_dir, f"rank{rank}.pt"))
        if mode == "raise-and-exit" and rank == 1:
            os._exit(0)  # leave without closing the group: the peer sees the connection drop


@pytest.fixture(scope="module")
def failure_job(tmp_path_factory):
    out = tmp_path_factory.mktemp("failure")
    wall = launch(_failure_job, 2, out, str(out), deadline_s=90)
    print(f"2-process failure job: {wall:.1f} s")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("mode", list(FAILURES))
def test_rank_failure_is_a_clear_error_on_every_rank(failure_job, mode):
    r0, r1 = (recs[mode] for recs in failure_job)
    if mode == "stall":  # nobody reported: both ranks lost their peer
        for r in (r0, r1):
            assert r["error"] == "RankLostError" and r["rank_failed"] and r["failed_rank"] is None
            assert r["cause"] == "CollectiveError"
        assert "stopped answering" in r0["message"]
    else:  # rank 1's own error, unchanged; rank 0 told which rank failed and with which type
        assert r1["error"] == "ValueError" and f"boom: score network failed at call 3 ({mode})" == r1["message"]
        assert r0["error"] == "RemoteRankError" and r0["rank_failed"] and r0["failed_rank"] == 1
        assert r0["error_type"] == "builtins.ValueError" and r0["error_class"] is ValueError
        assert r0["cause"] == "CollectiveError"
        assert f"rank 1 failed: rank 1: ValueError: boom: score network failed at call 3 ({mode})" in r0["message"]
    assert r0["seconds"] < 10 and r1["seconds"] < 10


# ---------------------------------------------------------------------------------------
# One-process helpers
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch,world", [(7, 2), (8, 2), (10, 3), (5, 5), (1000, 7)])
def test_shard_range_tiles_the_batch(batch, world):
    ranges = [fd.shard_range(batch, r, world) for r in range(world)]
    assert ranges[0][0] == 0 and ranges[-1][1] == batch
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    sizes = [b - a for a, b in ranges]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    assert sizes == sorted(sizes, reverse=True)


def test_bad_input():
    with pytest.raises(ValueError, match=r"batch \(3\) must be >= world_size \(4\)"):
        fd.shard_range(3, 0, 4)
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        fd.shard_range(8, 2, 2)
    with pytest.raises(TypeError, match="batch must be an int"):
        fd.shard_range(8.0, 0, 2)
    x0 = _x0()
    with pytest.raises(ValueError, match="gather must be one of"):
        fd.sample_sharded(fl.langevin, ring_score, x0=x0, gather="rank0", step_size=0.1, n_steps=1)
    with pytest.raises(ValueError, match="sample_offset is set by sample_sharded"):
        fd.sample_sharded(fl.langevin, ring_score, x0=x0, sample_offset=3, step_size=0.1, n_steps=1)
    with pytest.raises(ValueError, match="exactly one of x0"):
        fd.sample_sharded(fl.langevin, ring_score, step_size=0.1, n_steps=1)
    with pytest.raises(ValueError, match="pass batch=B"):
        fd.sample_sharded(fl.langevin, ring_score, x0=lambda a, b: x0[a:b], step_size=0.1, n_steps=1)
    with pytest.raises(ValueError, match=r"x0\(0, 7\) must return a \[7, \.\.\.\] tensor"):
        fd.sample_sharded(fl.langevin, ring_score, x0=lambda a, b: x0[:2], batch=B, step_size=0.1, n_steps=1)
    with pytest.raises(ValueError, match="seed or generator, not both"):
        fd.sample_sharded(fl.langevin, ring_score, x0=x0, seed=1, generator=gen(1), step_size=0.1, n_steps=1)
    with pytest.raises(TypeError, match="seed must be an int"):
        fd.sample_sharded(fl.langevin, ring_score, x0=x0, seed=1.5, step_size=0.1, n_steps=1)
    with pytest.raises(RuntimeError, match="not initialised"):
        fd.rank_and_world(group=object())


def test_load_shards_reports_a_missing_shard(tmp_path):
    x = torch.arange(14.0).reshape(7, 2)
    # write rank 0's shard of a 2-rank run only
    torch.save(
        {"start": 0, "stop": 4, "batch": 7, "world_size": 2, "samples": (x[:4],), "tuple": False},
        tmp_path / "shard-00000.pt",
    )
    with pytest.raises(ValueError, match="cover rows 0..4 of 7"):
        fd.load_shards(str(tmp_path))
    torch.save(
        {"start": 5, "stop": 7, "batch": 7, "world_size": 2, "samples": (x[5:],), "tuple": False},
        tmp_path / "shard-00001.pt",
    )
    with pytest.raises(ValueError, match="expected a shard starting at row 4"):
        fd.load_shards(str(tmp_path))


def test_corrector_gather_norms_hook():
    """The hook sees this shard's [b, 2] norms; a shard given the whole batch's norms steps with
    the whole batch's ε (what the distributed gather provides)."""
    g = gen(3)
    x = torch.randn(6, 4, generator=g)
    s = -x * torch.linspace(0.5, 2.0, 6)[:, None]
    whole, eps_whole = fl.langevin_corrector_(
        x.clone(), s, 0.16, generator=gen(9), backend="torch", return_step_size=True
    )
    # the whole batch's norms, as the ranks would gather them
    from fastlangevin._rng import draw_seed
    from fastlangevin.ops.corrector import corrector_norms

    all_norms = corrector_norms(s, draw_seed(x.device, gen(9)), backend="torch")
    seen = []

    def hook(n):
        seen.append(n.shape)
        return all_norms

    part, eps_part = fl.langevin_corrector_(
        x[2:5].clone(),
        s[2:5],
        0.16,
        generator=gen(9),
        backend="torch",
        sample_offset=2,
        gather_norms=hook,
        return_step_size=True,
    )
    assert seen == [torch.Size([3, 2])]
    assert torch.equal(eps_part, eps_whole) and torch.equal(part, whole[2:5])
    _, eps_local = fl.langevin_corrector_(
        x[2:5].clone(), s[2:5], 0.16, generator=gen(9), backend="torch", sample_offset=2, return_step_size=True
    )
    assert not math.isclose(eps_local.item(), eps_whole.item(), rel_tol=1e-3)
    with pytest.raises(ValueError, match=r"gather_norms must return the whole batch's \[B, 2\]"):
        fl.langevin_corrector_(x.clone(), s, 0.16, gather_norms=lambda n: n[:, :1])
    with pytest.raises(TypeError, match="gather_norms must be callable"):
        fl.langevin_corrector_(x.clone(), s, 0.16, gather_norms=3)


# ---------------------------------------------------------------------------------------
# dsm_loss(sample_offset=...): a shard draws the whole batch's noise rows
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("D", [3, 8], ids=["row3", "row8"])  # row 3: shards start off a Philox group
def test_dsm_loss_shard_equals_rows_of_whole_batch(device_backend, D):
    device, backend = device_backend
    g = gen(11)
    x = torch.randn(B, D, generator=g).to(device).requires_grad_(True)
    sigma = torch.linspace(0.2, 1.5, B).to(device)
    w = torch.tensor(0.7, device=device, requires_grad=True)

    def score_fn(xt, sig):  # row-wise, with a parameter
        return -w * xt / (1.0 + sig[:, None] ** 2)

    whole = fl.dsm_loss(
        score_fn, x, sigma, reduction="none", generator=torch.Generator(device).manual_seed(5), backend=backend
    )
    gw_whole, gx_whole = torch.autograd.grad(whole.sum(), (w, x))
    rows, gw_parts, gx_parts = [], [], []
    for a, b in ((0, 4), (4, 7)):
        xs = x.detach()[a:b].clone().requires_grad_(True)
        part = fl.dsm_loss(
            score_fn,
            xs,
            sigma[a:b],
            reduction="none",
            generator=torch.Generator(device).manual_seed(5),
            backend=backend,
            sample_offset=a,
        )
        gw, gx = torch.autograd.grad(part.sum(), (w, xs))
        rows.append(part.detach()), gw_parts.append(gw), gx_parts.append(gx)
    assert torch.equal(torch.cat(rows), whole.detach())
    torch.testing.assert_close(gw_parts[0] + gw_parts[1], gw_whole, rtol=1e-5, atol=1e-6)
    assert torch.equal(torch.cat(gx_parts), gx_whole)
    # without the offset, the second shard would draw the first rows' noise
    wrong = fl.dsm_loss(
        score_fn,
        x.detach()[4:7],
        sigma[4:7],
        reduction="none",
        generator=torch.Generator(device).manual_seed(5),
        backend=backend,
    )
    assert not torch.allclose(wrong, whole.detach()[4:7])
    with pytest.raises(ValueError, match="sample_offset must be a non-negative int"):
        fl.dsm_loss(score_fn, x, sigma, sample_offset=-1, backend=backend)


def test_dsm_ops_opcheck_with_sample_offset(device_backend):
    device, backend = device_backend
    rng = "torch" if backend == "torch" and device == "cpu" else "philox"
    ops = torch.ops.fastlangevin
    x = torch.randn(3, 5, device=device, requires_grad=True)
    sig = torch.tensor([0.5, 1.0, 2.0], device=device)
    inv, w = sig.reciprocal(), sig * sig
    seed = torch.tensor([77], device=device)
    s = torch.randn(x.shape, device=device, requires_grad=True)
    torch.library.opcheck(ops.dsm_perturb, (x, seed, None, sig, backend, rng, None, 3))
    torch.library.opcheck(ops.dsm_loss_rows, (s, seed, inv, w, backend, rng, None, 3))
    torch.library.opcheck(ops.dsm_loss_rows_backward, (s.detach(), seed, inv, w, backend, rng, None, 3))
    # the offset moves the noise: rows 3.. of a 6-row call at offset 0
    big = ops.dsm_perturb(
        torch.zeros(6, 5, device=device), seed, None, torch.ones(6, device=device), backend, rng, None
    )
    moved = ops.dsm_perturb(
        torch.zeros(3, 5, device=device), seed, None, torch.ones(3, device=device), backend, rng, None, 3
    )
    assert torch.equal(moved, big[3:])


# ---------------------------------------------------------------------------------------
# DistributedDataParallel training with dsm_loss
# ---------------------------------------------------------------------------------------
TRAIN_BATCH, TRAIN_STEPS = 7, 4  # uneven shards (4 + 3): shard_weight makes DDP's average exact


class TinyScore(torch.nn.Module):
    def __init__(self, d=2, hidden=16):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(d + 1, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, d))

    def forward(self, x, sigma):
        return self.net(torch.cat([x, sigma.log()[:, None]], dim=1)) / sigma[:, None]


def _new_model():
    torch.manual_seed(0)
    return TinyScore()


def train(model, *, offset=True, weight=True, group=None):
    """TRAIN_STEPS SGD steps of the DSM loss on a global batch drawn identically on every rank;
    each rank takes its shard (one process: the whole batch). Returns the loss per step."""
    rank, world = fd.rank_and_world(group)
    start, stop = fd.shard_range(TRAIN_BATCH, rank, world)
    data_g = gen(21)  # data and noise levels: the same global batch on every rank
    noise_g = fd.synced_generator("cpu", seed=22, group=group)  # the same per-call seeds on every rank
    sigmas = torch.tensor([2.0, 1.0, 0.5, 0.25])
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(TRAIN_STEPS):
        x = torch.randn(TRAIN_BATCH, 2, generator=data_g) * 0.5 + torch.tensor([1.0, -2.0])
        sigma = sigmas[torch.randint(len(sigmas), (TRAIN_BATCH,), generator=data_g)]
        loss = fl.dsm_loss(
            model,
            x[start:stop],
            sigma[start:stop],
            generator=noise_g,
            sample_offset=start if offset else 0,
            backend="torch",
        )
        opt.zero_grad()
        (loss * (fd.shard_weight(TRAIN_BATCH, group) if weight else 1.0)).backward()
        opt.step()
        losses.append(loss.detach())
    return losses


def _ddp_job(rank, world, out_dir):
    from torch.nn.parallel import DistributedDataParallel as DDP

    results = {}
    for name, kw in {"ddp": {}, "no-offset": {"offset": False}, "no-weight": {"weight": False}}.items():
        model = DDP(_new_model())
        losses = train(model, **kw)
        results[name] = {"params": [p.detach().clone() for p in model.module.parameters()], "losses": losses}
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.fixture(scope="module")
def ddp_job(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    wall = launch(_ddp_job, 2, out, str(out), deadline_s=90)
    print(f"2-process DDP job: {wall:.1f} s")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_ddp_training_matches_one_process(ddp_job):
    r0, r1 = ddp_job
    model = _new_model()
    one = train(model)
    want = [p.detach() for p in model.parameters()]
    for r in (r0, r1):  # DDP keeps the replicas in step
        for got, w in zip(r["ddp"]["params"], want):
            torch.testing.assert_close(got, w, rtol=1e-5, atol=1e-6)
    # the ranks' shard losses combine into the one-process batch loss (4 + 3 rows)
    for k in range(TRAIN_STEPS):
        combined = (4 * r0["ddp"]["losses"][k] + 3 * r1["ddp"]["losses"][k]) / 7
        torch.testing.assert_close(combined, one[k], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(one[-1], one[0])  # the training did move


@pytest.mark.parametrize("control", ["no-offset", "no-weight"])
def test_ddp_negative_controls_differ(ddp_job, control):
    """Without sample_offset the ranks repeat each other's noise rows; without shard_weight DDP's
    average over unequal shards is not the batch mean: either way the run is not the one-process run."""
    r0, _ = ddp_job
    model = _new_model()
    train(model)
    diff = max((g - w.detach()).abs().max().item() for g, w in zip(r0[control]["params"], model.parameters()))
    assert diff > 1e-4, diff


# ---------------------------------------------------------------------------------------
# The torchrun example: the same run on 1 process and on 2
# ---------------------------------------------------------------------------------------
EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "train_ddp.py")
EXAMPLE_ARGS = [
    "--steps",
    "12",
    "--log-every",
    "4",
    "--batch",
    "63",
    "--samples",
    "45",
    "--sampling-steps",
    "2",
    "--timeout",
    "30",
]


def _result_lines(text):
    return [ln for ln in text.splitlines() if ln.startswith("step ") or ln.startswith("weight of the mode")]


def test_example_under_torchrun_matches_one_process(capsys):
    import importlib.util
    import subprocess
    import sys

    spec = importlib.util.spec_from_file_location("train_ddp_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main(EXAMPLE_ARGS) == 0
    one = _result_lines(capsys.readouterr().out)
    assert len(one) == 4 and one[-1].startswith("weight of the mode")

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        EXAMPLE,
        *EXAMPLE_ARGS,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world size 2" in proc.stdout and "rows 0:32" in proc.stdout  # 63 rows: shards of 32 and 31
    assert _result_lines(proc.stdout) == one  # losses and samples: the same run whatever the world size


# ---------------------------------------------------------------------------------------
# The sampler protocol: declarations, checked when registered and when called
# ---------------------------------------------------------------------------------------
def test_protocol_declarations_of_our_samplers():
    assert fd.sharding_spec(fl.langevin).per_sample == ("step_size", "noise_scale")
    assert fd.sharding_spec(fl.annealed_langevin).per_sample == ("step_lr",)
    pc = fd.sharding_spec(fl.pc_sample)
    assert pc.per_sample == ("snr",) and pc.shape and pc.gather_hook == "corrector_gather_norms"
    assert fd.sharding_spec(fl.mala).per_sample == ("step_size",) and not fd.sharding_spec(fl.mala).shape
    assert fd.PER_SAMPLE_KWARGS == ("step_size", "noise_scale", "step_lr", "snr")
    import functools

    assert fd.sharding_spec(functools.partial(fl.langevin, n_steps=2)) is fd.sharding_spec(fl.langevin)
    assert fd.sharding_spec(ring_score) is None

    class Sampler:  # a method registered once is found through its bound methods
        def sample(self, score_fn, x0, *, generator=None, sample_offset=0):
            return x0

    fd.register_sharding(Sampler.sample)
    assert fd.sharding_spec(Sampler().sample) == fd.ShardSpec()


def test_third_party_sampler_one_process_and_partial():
    """World size 1: the declared sampler (and a partial of it) is the sampler on the whole batch."""
    import functools

    sampler, args, start, kw = cases()["third-party-declared"]
    want = one_process("third-party-declared")
    assert torch.equal(fd.sample_sharded(sampler, *args, seed=SEED, **start, **kw), want)
    part = functools.partial(tempered_langevin, n_steps=kw["n_steps"])
    kw2 = {k: v for k, v in kw.items() if k != "n_steps"}
    assert torch.equal(fd.sample_sharded(part, *args, seed=SEED, **start, **kw2), want)


def test_sharded_sampler_slices_declared_rows_only():
    """The shard sees the declared per-sample rows sliced and every other option unchanged."""
    seen = {}

    @fd.register_sharding(per_sample=("w",))
    def spy(score_fn, x0, *, w, other, generator=None, sample_offset=0):
        seen.update(w=w, other=other, offset=sample_offset, rows=x0.shape[0])
        return x0 * (w[:, None] if w.dim() else w)

    x0, w, other = _x0(), torch.arange(1.0, B + 1), torch.arange(float(B))
    out = fd.sample_sharded(spy, ring_score, x0=x0, seed=1, w=w, other=other)
    assert torch.equal(out, x0 * w[:, None]) and seen["offset"] == 0 and seen["rows"] == B
    assert seen["w"] is not None and torch.equal(seen["w"], w) and seen["other"] is other
    two = torch.tensor(2.0)  # 0-d: the same for every row, passed as is
    assert torch.equal(fd.sample_sharded(spy, ring_score, x0=x0, seed=1, w=two, other=3), 2 * x0) and seen["w"] is two


def test_misdeclared_samplers_get_clear_errors():
    def sampler(score_fn, x0, *, temperature, generator=None, sample_offset=0):
        return x0

    with pytest.raises(ValueError, match=r"declares or needs the keyword 'temp'"):
        fd.register_sharding(sampler, per_sample=("temp",))
    with pytest.raises(ValueError, match=r"needs the keyword 'corrector_norms_hook'"):
        fd.register_sharding(sampler, gather_hook="corrector_norms_hook")
    with pytest.raises(ValueError, match=r"needs the keyword 'shape'"):
        fd.register_sharding(sampler, shape=True)

    def no_offset(score_fn, x0, *, temperature, generator=None):
        return x0

    with pytest.raises(ValueError, match=r"needs the keyword 'sample_offset'"):
        fd.register_sharding(no_offset, per_sample=("temperature",))
    with pytest.raises(ValueError, match=r"'x0' is set by sample_sharded itself"):
        fd.ShardSpec(per_sample=("x0",))
    for bad in ("temperature", 3, ("a", 3)):
        with pytest.raises(TypeError, match="per_sample must be a sequence of keyword names"):
            fd.ShardSpec(per_sample=bad)
    with pytest.raises(ValueError, match="names a keyword twice"):
        fd.ShardSpec(per_sample=("a", "a"))
    with pytest.raises(ValueError, match="spec or per_sample"):
        fd.register_sharding(sampler, spec=fd.ShardSpec(), per_sample=("temperature",))

    x0 = _x0()
    # not declared at all: says how to declare it
    with pytest.raises(TypeError, match=r"has no sharding declaration.*register_sharding"):
        fd.sample_sharded(sampler, ring_score, x0=x0, temperature=1.0)
    # a one-call declaration is checked like a registered one
    with pytest.raises(ValueError, match=r"declares or needs the keyword 'temp'"):
        fd.sample_sharded(sampler, ring_score, x0=x0, temperature=1.0, per_sample_kwargs=("temp",))
    with pytest.raises(TypeError, match="per_sample_kwargs must be a sequence"):
        fd.sample_sharded(sampler, ring_score, x0=x0, temperature=1.0, per_sample_kwargs="temperature")
    out = fd.sample_sharded(sampler, ring_score, x0=x0, temperature=1.0, per_sample_kwargs=("temperature",))
    assert torch.equal(out, x0)

    fd.register_sharding(sampler, per_sample=("temperature",))
    # a declared per-sample tensor whose dim 0 is not the batch
    with pytest.raises(ValueError, match=r"temperature is declared per-sample.*\(7 rows\), got shape \(6,\)"):
        fd.sample_sharded(sampler, ring_score, x0=x0, temperature=torch.ones(6))
    # shape= for a sampler that does not declare it
    with pytest.raises(ValueError, match="does not declare shape="):
        fd.sample_sharded(sampler, ring_score, shape=(B, 3), temperature=1.0)

    @fd.register_sharding
    def batch_mean(score_fn, x0, *, generator=None, sample_offset=0):
        return x0.mean(0)  # not per-sample: cannot be gathered by row

    with pytest.raises(ValueError, match=r"output 0 of .*batch_mean is \(3,\), not this shard's \[7, \.\.\.\]"):
        fd.sample_sharded(batch_mean, ring_score, x0=x0)

    @fd.register_sharding(per_sample=("anything",))
    def open_kwargs(score_fn, x0, **kw):  # **kwargs: any declared name is accepted
        return x0

    assert torch.equal(fd.sample_sharded(open_kwargs, ring_score, x0=x0), x0)


# ---------------------------------------------------------------------------------------
# Failure typing (one process, a fake store standing in for the group's)
# ---------------------------------------------------------------------------------------
class ScoreNetworkError(Exception):
    pass


class _FakeStore:
    def __init__(self):
        self.kv = {}

    def compare_set(self, key, expected, value):
        if key not in self.kv:
            self.kv[key] = value.encode() if isinstance(value, str) else value

    def check(self, keys):
        return all(k in self.kv for k in keys)

    def get(self, key):
        return self.kv[key]


@pytest.fixture
def two_rank_block(monkeypatch):
    """failure_report as rank 0 of 2, with a fake store (no process group needed)."""
    from fastlangevin.distributed import errors, failures

    store = _FakeStore()
    monkeypatch.setattr(failures, "rank_and_world", lambda group=None: (0, 2))
    monkeypatch.setattr(errors, "_in_process_group", lambda: True)
    monkeypatch.setattr(failures, "_store", lambda: store)
    return store


def _next_key(store):
    from fastlangevin.distributed import failures

    return failures._FAILURE_KEY.format(failures._blocks[0] + 1)


def test_failure_report_publishes_own_errors_by_stable_name(two_rank_block):
    import json

    store = two_rank_block
    key = _next_key(store)
    with pytest.raises(ScoreNetworkError, match="nan in layer 3") as info:
        with fd.failure_report("test"):
            raise ScoreNetworkError("nan in layer 3\nmore lines")
    assert type(info.value) is ScoreNetworkError  # re-raised unchanged
    record = json.loads(store.kv[key])
    assert record == {"rank": 0, "type": f"{__name__}.ScoreNetworkError", "message": "nan in layer 3"}


def test_failure_report_types_peer_failures(two_rank_block):
    import json

    import torch.distributed as dist

    store = two_rank_block
    # a peer reported an error of a class imported here: RemoteRankError resolves it
    key = _next_key(store)
    store.kv[key] = json.dumps({"rank": 1, "type": f"{__name__}.ScoreNetworkError", "message": "boom"}).encode()
    with pytest.raises(fd.RemoteRankError) as info:
        with fd.failure_report("test"):
            with fd.collective("all_reduce"):
                raise RuntimeError("Connection closed by peer")  # gloo's plain RuntimeError
    e = info.value
    assert isinstance(e, fd.RankFailedError) and e.failed_rank == 1
    assert e.error_type == f"{__name__}.ScoreNetworkError" and e.error_class is ScoreNetworkError
    assert e.error_message == "boom" and "rank 1 failed: rank 1: ScoreNetworkError: boom" in str(e)
    assert isinstance(e.__cause__, fd.CollectiveError) and isinstance(e.__cause__.__cause__, RuntimeError)
    # a class whose module is not imported here: named, not resolved (nothing is imported)
    key = _next_key(store)
    store.kv[key] = json.dumps({"rank": 1, "type": "not_imported_mod.sub.OddError", "message": "x"}).encode()
    with pytest.raises(fd.RemoteRankError) as info:
        with fd.failure_report("test"):
            raise dist.DistBackendError("NCCL watchdog timeout")  # NCCL's typed error counts as a collective's
    assert info.value.error_type == "not_imported_mod.sub.OddError" and info.value.error_class is None
    # nobody reported: RankLostError
    with pytest.raises(fd.RankLostError, match="without reporting an error") as info:
        with fd.failure_report("test"):
            with fd.collective("broadcast"):
                raise RuntimeError("Timed out waiting 2000ms")
    assert info.value.failed_rank is None and isinstance(info.value, fd.RankFailedError)
    # a message that merely looks like a transport error is this rank's own error (type, not text)
    key = _next_key(store)
    with pytest.raises(RuntimeError, match="gloo/transport"):
        with fd.failure_report("test"):
            raise RuntimeError("my parser saw gloo/transport in a file name")
    assert json.loads(store.kv[key])["type"] == "builtins.RuntimeError"
    # an inner block's verdict passes an outer block unchanged (and is not reported as this rank's)
    key = _next_key(store)
    inner = fd.RankLostError("inner")
    with pytest.raises(fd.RankLostError) as info:
        with fd.failure_report("outer"):
            raise inner
    assert info.value is inner and key not in store.kv


def test_collective_marker_and_stable_names(monkeypatch):
    from fastlangevin.distributed import errors
    from fastlangevin.distributed.errors import error_name, resolve_error

    with pytest.raises(RuntimeError, match="own error") as info:  # one process: no collective, no conversion
        with fd.collective("all_gather"):
            raise RuntimeError("own error")
    assert type(info.value) is RuntimeError
    monkeypatch.setattr(errors, "_in_process_group", lambda: True)
    with pytest.raises(fd.CollectiveError, match="all_gather failed: RuntimeError: peer gone") as info:
        with fd.collective("all_gather"):
            raise RuntimeError("peer gone\ndetails")
    assert isinstance(info.value, RuntimeError) and info.value.what == "all_gather"
    lost = fd.RankLostError("x")
    with pytest.raises(fd.RankLostError) as info:
        with fd.collective("all_gather"):
            raise lost
    assert info.value is lost
    for cls in (ValueError, fd.RemoteRankError, ScoreNetworkError, torch.distributed.DistBackendError):
        assert resolve_error(error_name(cls)) is cls
    assert resolve_error("builtins.len") is None and resolve_error("builtins.NoSuchError") is None
    assert resolve_error("NoModule") is None
    with fd.failure_report("one process"):  # outside torch.distributed: a no-op
        pass


# ---------------------------------------------------------------------------------------
# Checkpoint/resume of sharded runs: killed on 2 ranks, resumed on 2 ranks (one file per rank)
# ---------------------------------------------------------------------------------------
CKPT_EVERY = 4


def ckpt_cases():
    """langevin (the shards' rows independent) and pc_sample (rows coupled at every step by the
    batch-averaged corrector norms: an all-gather per corrector step)."""
    return {
        "langevin": (fl.langevin, (ring_score,), {"x0": _x0()}, dict(step_size=0.05, n_steps=13, backend="torch")),
        "pc": (fl.pc_sample, (ve_score, _ve()), {"shape": (B, 3)}, dict(n_steps=9, backend="torch")),
    }


class _Stop(Exception):
    pass


def _killed_ckpt_job(rank, world, out_dir):
    """langevin: the ranks stop at different steps (rank 0 after step 6, rank 1 after 10: files at
    steps 4 and 8); then pc_sample: both ranks SIGKILLed after step 6 (files at step 4)."""
    import torch.distributed as dist

    sampler, args, start, kw = ckpt_cases()["langevin"]
    stop_at = 6 if rank == 0 else 10

    def stop(step, x):
        if step == stop_at:
            raise _Stop

    path = os.path.join(out_dir, "langevin")
    try:
        fd.sample_sharded(
            sampler, *args, seed=SEED, checkpoint=path, checkpoint_every=CKPT_EVERY, callback=stop, **start, **kw
        )
    except _Stop:
        pass

    sampler, args, start, kw = ckpt_cases()["pc"]

    def kill(step, x):
        if step == 6:
            dist.barrier()  # both ranks get here (and wrote step 4's file) before either dies
            os.kill(os.getpid(), signal.SIGKILL)

    path = os.path.join(out_dir, "pc")
    fd.sample_sharded(
        sampler, *args, seed=SEED, checkpoint=path, checkpoint_every=CKPT_EVERY, callback=kill, **start, **kw
    )


def _resume_ckpt_job(rank, world, killed_dir, out_dir):
    results = {}
    for name, (sampler, args, start, kw) in ckpt_cases().items():
        results[name] = fd.sample_sharded(sampler, *args, seed=SEED, gather="all", **start, **kw)
        resume = os.path.join(killed_dir, name)
        results[name + "-resumed"] = fd.sample_sharded(
            sampler, *args, seed=SEED, gather="all", resume=resume, **start, **kw
        )
    sampler, args, start, kw = ckpt_cases()["langevin"]
    try:  # a checkpoint of another call (another step size): refused on every rank, naming it
        other = dict(kw, step_size=0.06)
        fd.sample_sharded(sampler, *args, seed=SEED, resume=os.path.join(killed_dir, "langevin"), **start, **other)
        results["other-call"] = "no error"
    except ValueError as e:
        results["other-call"] = str(e)
    # pc_sample, coupled rows: every rank keeps two generations (steps 8 and 4 after this run)
    sampler, args, start, kw = ckpt_cases()["pc"]
    every4, every3 = os.path.join(out_dir, "every4"), os.path.join(out_dir, "every3")
    fd.sample_sharded(sampler, *args, seed=SEED, checkpoint=every4, checkpoint_every=4, **start, **kw)
    fd.sample_sharded(sampler, *args, seed=SEED, checkpoint=every3, checkpoint_every=3, **start, **kw)
    mine = fd.rank_path(every4, rank, world)
    results["generations"] = [torch.load(f, weights_only=False)["steps_done"] for f in (mine, mine + ".prev")]
    # rank 1 as if it died before writing step 8: the ranks resume from step 4, the newest common one
    lagging = os.path.join(out_dir, "lagging")
    shutil.copy(mine, fd.rank_path(lagging, rank, world) + ".prev")
    shutil.copy(mine + (".prev" if rank == 1 else ""), fd.rank_path(lagging, rank, world))
    results["pc-lagging-resumed"] = fd.sample_sharded(
        sampler, *args, seed=SEED, gather="all", resume=lagging, **start, **kw
    )
    # files of two runs (steps {8, 4} on rank 0, {6, 3} on rank 1): no common step, refused
    mixed = os.path.join(out_dir, "mixed")
    src = fd.rank_path(every4 if rank == 0 else every3, rank, world)
    for suffix in ("", ".prev"):
        shutil.copy(src + suffix, fd.rank_path(mixed, rank, world) + suffix)
    try:
        fd.sample_sharded(sampler, *args, seed=SEED, resume=mixed, **start, **kw)
        results["mixed-steps"] = "no error"
    except ValueError as e:
        results["mixed-steps"] = str(e)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.fixture(scope="module")
def ckpt_jobs(tmp_path_factory):
    killed = tmp_path_factory.mktemp("killed")
    t0 = time.monotonic()
    codes = launch_killed(_killed_ckpt_job, 2, killed, str(killed), deadline_s=120)
    print(f"2-process killed job: {time.monotonic() - t0:.1f} s")
    out = tmp_path_factory.mktemp("resumed")
    wall = launch(_resume_ckpt_job, 2, out, str(killed), str(out), deadline_s=120)
    print(f"2-process resume job: {wall:.1f} s")
    return codes, killed, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def _ckpt_one_process(name):
    sampler, args, start, kw = ckpt_cases()[name]
    return sampler(*args, generator=gen(SEED), **start, **kw)


@pytest.mark.parametrize("name,steps", [("langevin", [4, 8]), ("pc", [4, 4])])
def test_sharded_run_killed_and_resumed_is_bitwise_the_uninterrupted_run(ckpt_jobs, name, steps):
    codes, killed, results = ckpt_jobs
    assert codes == [-signal.SIGKILL] * 2
    files = [fd.rank_path(killed / name, r, 2) for r in range(2)]
    assert [torch.load(f, weights_only=False)["steps_done"] for f in files] == steps  # each rank its own file
    assert {tuple(torch.load(f, weights_only=False)["fingerprint"]["rows"]) for f in files} == {(0, 4), (4, 7)}
    want = _ckpt_one_process(name)
    for r in results:  # gather="all": the whole batch on each rank
        assert torch.equal(r[name], want)  # the uninterrupted sharded run (= the one-process run)
        assert torch.equal(r[name + "-resumed"], r[name])


def test_sharded_checkpoint_of_another_call_or_steps_is_refused(ckpt_jobs):
    _, _, results = ckpt_jobs
    for r in results:
        assert "step_size differ" in r["other-call"] and "checkpoint 0.05, this call 0.06" in r["other-call"]
        assert "no common step (rank 0: [8, 4], rank 1: [6, 3])" in r["mixed-steps"]


def test_coupled_sharded_run_resumes_from_the_newest_common_step(ckpt_jobs):
    _, _, results = ckpt_jobs
    for r in results:
        assert r["generations"] == [8, 4]  # rows coupled at every step: two generations kept
        assert torch.equal(r["pc-lagging-resumed"], r["pc"])


def test_sharded_resume_on_another_world_size_is_refused(ckpt_jobs, tmp_path):
    _, killed, _ = ckpt_jobs
    sampler, args, start, kw = ckpt_cases()["langevin"]
    with pytest.raises(ValueError, match=r"world size 2 .*this run has world size 1"):
        fd.sample_sharded(sampler, *args, seed=SEED, resume=killed / "langevin", **start, **kw)
    # a file renamed onto another world size is refused by its fingerprint
    shutil.copy(fd.rank_path(killed / "langevin", 0, 2), fd.rank_path(tmp_path / "renamed", 0, 1))
    with pytest.raises(ValueError, match=r"rows, world_size, x0 differ.*world_size: checkpoint 2, this call 1"):
        fd.sample_sharded(sampler, *args, seed=SEED, resume=tmp_path / "renamed", **start, **kw)


def test_one_process_sharded_checkpoint_resumes_bitwise(tmp_path):
    sampler, args, start, kw = ckpt_cases()["langevin"]
    path = tmp_path / "c"
    whole = fd.sample_sharded(sampler, *args, seed=SEED, checkpoint=path, checkpoint_every=5, **start, **kw)
    assert sorted(os.listdir(tmp_path)) == ["c.rank0-of-1"]
    assert torch.equal(fd.sample_sharded(sampler, *args, seed=SEED, resume=path, **start, **kw), whole)
    with pytest.raises(FileNotFoundError, match="no checkpoint file for rank 0 of 1"):
        fd.sample_sharded(sampler, *args, seed=SEED, resume=tmp_path / "missing", **start, **kw)
