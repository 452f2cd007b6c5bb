"""Checkpoint/resume of a sampler run: the whole run state in one file, written atomically.

A run with ``checkpoint=PATH, checkpoint_every=k`` writes, after every k-th step (counted over the
whole run, MALA's warm-up included; not after the last), one file holding

* the loop's state tensors (the chains, and whatever a sampler carries between steps: MALA's
  score, log-density, acceptance count and dual-averaging state),
* the number of steps done, the generator's state (the one the noise seeds are drawn from),
* the trace so far and the running statistics (``trace=``, ``stats=``),
* a fingerprint of the call's arguments (sampler, shapes, dtypes, step sizes, noise levels, x0's
  contents, options — tensors by a SHA-256 of their bytes).

``resume=PATH`` (same arguments) restores all of it after the sampler's set-up and continues from
the next step: each step's noise comes from a seed drawn from the restored generator, so the
resumed result is bitwise the uninterrupted run's. A checkpoint whose fingerprint differs is
refused with a ``ValueError`` naming every argument that differs.

Atomicity: the file is written to ``PATH.tmp-<pid>`` in the same directory, flushed and fsync'ed,
then ``os.replace``d onto PATH (atomic on POSIX) and the directory fsync'ed. A process killed at
any moment (SIGKILL included) leaves either the previous checkpoint or the new one at PATH, never
a torn file; a stale temporary file is ignored. Inside :func:`keep_previous` the checkpoint being
replaced is first linked (or copied) to ``PATH.prev``, also atomically, so two generations are
kept (sharded runs whose ranks must resume from a common step use it).

Tested on CPU (eager, and the graph path with a CPU stand-in for the replay). With
``cuda_graph=True`` on a GPU the generator state is read after replays of a graph registered with
the generator; that combination has not been run on hardware yet.

Other users of :class:`Checkpointer` (its :meth:`~Checkpointer.save` / :meth:`~Checkpointer.load`
take and give a payload dict):

* :func:`fastlangevin.probability_flow.ode_sample` writes the solver's state: after every k-th
  step of euler / heun / rk4 (the state, the step index, the NFE count), after every k-th
  *accepted* step of rk45 (the state, τ = |t - t0|, the next step size h, the FSAL derivative,
  the accepted / rejected counts and the NFE count; its error controller keeps no other state).
* :func:`fastlangevin.distributed.sample_sharded` gives every rank its own file,
  ``PATH.rank{r}-of-{w}``, and puts the world size, the rank and its rows into the fingerprint
  (:func:`fingerprint_extras`); a resume on another world size is refused naming both sizes.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import shutil
from typing import Any, Dict, Iterator, Optional

import torch

FORMAT = 1


def _describe(v: Any) -> Any:
    """A comparable, printable fingerprint entry for an argument value."""
    if isinstance(v, torch.Tensor):
        t = v.detach().to("cpu").contiguous()
        digest = hashlib.sha256(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"").hexdigest()[:16]
        return f"tensor{tuple(t.shape)} {t.dtype} sha256:{digest}"
    if isinstance(v, torch.Generator):
        return f"generator({v.device})"
    if isinstance(v, (list, tuple)):
        return [_describe(e) for e in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, torch.dtype):
        return str(v)
    if callable(v):
        # by name only: the module is "__main__" in a script and its import name elsewhere
        return f"callable {getattr(v, '__qualname__', type(v).__name__)}"
    if hasattr(v, "__dict__"):  # e.g. an SDE: its class and public fields
        fields = {k: _describe(x) for k, x in sorted(vars(v).items()) if not k.startswith("_")}
        return f"{type(v).__name__}{fields}"
    return repr(v)


# Entries added to every fingerprint built inside :func:`fingerprint_extras` (sample_sharded's
# world size and rank: the sampler that builds the fingerprint does not know them).
_EXTRAS: contextvars.ContextVar[Dict[str, Any]] = contextvars.ContextVar("fastlangevin_fp_extras", default={})


@contextlib.contextmanager
def fingerprint_extras(**entries) -> Iterator[None]:
    """Add ``entries`` to the fingerprint of every checkpointed call made inside the block."""
    token = _EXTRAS.set({**_EXTRAS.get(), **{k: _describe(v) for k, v in entries.items()}})
    try:
        yield
    finally:
        _EXTRAS.reset(token)


#: Suffix of the previous generation kept inside :func:`keep_previous`.
PREVIOUS = ".prev"
_KEEP_PREVIOUS: contextvars.ContextVar[bool] = contextvars.ContextVar("fastlangevin_keep_previous", default=False)


@contextlib.contextmanager
def keep_previous(enabled: bool = True) -> Iterator[None]:
    """Checkpointed calls made inside the block keep the replaced checkpoint at ``PATH.prev``."""
    token = _KEEP_PREVIOUS.set(bool(enabled))
    try:
        yield
    finally:
        _KEEP_PREVIOUS.reset(token)


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _keep_as_previous(path: str) -> None:
    """Atomically make ``path + PREVIOUS`` a complete copy of the checkpoint at ``path``."""
    tmp = f"{path}{PREVIOUS}.tmp-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)
    try:
        os.link(path, tmp)  # the same inode: no copy (the new checkpoint goes to a new inode)
    except OSError:  # no hard links on this filesystem
        shutil.copyfile(path, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    os.replace(tmp, path + PREVIOUS)


def fingerprint(name: str, *, trace=None, stats=None, **args) -> Dict[str, Any]:
    """The entries a resumed call must match: every argument that shapes the run's numbers."""
    fp = {"sampler": name}
    fp.update({k: _describe(v) for k, v in args.items()})
    fp.update(_EXTRAS.get())
    fp["trace"] = None if trace is None else f"Trace(every={trace.every})"
    fp["stats"] = (
        None
        if stats is None
        else f"RunningStats(every={stats.every}, burn_in={stats.burn_in}, batch_size={stats.batch_size})"
    )
    return fp


def _check_path(name: str, p) -> Optional[str]:
    if p is None:
        return None
    if not isinstance(p, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike) or None, got {type(p).__name__}")
    return os.fspath(p)


class Checkpointer:
    """Writes and restores a run's state for :class:`fastlangevin.sampling.loop.Loop`."""

    def __init__(self, path: Optional[str], every: Optional[int], resume: Optional[str], fp: Dict[str, Any]):
        self.path, self.every, self.resume, self.fp = path, every, resume, fp
        self.keep_previous = _KEEP_PREVIOUS.get()

    @classmethod
    def from_args(cls, checkpoint, checkpoint_every, resume, fp_fn) -> Optional["Checkpointer"]:
        """Validate the sampler's checkpoint arguments; ``fp_fn()`` builds the fingerprint (only
        when needed: it hashes tensors)."""
        path = _check_path("checkpoint", checkpoint)
        res = _check_path("resume", resume)
        if checkpoint_every is not None:
            if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
                raise ValueError(f"checkpoint_every must be an int >= 1, got {checkpoint_every!r}")
            if path is None:
                raise ValueError("checkpoint_every needs checkpoint=PATH (the file to write)")
        elif path is not None:
            raise ValueError("checkpoint=PATH needs checkpoint_every=k (write the run state every k steps)")
        if res is not None and not os.path.isfile(res):
            raise FileNotFoundError(f"resume={res!r}: no checkpoint file there")
        if path is None and res is None:
            return None
        return cls(path, checkpoint_every, res, fp_fn())

    # -- writing ----------------------------------------------------------------------------
    def due(self, steps_done: int, total: Optional[int] = None) -> bool:
        """A write is due after ``steps_done`` steps (never after the last of ``total``)."""
        return self.path is not None and steps_done % self.every == 0 and (total is None or steps_done < total)

    def save(self, payload: Dict[str, Any]) -> None:
        """Write ``payload`` (plus the format and fingerprint) to the checkpoint path atomically."""
        payload = {"format": FORMAT, "fingerprint": self.fp, **payload}
        directory = os.path.dirname(os.path.abspath(self.path))
        tmp = f"{self.path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        if self.keep_previous and os.path.isfile(self.path):
            _keep_as_previous(self.path)
        os.replace(tmp, self.path)
        _fsync_directory(directory)  # make the renames themselves durable

    def write(self, loop, steps_done: int, records_started: bool) -> None:
        opts = loop.opts
        self.save(
            {
                "steps_done": steps_done,
                "state": [t.detach().clone() for t in loop.state],
                "generator": loop._generator().get_state(),
                "records_started": records_started,
                "trace": None
                if opts.trace is None or not records_started
                else {"states": opts.trace.states, "steps": list(opts.trace.steps)},
                "stats": None if opts.stats is None or not records_started else opts.stats.state_dict(),
            }
        )

    # -- resuming ---------------------------------------------------------------------------
    def load(self, device) -> Dict[str, Any]:
        """The resume file's payload (tensors on ``device``), after checking its format and
        fingerprint: a ValueError naming every entry that differs from this call's."""
        try:
            payload = torch.load(self.resume, map_location=device, weights_only=False)
        except Exception as exc:
            raise ValueError(f"resume={self.resume!r} is not a readable fastlangevin checkpoint ({exc})") from exc
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError(f"resume={self.resume!r} is not a fastlangevin checkpoint (format {FORMAT})")
        theirs = payload["fingerprint"]
        diff = [k for k in sorted(set(theirs) | set(self.fp)) if theirs.get(k) != self.fp.get(k)]
        if diff:
            lines = "; ".join(f"{k}: checkpoint {theirs.get(k)!r}, this call {self.fp.get(k)!r}" for k in diff)
            raise ValueError(
                f"resume={self.resume!r} was written by a different call: {', '.join(diff)} differ ({lines})"
            )
        return payload

    def restore(self, loop) -> int:
        """Load the checkpoint into the loop (state, generator, trace, stats); returns steps done."""
        payload = self.load(loop.state[0].device)
        if len(payload.get("state", ())) != len(loop.state):
            raise ValueError(f"resume={self.resume!r}: the checkpoint holds a different run state")
        for t, s in zip(loop.state, payload["state"]):
            t.copy_(s)
        loop._generator().set_state(payload["generator"])
        opts = loop.opts
        if payload["records_started"]:
            if opts.trace is not None:
                opts.trace.states = payload["trace"]["states"]
                opts.trace.steps = list(payload["trace"]["steps"])
            if opts.stats is not None:
                opts.stats.load_state_dict(payload["stats"])
        return int(payload["steps_done"])
