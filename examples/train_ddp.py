"""Toy data-parallel training with the fused DSM loss, then sharded annealed Langevin sampling.

One node, 2 processes (CPU: gloo; GPUs: NCCL, one GPU per process):

    torchrun --standalone --nproc-per-node 2 examples/train_ddp.py --steps 600

Several nodes (run on each node; node_rank 0..N-1, the first node's address as the endpoint):

    torchrun --nnodes 2 --nproc-per-node 8 --node-rank $NODE_RANK \\
        --rdzv-backend c10d --rdzv-endpoint $HEAD_NODE:29500 examples/train_ddp.py

Without torchrun it runs as one process (``python examples/train_ddp.py``). The data is a 2-D
mixture of two Gaussians with weights 0.8 / 0.2 (Song & Ermon's Fig. 3 target). Every rank
draws the same global batch of data and noise levels from a shared generator and keeps its
shard; ``dsm_loss`` draws the noise of its rows by global index (``sample_offset``) from a
generator that is in step on every rank, and DDP averages the gradients. So a run is the same
training, up to floating-point summation order, whatever the number of processes. After
training, the batch of samples is split across the ranks (``sample_sharded``), gathered on rank
0, and the recovered mode weights are printed.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import fastlangevin as fl
from fastlangevin import distributed as fd

MEANS = torch.tensor([[-5.0, -5.0], [5.0, 5.0]])
WEIGHTS = torch.tensor([0.8, 0.2])


def exact_score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """∇ log of the data density convolved with N(0, σ² I) (the yardstick for the trained net)."""
    means, logw = MEANS.to(x.device), WEIGHTS.log().to(x.device)
    var = (1.0 + sigma.to(x.dtype) ** 2)[:, None]
    logits = logw[None] - 0.5 * ((x[:, None, :] - means[None]) ** 2).sum(-1) / var
    return (torch.softmax(logits, 1)[:, :, None] * (means[None] - x[:, None, :])).sum(1) / var


def sample_data(n: int, generator: torch.Generator) -> torch.Tensor:
    k = torch.multinomial(WEIGHTS, n, replacement=True, generator=generator)
    return MEANS[k] + torch.randn(n, 2, generator=generator)


class ScoreNet(torch.nn.Module):
    """s(x, σ) = MLP([x, log σ]) / σ  (the 1/σ output scaling of NCSNv2)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(3, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, 2),
        )

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, sigma.log()[:, None].to(x.dtype)], dim=1)) / sigma[:, None].to(x.dtype)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600, help="optimizer steps")
    p.add_argument("--batch", type=int, default=512, help="global batch (split across ranks)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--samples", type=int, default=2000, help="samples drawn after training (split across ranks)")
    p.add_argument("--sampling-steps", type=int, default=20, help="annealed Langevin steps per noise level")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=["auto", "torch", "triton"], default="auto", help="fastlangevin backend")
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="collective timeout (s): a stuck rank makes the others fail after this",
    )
    p.add_argument("--log-every", type=int, default=50)
    args = p.parse_args(argv)
    backend = None if args.backend == "auto" else args.backend

    launched = "RANK" in os.environ
    if launched:
        rank, world, device = fd.init_from_env(timeout_s=args.timeout)
    else:
        rank, world, device = 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads() // max(1, world)))
    log = print if rank == 0 else (lambda *a, **k: None)

    torch.manual_seed(args.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    net = ScoreNet(args.hidden).to(device)
    model = DDP(net, device_ids=[device.index] if device.type == "cuda" else None) if launched else net
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sigmas = torch.logspace(math.log10(10.0), math.log10(0.1), 10).to(device)
    start, stop = fd.shard_range(args.batch, rank, world)
    data_g = torch.Generator().manual_seed(args.seed + 1)  # the global batch: the same on every rank
    noise_g = fd.synced_generator(device, seed=args.seed + 2)  # dsm_loss's per-call seeds: the same on every rank
    weight = fd.shard_weight(args.batch)  # exact batch mean under DDP's average, even for unequal shards
    log(
        f"world size {world}, device {device}, global batch {args.batch} "
        f"(this rank: rows {start}:{stop}), {args.steps} steps"
    )

    t0 = time.perf_counter()
    with fd.failure_report("training"):
        for step in range(1, args.steps + 1):
            x = sample_data(args.batch, data_g)[start:stop].to(device)
            idx = torch.randint(len(sigmas), (args.batch,), generator=data_g)[start:stop].to(device)
            loss = fl.dsm_loss(model, x, sigmas[idx], generator=noise_g, sample_offset=start, backend=backend)
            opt.zero_grad(set_to_none=True)
            with fd.collective("DDP's gradient all-reduce"):  # a lost peer surfaces here: typed as a collective's
                (loss * weight).backward()
            opt.step()
            if step == 1:
                t0 = time.perf_counter()  # time from step 2: step 1 pays one-off imports and allocations
            if step % args.log_every == 0 or step == args.steps:
                total = loss.detach() * (stop - start) / args.batch  # the global batch's mean loss
                if launched:
                    with fd.collective("all_reduce of the loss"):
                        dist.all_reduce(total)
                log(f"step {step:5d}  dsm loss {total.item():.4f}")
    train_s = time.perf_counter() - t0
    if args.steps > 1:
        log(
            f"training: steps 2..{args.steps} in {train_s:.2f} s, "
            f"{(args.steps - 1) * args.batch / train_s:.0f} examples/s over all ranks"
        )

    net.eval()

    def x0(a: int, b: int) -> torch.Tensor:  # uniform start in [-8, 8]², rows keyed by global index
        u = torch.rand(args.samples, 2, generator=torch.Generator().manual_seed(args.seed + 3))
        return (16 * u[a:b] - 8).to(device)

    kw = dict(
        x0=x0,
        batch=args.samples,
        seed=args.seed + 4,
        sigmas=sigmas,
        n_steps_each=args.sampling_steps,
        step_lr=5e-3,
        backend=backend,
    )
    t0 = time.perf_counter()
    with torch.no_grad():
        out = fd.sample_sharded(fl.annealed_langevin, net, **kw)
    sample_s = time.perf_counter() - t0
    exact = fd.sample_sharded(fl.annealed_langevin, exact_score, **kw)  # same sampler, same noise, exact score
    if rank == 0:
        log(
            f"sampling: {args.samples} samples x {len(sigmas) * args.sampling_steps} steps in {sample_s:.2f} s "
            f"over {world} rank(s)"
        )
        w, w_exact = ((o[:, 0] > 0).float().mean().item() for o in (out, exact))
        log(
            f"weight of the mode at (5, 5): trained net {w:.3f}, exact score {w_exact:.3f} "
            f"(same sampler and noise), data {WEIGHTS[1].item():.3f}"
        )
    if launched:
        # Every rank leaves the group together: rank 0 hosts the store, and a peer still
        # talking to it while it tears down can abort the process at exit.
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
