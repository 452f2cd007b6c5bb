"""``sample_sharded``: one sampler call on a batch split across the ranks, equal to the
one-process call sample for sample (the contract in the package docstring).

Each rank takes rows ``[start, stop) = shard_range(B, rank, W)`` of the start (``x0``, or a
``shape=`` prior), the slices of the per-sample options the sampler declares
(:mod:`.protocol`), a generator in step on every rank and ``sample_offset=start``; the shards'
outputs are then gathered by row.

Checkpoint/resume (``checkpoint=PATH, checkpoint_every=k``, ``resume=PATH``, forwarded to the
sampler): one file per rank, ``PATH.rank{r}-of-{W}``, with the world size, rank and rows in its
fingerprint; resumed on the same world size only (:mod:`.checkpoints`).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch

from ..sampling.checkpoint import fingerprint_extras, keep_previous
from .checkpoints import common_step_file, per_rank_files
from .failures import failure_report
from .group import all_ints, rank_and_world
from .protocol import ShardSpec, check_declaration, sampler_name, sharding_spec
from .seeds import synced_generator
from .sharding import gather_rows, shard_range

GATHER_MODES = ("dst", "all", "none")


def _spec_for(sampler, per_sample_kwargs: Optional[Sequence[str]]) -> ShardSpec:
    spec = sharding_spec(sampler)
    if per_sample_kwargs is None:
        if spec is None:
            name = sampler_name(sampler)
            raise TypeError(
                f"sample_sharded: {name} has no sharding declaration; declare its per-sample keywords once with "
                f"fastlangevin.distributed.register_sharding({name}, per_sample=(...)) "
                "(or pass per_sample_kwargs=(...) to this call)"
            )
        return spec
    if isinstance(per_sample_kwargs, str):
        raise TypeError(f"per_sample_kwargs must be a sequence of keyword names, got the string {per_sample_kwargs!r}")
    base = spec or ShardSpec()
    call_spec = ShardSpec(per_sample=tuple(per_sample_kwargs), shape=base.shape, gather_hook=base.gather_hook)
    check_declaration(sampler, call_spec)
    return call_spec


def _slice_per_sample(call: dict, spec: ShardSpec, batch: int, start: int, stop: int) -> None:
    for name in spec.per_sample:
        v = call.get(name)
        if not isinstance(v, torch.Tensor) or v.dim() == 0:
            continue  # a number or 0-d tensor: the same for every row
        if v.shape[0] != batch:
            raise ValueError(
                f"sample_sharded: {name} is declared per-sample, so its dim 0 must be the batch ({batch} rows), "
                f"got shape {tuple(v.shape)}"
            )
        call[name] = v[start:stop]


def _check_outputs(sampler, out, rows: int) -> tuple:
    parts = out if isinstance(out, tuple) else (out,)
    for k, p in enumerate(parts):
        if not isinstance(p, torch.Tensor) or p.dim() < 1 or p.shape[0] != rows:
            got = tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__
            raise ValueError(
                f"sample_sharded: output {k} of {sampler_name(sampler)} is {got}, not this shard's [{rows}, ...]: "
                "a shardable sampler returns per-sample tensors (or a tuple of them)"
            )
    return parts


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
    per_sample_kwargs: Optional[Sequence[str]] = None,
    **kwargs,
):
    """Run ``sampler`` on a batch sharded across the ranks of ``group``; every rank calls it.

    Each rank samples its contiguous shard (rows ``shard_range(B, rank, world)``) with
    ``sample_offset=start`` and a generator whose state is the same on every rank, so the union of
    the shards equals ``sampler(*args, x0=x0, generator=torch.Generator(device).manual_seed(seed),
    **kwargs)`` run on the whole batch in one process, sample for sample (same backend and device
    type; see the package docstring for the exact conditions).

    Args:
        sampler: :func:`fastlangevin.langevin`, :func:`~fastlangevin.annealed_langevin`,
            :func:`~fastlangevin.pc_sample`, :func:`~fastlangevin.mala`, or any sampler with a
            sharding declaration (:func:`register_sharding`), or a ``functools.partial`` of one.
        *args: the sampler's positional arguments before ``x0`` (``score_fn``; ``score_fn, sde``
            for ``pc_sample``); pass the rest (``sigmas``, ...) as keywords.
        x0: the whole batch's start ``[B, ...]`` (the same on every rank; each rank uses its rows),
            or a callable ``x0(start, stop) -> [stop - start, ...]`` that builds a shard (no rank
            then holds the whole batch).
        shape: instead of ``x0``, for samplers declaring ``shape`` (``pc_sample``): the whole
            batch's shape; each rank draws its rows of the prior with the global row index.
        seed: one seed for the whole batch (an int, the same on every rank). Or ``generator``:
            its state is broadcast from rank ``dst`` and set on every rank. Neither: rank ``dst``
            draws a seed from its default generator (see :func:`synced_generator`).
        group: process group (default: the world; one process when torch.distributed is not
            initialised).
        gather: "dst" (default) — rank ``dst`` returns the whole batch, the others ``None``;
            "all" — every rank returns the whole batch; "none" — every rank returns its own
            shard (save it with :func:`save_shard`).
        per_sample_kwargs: None (default) — the keyword options the sampler's declaration lists as
            per-sample (``[B]`` tensors there are sliced to the shard); a sequence of names
            declares them for this call instead.
        **kwargs: the sampler's other options (``n_steps``, ``backend``, ...). ``callback`` and
            ``trace`` see this rank's shard. ``checkpoint=PATH`` / ``resume=PATH``: each rank
            writes and resumes its own file ``PATH.rank{r}-of-{W}`` (same world size only; see
            :mod:`fastlangevin.distributed.checkpoints`).

    ``pc_sample`` with ``corrector_norm="batch"``: the corrector's per-row norms are all-gathered
    at every corrector step (its declared ``gather_hook``), so that run is a collective per step.
    A rank that fails makes every rank raise (:func:`failure_report`).
    """
    if not callable(sampler):
        raise TypeError(f"sampler must be callable, got {type(sampler).__name__}")
    spec = _spec_for(sampler, per_sample_kwargs)
    if gather not in GATHER_MODES:
        raise ValueError(f"gather must be one of {', '.join(map(repr, GATHER_MODES))}, got {gather!r}")
    if "sample_offset" in kwargs:
        raise ValueError("sample_offset is set by sample_sharded (each rank's shard start); do not pass it")
    if (x0 is None) == (shape is None):
        raise ValueError(
            "pass exactly one of x0 (the whole batch's start, or a callable building a shard) "
            "and shape (pc_sample's prior)"
        )
    if shape is not None and not spec.shape:
        raise ValueError(f"{sampler_name(sampler)} does not declare shape= (its ShardSpec has shape=False): pass x0")
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

    with failure_report(sampler_name(sampler), group):
        if world > 1:  # every rank must agree on the batch size (a mismatch would misalign shards)
            sizes = [v[0] for v in all_ints([batch], group)]
            if any(b != sizes[0] for b in sizes):
                raise ValueError(f"the whole batch must have the same size on every rank, got {sizes} by rank")
        start, stop = shard_range(batch, rank, world)
        call = dict(kwargs)
        if shape is not None:
            call["shape"] = (stop - start,) + shape[1:]
        elif isinstance(x0, torch.Tensor):
            call["x0"] = x0[start:stop]
        else:
            local = x0(start, stop)
            if not isinstance(local, torch.Tensor) or local.dim() < 1 or local.shape[0] != stop - start:
                got = tuple(local.shape) if isinstance(local, torch.Tensor) else type(local).__name__
                raise ValueError(f"x0({start}, {stop}) must return a [{stop - start}, ...] tensor, got {got}")
            call["x0"], device = local, local.device
        gen = synced_generator(device, seed=seed, generator=generator, group=group, src=dst)
        _slice_per_sample(call, spec, batch, start, stop)
        if world > 1 and spec.gather_hook is not None and spec.gather_hook not in call:
            call[spec.gather_hook] = lambda rows: gather_rows(rows, batch, group=group, dst=None)
        per_rank_files(call, rank, world)
        coupled = world > 1 and spec.gather_hook is not None and call.get(spec.gather_hook) is not None
        if coupled and call.get("resume") is not None:
            call["resume"] = common_step_file(call["resume"], group)
        with fingerprint_extras(world_size=world, rank=rank, rows=[start, stop]), keep_previous(coupled):
            out = sampler(*args, generator=gen, sample_offset=start, **call)

        if gather == "none":
            return out
        parts = _check_outputs(sampler, out, stop - start)
        root = None if gather == "all" else dst
        gathered = tuple(gather_rows(p, batch, group=group, dst=root) for p in parts)
        if root is not None and rank != root:
            return None
        return gathered if isinstance(out, tuple) else gathered[0]
