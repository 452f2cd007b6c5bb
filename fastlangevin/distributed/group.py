"""The process group: joining it from torchrun's environment, this rank's place in it, and the
few small collectives the package makes (each inside :func:`~.errors.collective`).

``rank_and_world(group) -> (rank, world)``; ``(0, 1)`` without torch.distributed, so every
helper here runs as one process then. Collectives take tensors on the group's device (the
current GPU for NCCL, else the CPU) and return them on the caller's device.
"""

from __future__ import annotations

import datetime
import os
from typing import List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from .errors import collective

_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def init_from_env(*, backend: Optional[str] = None, timeout_s: float = 300.0) -> Tuple[int, int, torch.device]:
    """``init_process_group`` from torchrun's environment, with a bounded collective timeout.

    Backend: "nccl" when CUDA is available (each rank on ``cuda:LOCAL_RANK``), else "gloo" on the
    CPU. ``timeout_s`` bounds every collective: a rank that never joins a collective makes the
    others raise after that long instead of hanging (NCCL enforces it only with
    ``TORCH_NCCL_ASYNC_ERROR_HANDLING``, the default in torch >= 2.2).

    Returns ``(rank, world_size, device)``. A no-op (returning the current values) when the
    default group is already initialised.
    """
    if not isinstance(timeout_s, (int, float)) or isinstance(timeout_s, bool) or not timeout_s > 0:
        raise ValueError(f"timeout_s must be a number of seconds > 0, got {timeout_s!r}")
    use_cuda = torch.cuda.is_available() and backend in (None, "nccl")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        missing = [k for k in _TORCHRUN_ENV if k not in os.environ]
        if missing:
            raise RuntimeError(
                f"init_from_env needs torchrun's environment variables; missing {', '.join(missing)} "
                "(launch with torchrun)"
            )
        dist.init_process_group(
            backend or ("nccl" if use_cuda else "gloo"), timeout=datetime.timedelta(seconds=timeout_s)
        )
    return dist.get_rank(), dist.get_world_size(), device


def rank_and_world(group=None) -> Tuple[int, int]:
    """This process's rank in ``group`` and the group's size; ``(0, 1)`` when torch.distributed
    is not initialised (everything here then runs as one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        if group is not None:
            raise RuntimeError(
                "group was given but torch.distributed is not initialised (call init_process_group first)"
            )
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def comm_device(group) -> torch.device:
    """Device the group's collectives take tensors on: the current GPU for NCCL, else the CPU."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def global_rank(group, rank: int) -> int:
    """``rank`` of ``group`` as a rank of the world (what ``broadcast``/``gather`` take)."""
    return dist.get_global_rank(group, rank) if group is not None else rank


def broadcast(t: torch.Tensor, src: int, group) -> torch.Tensor:
    """Rank ``src``'s ``t`` on every rank (a copy on ``t``'s device)."""
    buf = t.to(comm_device(group)).contiguous()
    with collective("broadcast"):
        dist.broadcast(buf, src=global_rank(group, src), group=group)
    return buf.to(t.device)


def all_ints(values: Sequence[int], group) -> List[List[int]]:
    """All-gather a short list of ints (same length on every rank); one list per rank."""
    _, world = rank_and_world(group)
    t = torch.tensor(list(values), dtype=torch.int64, device=comm_device(group))
    parts = [torch.empty_like(t) for _ in range(world)]
    with collective("all_gather of ints"):
        dist.all_gather(parts, t, group=group)
    return [p.tolist() for p in parts]
