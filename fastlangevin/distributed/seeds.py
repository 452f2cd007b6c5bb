"""One generator state on every rank, so that every rank draws the same per-call seeds.

Every fused op draws one seed per call from its generator (:func:`fastlangevin._rng.draw_seed`)
and keys its noise by the *global* element index; ranks whose generators are in step therefore
draw the same seeds and, through their shards' ``sample_offset``, distinct noise: one seed
gives the same samples whatever the world size, and no rank repeats another's noise.
"""

from __future__ import annotations

from typing import Optional

import torch

from .._rng import draw_seed
from .group import all_ints, broadcast, rank_and_world


def synced_generator(
    device, *, seed: Optional[int] = None, generator: Optional[torch.Generator] = None, group=None, src: int = 0
) -> torch.Generator:
    """A generator on ``device`` with the same state on every rank of ``group``.

    * ``seed``: a fresh generator seeded with it on every rank (the ranks' seeds are checked to
      agree: a ValueError on every rank otherwise);
    * ``generator``: its state is broadcast from rank ``src`` and set on every rank (the same
      object is returned, now in step with rank ``src``'s);
    * neither: rank ``src`` draws a seed from its default CPU generator (so
      ``torch.manual_seed`` on rank ``src`` governs it; the draw is the ops' own,
      :func:`fastlangevin._rng.draw_seed`) and broadcasts it.

    A collective when the group has more than one rank.
    """
    if seed is not None and generator is not None:
        raise ValueError("pass seed or generator, not both")
    device = torch.device(device)
    _, world = rank_and_world(group)
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != device.type:
            raise ValueError(f"generator is on {generator.device.type}, the samples on {device.type}")
        if world > 1:
            state = generator.get_state()
            generator.set_state(broadcast(state, src, group).to(state.device))
        return generator
    if seed is None:
        drawn = draw_seed(torch.device("cpu"))
        seed = int((broadcast(drawn, src, group) if world > 1 else drawn).item())
    elif isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    elif world > 1:
        seeds = [s[0] for s in all_ints([seed], group)]
        if any(s != seeds[0] for s in seeds):
            raise ValueError(f"seed must be the same on every rank (one seed for the whole batch), got {seeds} by rank")
    return torch.Generator(device=device).manual_seed(seed)
