"""How a sampler is sharded: a declaration per sampler, registered once, read by ``sample_sharded``.

A shardable sampler is called as ``sampler(*args, x0=shard | shape=shard_shape,
generator=g, sample_offset=start, **options)`` and returns a per-sample ``[b, ...]`` tensor or
a tuple of them. Its :class:`ShardSpec` says what else ``sample_sharded`` must know:

* ``per_sample`` — keyword options that may be per-sample (dim 0 = the batch): a tensor passed
  for one of them with a batch dim must have ``B`` rows and is sliced to the shard's; a number
  or 0-d tensor is passed unchanged. Options not declared are passed unchanged.
* ``shape`` — whether the sampler can draw its own start from ``shape=`` (keyed by the global
  row index through ``sample_offset``) instead of taking ``x0``.
* ``gather_hook`` — the keyword taking a callable that maps this shard's ``[b, k]`` per-row
  statistics to the whole batch's ``[B, k]`` (an all-gather), for samplers whose rows are
  coupled through batch means (``pc_sample``'s batch-averaged corrector norms).

Register with :func:`register_sharding` (a decorator too); :func:`sharding_spec` finds a
sampler's declaration, looking through ``functools.partial`` and ``functools.wraps`` wrappers
and bound methods.
A declaration is checked once, when registered, against the sampler's signature: every name it
declares, and the protocol's ``x0`` / ``generator`` / ``sample_offset``, must be keywords the
sampler takes (or it takes ``**kwargs``); a mismatch is a ValueError naming the keyword.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

#: Keywords ``sample_sharded`` itself passes to every sampler.
PROTOCOL_KWARGS = ("x0", "generator", "sample_offset")


@dataclass(frozen=True)
class ShardSpec:
    """What ``sample_sharded`` must know about a sampler (see the module docstring)."""

    per_sample: Tuple[str, ...] = ()
    shape: bool = False
    gather_hook: Optional[str] = None

    def __post_init__(self):
        if not isinstance(self.per_sample, (tuple, list)) or not all(isinstance(n, str) for n in self.per_sample):
            raise TypeError(f"per_sample must be a sequence of keyword names, got {self.per_sample!r}")
        object.__setattr__(self, "per_sample", tuple(self.per_sample))
        reserved = set(PROTOCOL_KWARGS) | {"shape"}
        for name in self.per_sample:
            if not name.isidentifier():
                raise ValueError(f"per_sample: {name!r} is not a keyword name")
            if name in reserved:
                raise ValueError(f"per_sample: {name!r} is set by sample_sharded itself; do not declare it")
        if len(set(self.per_sample)) != len(self.per_sample):
            raise ValueError(f"per_sample names a keyword twice: {self.per_sample}")
        if not isinstance(self.shape, bool):
            raise TypeError(f"shape must be a bool, got {type(self.shape).__name__}")
        if self.gather_hook is not None and not (isinstance(self.gather_hook, str) and self.gather_hook.isidentifier()):
            raise TypeError(f"gather_hook must be a keyword name or None, got {self.gather_hook!r}")

    def keywords(self) -> Tuple[str, ...]:
        """Every keyword a sampler declaring this spec must take."""
        hook = (self.gather_hook,) if self.gather_hook else ()
        return PROTOCOL_KWARGS + (("shape",) if self.shape else ()) + self.per_sample + hook


_REGISTRY: Dict[Callable[..., Any], ShardSpec] = {}


def check_declaration(sampler: Callable[..., Any], spec: ShardSpec) -> None:
    """A ValueError naming a keyword ``spec`` needs that ``sampler``'s signature lacks."""
    try:
        params = inspect.signature(sampler).parameters
    except (TypeError, ValueError):  # no signature to check against (a builtin): trust the declaration
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    for name in spec.keywords():
        if name not in params or params[name].kind not in keyword:
            raise ValueError(
                f"{sampler_name(sampler)} declares or needs the keyword {name!r}, but does not take it "
                f"(its keywords: {', '.join(n for n, p in params.items() if p.kind in keyword)})"
            )


def register_sharding(
    sampler: Optional[Callable[..., Any]] = None,
    *,
    per_sample: Sequence[str] = (),
    shape: bool = False,
    gather_hook: Optional[str] = None,
    spec: Optional[ShardSpec] = None,
):
    """Declare how ``sampler`` is sharded (see the module docstring); returns the sampler.

    ``register_sharding(fn, per_sample=("temperature",))``, or as a decorator
    ``@register_sharding(per_sample=("temperature",))``; ``spec=`` passes a ready
    :class:`ShardSpec`. Registering a sampler again replaces its declaration.
    """
    if spec is None:
        spec = ShardSpec(per_sample=tuple(per_sample), shape=shape, gather_hook=gather_hook)
    elif per_sample or shape or gather_hook is not None:
        raise ValueError("pass spec or per_sample/shape/gather_hook, not both")
    elif not isinstance(spec, ShardSpec):
        raise TypeError(f"spec must be a ShardSpec, got {type(spec).__name__}")

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(fn):
            raise TypeError(f"sampler must be callable, got {type(fn).__name__}")
        check_declaration(fn, spec)
        _REGISTRY[fn] = spec
        return fn

    return register if sampler is None else register(sampler)


def sharding_spec(sampler: Callable[..., Any]) -> Optional[ShardSpec]:
    """``sampler``'s declaration (through partial / wraps wrappers), or None if it has none."""
    seen = set()
    fn = sampler
    while fn is not None and id(fn) not in seen:
        seen.add(id(fn))
        try:
            found = _REGISTRY.get(fn)
        except TypeError:  # unhashable callable
            found = None
        if found is not None:
            return found
        if isinstance(fn, functools.partial):
            fn = fn.func
        else:  # functools.wraps wrappers, then bound methods of a registered function
            fn = getattr(fn, "__wrapped__", None) or getattr(fn, "__func__", None)
    return None


def sampler_name(fn) -> str:
    """How error messages name a sampler."""
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
