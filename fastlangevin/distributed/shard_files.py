"""Shards on disk: each rank writes its rows with their global position; one reader puts the
batch back together and checks that the rows are all there, once each.

``save_shard(dir, samples, batch=B)`` writes ``dir/shard-RRRRR.pt`` = ``{"start", "stop",
"batch", "world_size", "samples": tuple of CPU tensors, "tuple": bool}`` atomically;
``load_shards(dir)`` concatenates them by ``start`` into ``[B, ...]`` (a tuple of them when a tuple was
saved).
"""

from __future__ import annotations

import os

import torch

from .group import rank_and_world
from .sharding import shard_range


def save_shard(directory: str, samples, *, batch: int, group=None) -> str:
    """Write this rank's shard (a tensor or tuple of tensors) to ``directory/shard-RRRRR.pt``
    with its global rows; returns the path. Not a collective (each rank writes its own file)."""
    rank, world = rank_and_world(group)
    start, stop = shard_range(batch, rank, world)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"shard-{rank:05d}.pt")
    parts = samples if isinstance(samples, tuple) else (samples,)
    for p in parts:
        if not isinstance(p, torch.Tensor) or p.shape[:1] != (stop - start,):
            raise ValueError(
                f"samples must be this rank's [{stop - start}, ...] shard (rows {start}:{stop} of {batch})"
            )
    record = {
        "start": start,
        "stop": stop,
        "batch": batch,
        "world_size": world,
        "samples": tuple(p.detach().cpu() for p in parts),
        "tuple": isinstance(samples, tuple),
    }
    torch.save(record, path + ".tmp")
    os.replace(path + ".tmp", path)  # a reader never sees a half-written shard
    return path


def load_shards(directory: str):
    """Concatenate the shards :func:`save_shard` wrote into the whole batch (on the CPU).

    Checks that the shards cover rows ``0..B`` exactly once (a ValueError naming the gap or
    overlap otherwise)."""
    names = sorted(f for f in os.listdir(directory) if f.startswith("shard-") and f.endswith(".pt"))
    if not names:
        raise ValueError(f"no shard-*.pt files in {directory}")
    recs = sorted((torch.load(os.path.join(directory, f), weights_only=True) for f in names), key=lambda r: r["start"])
    batch, pos = recs[0]["batch"], 0
    for r in recs:
        if r["batch"] != batch or r["start"] != pos:
            raise ValueError(
                f"shards in {directory} do not tile rows 0..{batch}: expected a shard starting at row {pos}, "
                f"got rows {r['start']}:{r['stop']} of {r['batch']}"
            )
        pos = r["stop"]
    if pos != batch:
        raise ValueError(f"shards in {directory} cover rows 0..{pos} of {batch}: a rank's shard is missing")
    parts = tuple(torch.cat([r["samples"][k] for r in recs]) for k in range(len(recs[0]["samples"])))
    return parts if recs[0]["tuple"] else parts[0]
