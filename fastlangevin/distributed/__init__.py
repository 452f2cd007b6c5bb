"""Sampling and training across processes with ``torch.distributed`` (launched by ``torchrun``).

**Contract** (:func:`sample_sharded`): with the same seed, the union of the ranks' shards equals
the same batch sampled in one process by the same sampler, backend and device type:

    sample_sharded(sampler, *args, x0=x0, seed=s, **kw)      # on W ranks, any W <= B
    == sampler(*args, x0=x0, generator=torch.Generator(device).manual_seed(s), **kw)

bitwise, for score functions that treat rows independently with row-wise deterministic
arithmetic (analytic scores, elementwise networks). It holds because our noise is keyed by the
*global* sample index: row ``r`` of a shard starting at global row ``start`` (``sample_offset``)
draws the noise of row ``start + r``, from per-call seeds every rank draws alike. A network
whose kernels round differently at another batch size (matmul blocking, cuDNN algorithm choice)
makes the shards differ from the one-process run by that rounding only. Batch-averaged corrector
norms (``pc_sample``'s default ``corrector_norm="batch"``) couple the rows: the ``[b, 2]``
per-row norms of every corrector step are all-gathered (``8·B`` bytes per step and rank), so ε
is the whole batch's and the contract holds for them too.

**Sampler protocol** (:mod:`.protocol`). A sampler is shardable when it is called as
``sampler(*args, x0=shard | shape=shard_shape, generator=g, sample_offset=start, **options)``,
returns per-sample ``[b, ...]`` tensors (or a tuple of them), and has a declaration, a
:class:`ShardSpec`, registered once with :func:`register_sharding`: which keyword options are
per-sample along dim 0 (``per_sample``: a ``[B, ...]`` tensor there is sliced to the shard's
rows, a number or 0-d tensor passed as is, a tensor of another length is a ValueError), whether
it draws its start from ``shape=`` (``shape``), and which keyword takes the all-gather of its
row-coupling per-row statistics (``gather_hook``). fastlangevin's samplers are declared in
:mod:`.samplers`; a third-party sampler declares itself the same way::

    @fd.register_sharding(per_sample=("temperature",))
    def my_sampler(score_fn, x0, *, temperature, n_steps, generator=None, sample_offset=0): ...

A declaration is checked against the sampler's signature when registered (a ValueError naming
a keyword it does not take); an undeclared sampler is a TypeError saying how to declare it.

**Seeds** (:mod:`.seeds`). :func:`synced_generator` gives every rank a generator with the same
state (from one ``seed``, or by broadcasting a generator's state from rank ``src``); the global
row index in the noise counter keeps the ranks' noise distinct. One seed gives the same
samples whatever the world size.

**Training** (``DistributedDataParallel``): give each rank's :func:`fastlangevin.dsm_loss` the
same synced generator and ``sample_offset=start`` of its shard of the global batch
(:func:`shard_range`, :func:`shard`); the noise of global row ``i`` is the one a single process
draws for row ``i`` of the whole batch, and DDP's average of gradients weighted by
:func:`shard_weight` is the gradient of the global batch's mean loss (``examples/train_ddp.py``).

**Failures** (:mod:`.failures`, :mod:`.errors`). A rank that raises inside
:func:`sample_sharded` (or a :func:`failure_report` block) publishes its error in the process
group's store before re-raising it; a rank whose collective then fails (peer gone) or times out
(the ``timeout`` of ``init_process_group``) raises :class:`RemoteRankError` naming the failed
rank and its error's type, or :class:`RankLostError` when no rank reported one (both
:class:`RankFailedError`). Failures are told apart by type, never by message text. No rank waits
longer than the process group's timeout.

Modules: :mod:`.group` (process group, small collectives), :mod:`.sharding` (rows per rank,
gather), :mod:`.seeds`, :mod:`.errors` and :mod:`.failures`, :mod:`.protocol` and
:mod:`.samplers` (declarations), :mod:`.sharded` (:func:`sample_sharded`), :mod:`.shard_files`,
:mod:`.checkpoints` (checkpoint/resume of a sharded run: one file per rank, :func:`rank_path`).
"""

from .checkpoints import rank_path
from .errors import CollectiveError, RankFailedError, RankLostError, RemoteRankError, collective
from .failures import failure_report
from .group import init_from_env, rank_and_world
from .protocol import ShardSpec, register_sharding, sharding_spec
from .samplers import PER_SAMPLE_KWARGS
from .seeds import synced_generator
from .shard_files import load_shards, save_shard
from .sharded import GATHER_MODES, sample_sharded
from .sharding import gather_rows, shard, shard_range, shard_weight

__all__ = [
    "GATHER_MODES",
    "PER_SAMPLE_KWARGS",
    "CollectiveError",
    "RankFailedError",
    "RankLostError",
    "RemoteRankError",
    "ShardSpec",
    "collective",
    "failure_report",
    "gather_rows",
    "init_from_env",
    "load_shards",
    "rank_and_world",
    "rank_path",
    "register_sharding",
    "sample_sharded",
    "save_shard",
    "shard",
    "shard_range",
    "shard_weight",
    "sharding_spec",
    "synced_generator",
]
