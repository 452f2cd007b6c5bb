"""fastlangevin.optim under DistributedDataParallel (gloo, 2 CPU processes, replicated parameters).

Every rank builds the optimizer with the same ``seed=``, so every rank draws the same noise for a
replicated parameter: the replicas stay identical, and the run is bitwise the one-process run
whose gradient is the same average of the two half-batch gradients (DDP's allreduce of g/2 sums
to (g0 + g1)/2 exactly). The one-process run is made inside the job (rank 0, after the DDP run,
same thread count) so both sides compute the half-batch gradients alike.
"""

from __future__ import annotations

import os

import pytest
import torch

from fastlangevin.optim import SGHMC, SGLD, pSGLD

from .dist_harness import launch

STEPS, BATCH, SEED = 5, 8, 2024
OPTS = {"sgld": SGLD, "psgld": pSGLD, "sghmc": SGHMC}


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _data(step):
    g = torch.Generator().manual_seed(100 + step)  # the same global batch on every rank
    x = torch.randn(BATCH, 3, generator=g)
    return x, x.sum(1, keepdim=True).sin()


def _optimizer(name, params):
    return OPTS[name](params, lr=1e-3, num_data=64, prior_precision=1.0, seed=SEED, backend="torch")


def _half_loss(model, step, half):
    x, y = _data(step)
    sl = slice(half * BATCH // 2, (half + 1) * BATCH // 2)
    return ((model(x[sl]) - y[sl]) ** 2).mean()


def _job(rank, world, out_dir):
    from torch.nn.parallel import DistributedDataParallel as DDP

    results = {}
    for name in OPTS:
        ddp = DDP(_model())
        opt = _optimizer(name, ddp.parameters())
        for k in range(STEPS):
            opt.zero_grad()
            _half_loss(ddp, k, rank).backward()
            opt.step()
        results[name] = [p.detach().clone() for p in ddp.module.parameters()]
        if rank == 0:  # the one-process run: the average of the two half-batch gradients
            model = _model()
            opt = _optimizer(name, model.parameters())
            for k in range(STEPS):
                grads = []
                for half in range(2):
                    model.zero_grad()
                    _half_loss(model, k, half).backward()
                    grads.append([p.grad.clone() for p in model.parameters()])
                for p, g0, g1 in zip(model.parameters(), *grads):
                    p.grad = (g0 + g1) / 2
                opt.step()
            results[name + "-one"] = [p.detach().clone() for p in model.parameters()]
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("optim-ddp")
    launch(_job, 2, out, str(out), deadline_s=90)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("name", list(OPTS))
def test_ddp_replicas_identical_and_equal_one_process(ddp_results, name):
    r0, r1 = ddp_results
    init = list(_model().parameters())
    for a, b, one, p0 in zip(r0[name], r1[name], r0[name + "-one"], init):
        assert torch.equal(a, b)  # the replicas drew the same noise
        assert torch.equal(a, one)  # and are the one-process run, bit for bit
        assert not torch.equal(a, p0.detach())  # the run did move
