"""Checkpoint/resume of a sharded run: one file per rank, resumed on the same world size.

``sample_sharded(..., checkpoint=PATH, checkpoint_every=k)`` has rank r of W write its shard's run
state to ``PATH.rank{r}-of-{W}`` (the sampler's own checkpoint, :mod:`fastlangevin.sampling.checkpoint`:
atomic, fingerprinted); ``resume=PATH`` has every rank resume its own shard from its file. The
world size, the rank and the shard's rows ``[start, stop)`` join the fingerprint, so a file
renamed onto another rank or world size is still refused. Resuming on another world size is a
ValueError naming both sizes (the shards would be other rows).

Ranks write their files independently (no collective per write), so after a crash the ranks'
files may hold different steps. Ranks whose rows are independent resume each from its own step
and the gathered result is still bitwise the uninterrupted run's. A sampler that couples the rows
by a per-step collective (its ``gather_hook``: ``pc_sample``'s batch-averaged corrector norms)
needs every rank at the same step. Its ranks keep two generations (the replaced file as
``PATH.rank{r}-of-{W}.prev``, :func:`fastlangevin.sampling.checkpoint.keep_previous`); the
per-step collective keeps the ranks within one step of each other, hence within one checkpoint
generation, so the newest step that every rank holds in one of its two files always exists after a
crash: on resume the ranks all-gather their files' steps and each resumes from its file of that
step. If there is none (files from different runs), the resume is refused naming each rank's steps.
A sampler declaring a ``gather_hook`` counts as coupled even in a call that never uses it
(``pc_sample`` with ``corrector="none"``): its resume needs a common step all the same.
"""

from __future__ import annotations

import glob
import os
import re

import torch

from ..sampling.checkpoint import PREVIOUS
from .group import all_ints, rank_and_world

_RANK_FILE = re.compile(r"\.rank(\d+)-of-(\d+)$")


def rank_path(path, rank: int, world: int) -> str:
    """The file of rank ``rank`` of ``world`` for the checkpoint path ``path``."""
    return f"{os.fspath(path)}.rank{rank}-of-{world}"


def _written_world_sizes(path: str) -> list:
    sizes = set()
    for name in glob.glob(glob.escape(path) + ".rank*-of-*"):
        m = _RANK_FILE.search(name)
        if m is not None:
            sizes.add(int(m.group(2)))
    return sorted(sizes)


def resume_path(path, rank: int, world: int) -> str:
    """This rank's file of the checkpoint ``path``; a ValueError naming both world sizes when the
    files there were written on another world size, FileNotFoundError when there are none."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"resume must be a path (str or os.PathLike) or None, got {type(path).__name__}")
    path = os.fspath(path)
    mine = rank_path(path, rank, world)
    if os.path.isfile(mine):
        return mine
    others = [w for w in _written_world_sizes(path) if w != world]
    if others:
        sizes = " and ".join(str(w) for w in others)
        raise ValueError(
            f"resume={path!r} was written by a sharded run on world size {sizes} (files {path}.rank*-of-{others[0]}); "
            f"this run has world size {world}: resume it on the same world size"
        )
    raise FileNotFoundError(f"resume={path!r}: no checkpoint file for rank {rank} of {world} ({mine})")


def per_rank_files(call: dict, rank: int, world: int) -> None:
    """Point the sampler call's ``checkpoint=`` / ``resume=`` at this rank's files (in place)."""
    if call.get("checkpoint") is not None:
        if not isinstance(call["checkpoint"], (str, os.PathLike)):
            got = type(call["checkpoint"]).__name__
            raise TypeError(f"checkpoint must be a path (str or os.PathLike) or None, got {got}")
        call["checkpoint"] = rank_path(call["checkpoint"], rank, world)
    if call.get("resume") is not None:
        call["resume"] = resume_path(call["resume"], rank, world)


def _steps_done(path: str) -> int:
    """The step a checkpoint file holds; -1 when it is missing or unreadable (the sampler's own
    resume then says why, when that file is the one chosen)."""
    if not os.path.isfile(path):
        return -1
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["steps_done"])
    except Exception:
        return -1


def common_step_file(resume_file: str, group) -> str:
    """This rank's file (``resume_file`` or its ``.prev``) of the newest step every rank holds in
    one of its two files (a collective); a ValueError naming the ranks' steps when there is none."""
    files = (resume_file, resume_file + PREVIOUS)
    held = all_ints([_steps_done(f) for f in files], group)  # [[latest, previous] per rank]
    common = set.intersection(*({s for s in steps if s >= 0} for steps in held))
    if not common:
        by_rank = ", ".join(f"rank {r}: {[s for s in steps if s >= 0]}" for r, steps in enumerate(held))
        raise ValueError(
            f"the ranks' checkpoint files hold no common step ({by_rank}): this sampler couples the shards' "
            "rows at every step (a collective per step), so every rank must resume from the same step; "
            "restart the run, or resume from files of one run"
        )
    step = max(common)
    mine = held[rank_and_world(group)[0]]
    return files[mine.index(step)]
