"""Failure types of a run across ranks, and the stable names errors travel under.

    CollectiveError          this rank's collective failed (peer gone, or timed out)
    RankFailedError          base: this rank stopped because of another rank
    ├── RemoteRankError      another rank raised an error of its own and reported it
    └── RankLostError        a collective failed and no rank reported an error (exited, crashed, hung)

A failure is recognised by its type, never by its message: every collective this package
makes runs inside :func:`collective`, which re-raises whatever the backend raised (gloo raises
plain ``RuntimeError``\\ s) as :class:`CollectiveError`, chained to it; NCCL's
``torch.distributed.DistError`` counts as one too (:func:`is_collective_failure`). An error of
a rank's own travels to the others as ``(rank, stable name, first line)``, the stable name of
its class being ``module.qualname`` (:func:`error_name`), resolved back to the class on the
reader's side only when that module is already imported (:func:`resolve_error`).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator, Optional

import torch.distributed as dist


class CollectiveError(RuntimeError):
    """A collective of this rank failed: a peer exited, or stopped answering until the timeout.

    ``what`` names the collective; the backend's own error is ``__cause__``."""

    def __init__(self, what: str, cause: BaseException):
        super().__init__(f"{what} failed: {type(cause).__name__}: {first_line(cause)}")
        self.what = what


class RankFailedError(RuntimeError):
    """Another rank failed (or stopped answering) during a collective run; ``failed_rank`` is the
    rank that reported the failure (None when none did: it died or hung without reporting)."""

    def __init__(self, message: str, failed_rank: Optional[int] = None):
        super().__init__(message)
        self.failed_rank = failed_rank


class RemoteRankError(RankFailedError):
    """Rank ``failed_rank`` raised an error of its own: ``error_type`` is its class's stable name
    (``"builtins.ValueError"``), ``error_message`` its first line, ``error_class`` the class when
    its module is imported here (else None)."""

    def __init__(self, message: str, failed_rank: int, error_type: str, error_message: str):
        super().__init__(message, failed_rank)
        self.error_type = error_type
        self.error_message = error_message
        self.error_class = resolve_error(error_type)


class RankLostError(RankFailedError):
    """A collective failed and no rank reported an error: a peer exited, crashed or hung."""

    def __init__(self, message: str):
        super().__init__(message, None)


@contextlib.contextmanager
def collective(what: str) -> Iterator[None]:
    """Mark a block as a collective: whatever it raises becomes :class:`CollectiveError`.

    Wrap your own collectives in it (a DDP ``backward``, an ``all_reduce``) inside a
    :func:`~fastlangevin.distributed.failure_report` block, so that a lost peer is told apart
    from this rank's own error. Our errors pass through unchanged; without torch.distributed
    (one process, no collective) the block's errors pass through unchanged too."""
    if not _in_process_group():
        yield
        return
    try:
        yield
    except (CollectiveError, RankFailedError):
        raise
    except Exception as exc:
        raise CollectiveError(what, exc) from exc


def _in_process_group() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_collective_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says a collective failed (rather than this rank's own computation)."""
    return isinstance(exc, (CollectiveError, getattr(dist, "DistError", CollectiveError)))


def error_name(cls: type) -> str:
    """The stable name an exception class travels under: ``module.qualname``."""
    return f"{cls.__module__}.{cls.__qualname__}"


def resolve_error(name: str) -> Optional[type]:
    """The exception class called ``name`` (see :func:`error_name`) if its module is imported;
    nothing is imported on a peer's word."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):  # the longest imported module prefix
        obj = sys.modules.get(".".join(parts[:cut]))
        if obj is None:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
        return obj if isinstance(obj, type) and issubclass(obj, BaseException) else None
    return None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else "")[:500]
