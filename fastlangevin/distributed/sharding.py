"""Contiguous shards of a global batch: which rows a rank owns, and putting the rows back.

Rank ``r`` of ``W`` owns global rows ``[start, stop) = shard_range(B, r, W)``: contiguous, in
rank order, sizes differing by at most one (the first ``B % W`` ranks get one more row), every
rank at least one row (``B >= W``). A rank samples or trains on its rows with
``sample_offset=start``, so its noise is that of those rows of the whole batch.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.distributed as dist

from .errors import collective
from .group import comm_device, global_rank, rank_and_world


def shard_range(batch: int, rank: int, world_size: int) -> Tuple[int, int]:
    """Global rows ``[start, stop)`` of ``rank``'s shard of a ``batch``-row batch.

    Contiguous, in rank order, sizes differing by at most one (the first ``batch % world_size``
    ranks get one more row). Every rank gets at least one row: ``batch >= world_size``.
    """
    for name, v in (("batch", batch), ("rank", rank), ("world_size", world_size)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need world_size >= 1 and 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if batch < world_size:
        raise ValueError(f"batch ({batch}) must be >= world_size ({world_size}): every rank samples at least one row")
    base, extra = divmod(batch, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard(t: torch.Tensor, group=None) -> torch.Tensor:
    """This rank's rows of a global ``[B, ...]`` tensor (a view): ``t[start:stop]``."""
    if not isinstance(t, torch.Tensor) or t.dim() < 1:
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise TypeError(f"t must be a tensor with a batch dim, got {got}")
    rank, world = rank_and_world(group)
    start, stop = shard_range(t.shape[0], rank, world)
    return t[start:stop]


def shard_weight(batch: int, group=None) -> float:
    """``world_size · b_r / batch``: multiply this rank's batch-mean loss by it before ``backward``
    so that DistributedDataParallel's gradient *average* over ranks is the gradient of the whole
    batch's mean loss even when the shards differ in size (1.0 when they are equal)::

        loss = fl.dsm_loss(model, x[start:stop], sigma[start:stop], generator=g, sample_offset=start)
        (loss * shard_weight(B)).backward()      # DDP: mean over ranks of the weighted grads
    """
    rank, world = rank_and_world(group)
    start, stop = shard_range(batch, rank, world)
    return world * (stop - start) / batch


def gather_rows(t: torch.Tensor, batch: int, *, group=None, dst: Optional[int] = 0) -> Optional[torch.Tensor]:
    """Concatenate the ranks' shards ``[b_r, ...]`` (from :func:`shard_range`) into ``[batch, ...]``.

    ``dst=None``: every rank gets the whole batch (all-gather); ``dst=k``: rank k gets it, the
    others get ``None``. Shards may differ in size by one row (they are padded for the
    collective and trimmed). A collective: every rank of ``group`` must call it.
    """
    rank, world = rank_and_world(group)
    start, stop = shard_range(batch, rank, world)
    if not isinstance(t, torch.Tensor) or t.dim() < 1 or t.shape[0] != stop - start:
        got = f"{t.shape[0] if t.dim() else 0} rows" if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"rank {rank}: shard has {got}, expected {stop - start} (rows {start}:{stop} of {batch})")
    if world == 1:
        return t if dst is None or dst == 0 else None
    width = -(-batch // world)  # ceil: the largest shard
    buf = t.detach().to(comm_device(group)).contiguous()
    if buf.shape[0] < width:
        buf = torch.cat([buf, buf.new_zeros((width - buf.shape[0],) + tuple(buf.shape[1:]))])
    parts = [torch.empty_like(buf) for _ in range(world)] if dst is None or rank == dst else None
    with collective("all_gather of rows" if dst is None else "gather of rows"):
        if dst is None:
            dist.all_gather(parts, buf, group=group)
        else:
            dist.gather(buf, parts, dst=global_rank(group, dst), group=group)
    if parts is None:
        return None
    rows = [p[: b - a] for p, (a, b) in zip(parts, (shard_range(batch, r, world) for r in range(world)))]
    return torch.cat(rows).to(t.device)
