"""Sampling and training across processes with ``torch.distributed`` (launched by ``torchrun``).

Our noise is keyed by the *global* sample index (``sample_offset``): row ``r`` of a shard that
starts at global row ``start`` draws the noise of global row ``start + r``, from the same
per-call seed. So a batch split into contiguous shards, one per rank, with every rank drawing
the same per-call seeds, reproduces the one-process batch sample for sample.

**Contract** (:func:`sample_sharded`): with the same seed, the union of the ranks' shards equals
the same batch sampled in one process by the same sampler, backend and device type:

    sample_sharded(sampler, *args, x0=x0, seed=s, **kw)      # on W ranks, any W <= B
    == sampler(*args, x0=x0, generator=torch.Generator(device).manual_seed(s), **kw)

bitwise, for score functions that treat rows independently with row-wise deterministic
arithmetic (analytic scores, elementwise networks). A network whose kernels round differently
at another batch size (matmul blocking, cuDNN algorithm choice) makes the shards differ from the
one-process run by that rounding only. Batch-averaged corrector norms (``pc_sample``'s default
``corrector_norm="batch"``) couple the rows of a batch: :func:`sample_sharded` all-gathers the
``[b, 2]`` per-row norms of every corrector step (``8·B`` bytes per step and rank), so ε is
the whole batch's and the contract holds for them too.

**Seeds.** Every rank must draw the same sequence of per-call seeds: :func:`synced_generator`
builds one generator per rank with an identical state (from one user ``seed``, or by
broadcasting a generator's state from rank ``src``); the counter's global row index then makes
the ranks' noise distinct. So one seed gives the same samples whatever the world size, and no
rank repeats another's noise.

**Training** (``DistributedDataParallel``): give each rank's :func:`fastlangevin.dsm_loss` the
same synced generator and ``sample_offset=start`` of its shard of the global batch (see
:func:`shard_range`, :func:`shard`): the noise of global row ``i`` is the one a single process
draws for row ``i`` of the whole batch, and DDP's gradient averaging over equal shards gives the
gradient of the global batch's mean loss (``examples/train_ddp.py``).

**Failures.** A rank that raises inside :func:`sample_sharded` (or inside a
:func:`failure_report` block) publishes its error in the process group's store before
re-raising; a rank whose collective then fails (peer gone) or times out (the ``timeout`` of
``init_process_group``) raises :class:`RankFailedError` naming the failed rank and its error.
No rank waits longer than the process group's timeout.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

GATHER_MODES = ("dst", "all", "none")

#: Per-sample keyword arguments of our samplers (a ``[B]`` tensor there is sliced to the shard).
PER_SAMPLE_KWARGS = ("step_size", "noise_scale", "step_lr", "snr")

_SEED_HIGH = 1 << 62
_FAILURE_KEY = "fastlangevin/failure/{}"
_calls = [0]  # collective calls so far in this process (same count on every rank)


# ---------------------------------------------------------------------------------------
# Process group
# ---------------------------------------------------------------------------------------
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
        missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise RuntimeError(
                f"init_from_env needs torchrun's environment variables; missing {', '.join(missing)} (launch with torchrun)"
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


def _comm_device(group) -> torch.device:
    """Device the group's collectives take tensors on: the current GPU for NCCL, else the CPU."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------
# Shards
# ---------------------------------------------------------------------------------------
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
        raise TypeError(
            f"t must be a tensor with a batch dim, got {type(t).__name__ if not isinstance(t, torch.Tensor) else tuple(t.shape)}"
        )
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
    if t.shape[0] != stop - start:
        raise ValueError(
            f"rank {rank}: shard has {t.shape[0]} rows, expected {stop - start} (rows {start}:{stop} of {batch})"
        )
    if world == 1:
        return t if dst is None or dst == 0 else None
    width = -(-batch // world)  # ceil: the largest shard
    dev = _comm_device(group)
    buf = t.detach().to(dev).contiguous()
    if buf.shape[0] < width:
        buf = torch.cat([buf, buf.new_zeros((width - buf.shape[0],) + tuple(buf.shape[1:]))])
    parts = [torch.empty_like(buf) for _ in range(world)] if dst is None or rank == dst else None
    if dst is None:
        dist.all_gather(parts, buf, group=group)
    else:
        dist.gather(buf, parts, dst=dist.get_global_rank(group, dst) if group is not None else dst, group=group)
        if rank != dst:
            return None
    rows = [p[: b - a] for p, (a, b) in zip(parts, (shard_range(batch, r, world) for r in range(world)))]
    return torch.cat(rows).to(t.device)


def _broadcast(t: torch.Tensor, src: int, group) -> torch.Tensor:
    dev = _comm_device(group)
    buf = t.to(dev).contiguous()
    dist.broadcast(buf, src=dist.get_global_rank(group, src) if group is not None else src, group=group)
    return buf.to(t.device)


# ---------------------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------------------
def synced_generator(
    device, *, seed: Optional[int] = None, generator: Optional[torch.Generator] = None, group=None, src: int = 0
) -> torch.Generator:
    """A generator on ``device`` with the same state on every rank of ``group``.

    * ``seed``: a fresh generator seeded with it on every rank (the ranks' seeds are checked to
      agree: a ValueError on every rank otherwise);
    * ``generator``: its state is broadcast from rank ``src`` and set on every rank (the same
      object is returned, now in step with rank ``src``'s);
    * neither: rank ``src`` draws a seed from its default CPU generator (so
      ``torch.manual_seed`` on rank ``src`` governs it) and broadcasts it.

    A collective when the group has more than one rank.
    """
    if seed is not None and generator is not None:
        raise ValueError("pass seed or generator, not both")
    device = torch.device(device)
    rank, world = rank_and_world(group)
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != device.type:
            raise ValueError(f"generator is on {generator.device.type}, the samples on {device.type}")
        if world > 1:
            state = generator.get_state()
            generator.set_state(_broadcast(state, src, group).to(state.device))
        return generator
    if seed is None:
        drawn = torch.randint(0, _SEED_HIGH, (1,), dtype=torch.int64)
        seed = int(_broadcast(drawn, src, group).item()) if world > 1 else int(drawn.item())
    elif isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    elif world > 1:
        seeds = _all_ints([seed], group)
        if any(s != seeds[0] for s in seeds):
            raise ValueError(
                f"seed must be the same on every rank (one seed for the whole batch), got {[s[0] for s in seeds]} by rank"
            )
    return torch.Generator(device=device).manual_seed(seed)


def _all_ints(values: Sequence[int], group) -> List[List[int]]:
    """All-gather a short list of ints (same length on every rank); one list per rank."""
    _, world = rank_and_world(group)
    t = torch.tensor(list(values), dtype=torch.int64, device=_comm_device(group))
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t, group=group)
    return [p.tolist() for p in parts]


# ---------------------------------------------------------------------------------------
# Failures
# ---------------------------------------------------------------------------------------
class RankFailedError(RuntimeError):
    """Another rank failed (or stopped answering) during a collective run; ``failed_rank`` is the
    rank that reported the failure (None when none did: it died or hung without reporting)."""

    def __init__(self, message: str, failed_rank: Optional[int] = None):
        super().__init__(message)
        self.failed_rank = failed_rank


def _store():
    try:
        return dist.distributed_c10d._get_default_store()
    except Exception:  # private API, or no store: failures are then reported without the cause
        return None


@contextlib.contextmanager
def failure_report(what: str = "run", group=None) -> Iterator[None]:
    """Make a failure on one rank a clear error on every rank.

    Inside the block, an error of this rank's own (not a failed collective) is published in the
    process group's store (``"rank R: Type: message"``; the first report of the block wins) and
    re-raised unchanged. A failed collective (the peer exited, or stopped answering until the
    timeout) is raised as :class:`RankFailedError` naming the rank that reported a failure and
    its error (or saying that none did), chained to the collective's error. The wait is bounded by ``init_process_group``'s
    ``timeout``. Every rank must enter the block the same number of times (it numbers reports).
    Outside torch.distributed it does nothing.
    """
    rank, world = rank_and_world(group)
    if world == 1:
        yield
        return
    _calls[0] += 1
    key = _FAILURE_KEY.format(_calls[0])
    store = _store()
    try:
        yield
    except Exception as exc:
        if not _looks_like_peer_failure(exc):  # this rank's own error: report it, raise it unchanged
            if store is not None:
                with contextlib.suppress(Exception):
                    store.compare_set(key, "", f"rank {rank}: {type(exc).__name__}: {_first_line(exc)}")
            raise
        other = _read_report(store, key)
        if other is not None:
            failed = int(other.split(":", 1)[0].split()[1])
            raise RankFailedError(
                f"fastlangevin.distributed {what}: rank {rank} stopped because rank {failed} failed: {other} "
                f"(this rank's collective error: {type(exc).__name__}: {_first_line(exc)})",
                failed,
            ) from exc
        raise RankFailedError(
            f"fastlangevin.distributed {what}: rank {rank}: a collective failed ({type(exc).__name__}: {_first_line(exc)}); "
            "another rank exited, crashed or stopped answering without reporting an error (see its log)",
            None,
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else "")[:500]


def _read_report(store, key: str) -> Optional[str]:
    if store is None:
        return None
    with contextlib.suppress(Exception):
        if store.check([key]):
            return store.get(key).decode("utf-8", "replace")
    return None


def _looks_like_peer_failure(exc: BaseException) -> bool:
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc).lower()
    # gloo raises plain RuntimeErrors; their messages name the transport ("gloo/transport/tcp/...")
    return isinstance(exc, RuntimeError) and any(k in text for k in _PEER_FAILURE_MARKERS)


_PEER_FAILURE_MARKERS = (
    "connection closed by peer",
    "connection reset",
    "timed out waiting",
    "gloo/transport",
    "nccl",
    "broken pipe",
    "watchdog",
)


# ---------------------------------------------------------------------------------------
# Sharded sampling
# ---------------------------------------------------------------------------------------
def sample_sharded(
    sampler: Callable[..., Any],
    *args,
    x0=None,
    shape: Optional[Sequence[int]] = None,
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    group=None,
    gather: str = "dst",
    dst: int = 0,
    per_sample_kwargs: Sequence[str] = PER_SAMPLE_KWARGS,
    **kwargs,
):
    """Run ``sampler`` on a batch sharded across the ranks of ``group``; every rank calls it.

    Each rank samples its contiguous shard (rows ``shard_range(B, rank, world)``) with
    ``sample_offset=start`` and a generator whose state is the same on every rank, so the union of
    the shards equals ``sampler(*args, x0=x0, generator=torch.Generator(device).manual_seed(seed),
    **kwargs)`` run on the whole batch in one process, sample for sample (same backend and device
    type; see the module docstring for the exact conditions).

    Args:
        sampler: :func:`fastlangevin.langevin`, :func:`~fastlangevin.annealed_langevin`,
            :func:`~fastlangevin.pc_sample`, :func:`~fastlangevin.mala`, or any function with
            their ``x0=`` / ``generator=`` / ``sample_offset=`` keywords returning a ``[b, ...]``
            tensor or a tuple of them (all per-sample).
        *args: the sampler's positional arguments before ``x0`` (``score_fn``; ``score_fn, sde``
            for ``pc_sample``); pass the rest (``sigmas``, ...) as keywords.
        x0: the whole batch's start ``[B, ...]`` (the same on every rank; each rank uses its rows),
            or a callable ``x0(start, stop) -> [stop - start, ...]`` that builds a shard (no rank
            then holds the whole batch).
        shape: instead of ``x0``, for ``pc_sample``: the whole batch's shape; each rank draws its
            rows of the prior with the global row index.
        seed: one seed for the whole batch (an int, the same on every rank). Or ``generator``:
            its state is broadcast from rank ``dst`` and set on every rank. Neither: rank ``dst``
            draws a seed from its default generator (see :func:`synced_generator`).
        group: process group (default: the world; one process when torch.distributed is not
            initialised).
        gather: "dst" (default) — rank ``dst`` returns the whole batch, the others ``None``;
            "all" — every rank returns the whole batch; "none" — every rank returns its own
            shard (save it with :func:`save_shard`).
        per_sample_kwargs: keyword arguments whose ``[B]`` tensors are sliced to the shard
            (default: ``step_size``, ``noise_scale``, ``step_lr``, ``snr``).
        **kwargs: the sampler's other options (``n_steps``, ``backend``, ...). ``callback`` and
            ``trace`` see this rank's shard.

    ``pc_sample`` with ``corrector_norm="batch"``: the corrector's per-row norms are all-gathered
    at every corrector step (see the module docstring), so that run is a collective per step.
    A rank that fails makes every rank raise (:func:`failure_report`).
    """
    if not callable(sampler):
        raise TypeError(f"sampler must be callable, got {type(sampler).__name__}")
    if gather not in GATHER_MODES:
        raise ValueError(f"gather must be one of {', '.join(map(repr, GATHER_MODES))}, got {gather!r}")
    for name in ("sample_offset",):
        if name in kwargs:
            raise ValueError(f"{name} is set by sample_sharded (each rank's shard start); do not pass it")
    if (x0 is None) == (shape is None):
        raise ValueError(
            "pass exactly one of x0 (the whole batch's start, or a callable building a shard) and shape (pc_sample's prior)"
        )
    rank, world = rank_and_world(group)
    if not 0 <= dst < world:
        raise ValueError(f"dst must be a rank in [0, {world}), got {dst}")

    if shape is not None:
        shape = tuple(int(d) for d in shape)
        if len(shape) < 1:
            raise ValueError(f"shape must have a batch dim, got {shape}")
        batch = shape[0]
        device = torch.device(kwargs.get("device") or "cpu")
    elif isinstance(x0, torch.Tensor):
        if x0.dim() < 1:
            raise ValueError(f"x0 must have a batch dim (dim 0), got shape {tuple(x0.shape)}")
        batch, device = x0.shape[0], x0.device
    elif callable(x0):
        batch = kwargs.pop("batch", None)
        if isinstance(batch, bool) or not isinstance(batch, int):
            raise ValueError("with a callable x0, pass batch=B (the whole batch's size) as a keyword")
        device = None
    else:
        raise TypeError(f"x0 must be a tensor or a callable (start, stop) -> shard, got {type(x0).__name__}")

    with failure_report(getattr(sampler, "__name__", "sampler"), group):
        if world > 1:  # every rank must agree on the batch size (a mismatch would misalign shards)
            sizes = [v[0] for v in _all_ints([batch], group)]
            if any(b != sizes[0] for b in sizes):
                raise ValueError(f"the whole batch must have the same size on every rank, got {sizes} by rank")
        start, stop = shard_range(batch, rank, world)
        if callable(x0) and not isinstance(x0, torch.Tensor):
            local = x0(start, stop)
            if not isinstance(local, torch.Tensor) or local.dim() < 1 or local.shape[0] != stop - start:
                got = tuple(local.shape) if isinstance(local, torch.Tensor) else type(local).__name__
                raise ValueError(f"x0({start}, {stop}) must return a [{stop - start}, ...] tensor, got {got}")
            device = local.device
        elif x0 is not None:
            local = x0[start:stop]
        gen = synced_generator(device, seed=seed, generator=generator, group=group, src=dst)

        call = dict(kwargs)
        for name in per_sample_kwargs:
            v = call.get(name)
            if isinstance(v, torch.Tensor) and v.dim() == 1 and v.shape[0] == batch:
                call[name] = v[start:stop]
        if shape is not None:
            call["shape"] = (stop - start,) + shape[1:]
        else:
            call["x0"] = local
        if world > 1 and _accepts(sampler, "corrector_gather_norms") and "corrector_gather_norms" not in call:
            call["corrector_gather_norms"] = lambda norms: gather_rows(norms, batch, group=group, dst=None)
        out = sampler(*args, generator=gen, sample_offset=start, **call)

        if gather == "none":
            return out
        root = None if gather == "all" else dst
        if isinstance(out, tuple):
            parts = tuple(gather_rows(o, batch, group=group, dst=root) for o in out)
            return None if root is not None and rank != root else parts
        return gather_rows(out, batch, group=group, dst=root)


def _accepts(fn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------------------------------
# Shards on disk
# ---------------------------------------------------------------------------------------
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
    torch.save(
        {
            "start": start,
            "stop": stop,
            "batch": batch,
            "world_size": world,
            "samples": tuple(p.detach().cpu() for p in parts),
            "tuple": isinstance(samples, tuple),
        },
        path + ".tmp",
    )
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
                f"shards in {directory} do not tile rows 0..{batch}: expected a shard starting at row {pos}, got rows {r['start']}:{r['stop']} of {r['batch']}"
            )
        pos = r["stop"]
    if pos != batch:
        raise ValueError(f"shards in {directory} cover rows 0..{pos} of {batch}: a rank's shard is missing")
    parts = tuple(torch.cat([r["samples"][k] for r in recs]) for k in range(len(recs[0]["samples"])))
    return parts if recs[0]["tuple"] else parts[0]


__all__ = [
    "GATHER_MODES",
    "PER_SAMPLE_KWARGS",
    "RankFailedError",
    "failure_report",
    "gather_rows",
    "init_from_env",
    "load_shards",
    "rank_and_world",
    "sample_sharded",
    "save_shard",
    "shard",
    "shard_range",
    "shard_weight",
    "synced_generator",
]
