"""Run a function on W local processes joined in a gloo process group, with a hard deadline.

``launch(fn, world, tmp_path, *args)`` spawns W processes (``torch.multiprocessing``, spawn
start method), each calling ``fn(rank, world, *args)`` after ``init_process_group("gloo")``
with a short collective ``timeout``. It returns when every process exited, raises if one of
them raised (the others are terminated) and kills them all if the deadline passes: a test can
never hang. Workers exchange results with the test through files (``torch.save``).

``launch_killed(fn, world, tmp_path, *args)``: the same for jobs whose every process is meant to
die by SIGKILL (the checkpoint/resume tests); it waits for all of them and returns their exit codes.
"""

from __future__ import annotations

import datetime
import gc
import os
import sys
import time

import torch
import torch.multiprocessing as mp


def _entry(rank: int, fn, world: int, init_file: str, pg_timeout_s: float, args) -> None:
    torch.set_num_threads(1)  # 2 shared cores: one thread per worker
    import torch.distributed as dist

    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=pg_timeout_s),
    )
    try:
        fn(rank, world, *args)
    except BaseException:
        dist.destroy_process_group()
        raise
    # Leave together, with every DDP reducer / gloo work object already freed: tearing the
    # group down under live references, or one rank exiting while its peer still talks to it,
    # occasionally aborted a process at exit ("terminate called without an active exception").
    # (A job that deliberately lost its peer cannot barrier: teardown errors are ignored, the
    # job's results are already on disk and its own assertions judge them.)
    gc.collect()
    try:
        dist.barrier()
        dist.destroy_process_group()
    except Exception:
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # results are on disk; skip interpreter teardown (C++ static destructors)


def launch(fn, world: int, tmp_path, *args, pg_timeout_s: float = 20.0, deadline_s: float = 60.0) -> float:
    """Run ``fn(rank, world, *args)`` on ``world`` processes; returns the wall time in seconds."""
    init_file = os.path.join(str(tmp_path), f"pg-init-{time.monotonic_ns()}")
    t0 = time.monotonic()
    ctx = mp.start_processes(
        _entry, args=(fn, world, init_file, pg_timeout_s, args), nprocs=world, join=False, start_method="spawn"
    )
    try:
        while not ctx.join(timeout=0.2):
            if time.monotonic() - t0 > deadline_s:
                name = getattr(fn, "__name__", fn)
                raise TimeoutError(f"{name} on {world} processes still running after {deadline_s:.0f} s (killed)")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
                p.join(5)
    return time.monotonic() - t0


def launch_killed(fn, world: int, tmp_path, *args, pg_timeout_s: float = 20.0, deadline_s: float = 60.0) -> list:
    """Run ``fn(rank, world, *args)`` on ``world`` processes until every one has exited (killed after
    ``deadline_s``); returns their exit codes by rank (``-signal.SIGKILL`` for a process killed so)."""
    init_file = os.path.join(str(tmp_path), f"pg-init-{time.monotonic_ns()}")
    t0 = time.monotonic()
    ctx = mp.start_processes(
        _entry, args=(fn, world, init_file, pg_timeout_s, args), nprocs=world, join=False, start_method="spawn"
    )
    try:
        while any(p.is_alive() for p in ctx.processes):
            if time.monotonic() - t0 > deadline_s:
                name = getattr(fn, "__name__", fn)
                raise TimeoutError(f"{name} on {world} processes still running after {deadline_s:.0f} s (killed)")
            time.sleep(0.1)
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
            p.join(5)
    return [p.exitcode for p in ctx.processes]
