"""The sharding declarations of fastlangevin's own samplers: the one place they are written.

``langevin`` and ``mala``: per-sample step sizes (and ``langevin``'s noise scale);
``annealed_langevin``: per-sample ``step_lr``; ``pc_sample``: per-sample ``snr``, its prior
drawn from ``shape=``, and the all-gather hook of its batch-averaged corrector norms.
"""

from __future__ import annotations

from .. import sampling
from .protocol import ShardSpec, register_sharding

SPECS = {
    sampling.langevin: ShardSpec(per_sample=("step_size", "noise_scale")),
    sampling.annealed_langevin: ShardSpec(per_sample=("step_lr",)),
    sampling.pc_sample: ShardSpec(per_sample=("snr",), shape=True, gather_hook="corrector_gather_norms"),
    sampling.mala: ShardSpec(per_sample=("step_size",)),
}
for _sampler, _spec in SPECS.items():
    register_sharding(_sampler, spec=_spec)

#: Per-sample keyword arguments of our samplers (a ``[B]`` tensor there is sliced to the shard).
PER_SAMPLE_KWARGS = tuple(dict.fromkeys(name for spec in SPECS.values() for name in spec.per_sample))
