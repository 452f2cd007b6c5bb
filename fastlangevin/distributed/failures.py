"""A failure on one rank becomes a clear, typed error on every rank, within the group's timeout.

Inside :func:`failure_report`, an error of this rank's own (anything that is not a collective
failure, see :mod:`.errors`) is published in the process group's store as a JSON record
``{"rank": R, "type": "<module.qualname>", "message": "<first line>"}`` under a key numbered
by the block (the first report of a block wins) and re-raised unchanged. A collective failure
(a peer exited, or stopped answering until the ``timeout`` of ``init_process_group``) is raised
as :class:`~.errors.RemoteRankError` when some rank published a report, else as
:class:`~.errors.RankLostError`, chained to the collective's error. No rank waits longer than
the group's timeout.
"""

from __future__ import annotations

import contextlib
import json
from typing import Iterator, Optional

import torch.distributed as dist

from .errors import RankFailedError, RankLostError, RemoteRankError, error_name, first_line, is_collective_failure
from .group import rank_and_world

_FAILURE_KEY = "fastlangevin/failure/{}"
_blocks = [0]  # failure_report blocks entered so far in this process (the same count on every rank)


def _store():
    try:
        return dist.distributed_c10d._get_default_store()
    except Exception:  # private API, or no store: failures are then reported without the cause
        return None


def _publish(store, key: str, rank: int, exc: BaseException) -> None:
    if store is None:
        return
    record = json.dumps({"rank": rank, "type": error_name(type(exc)), "message": first_line(exc)})
    with contextlib.suppress(Exception):  # reporting is best effort: the error itself is re-raised
        store.compare_set(key, "", record)


def _read(store, key: str) -> Optional[dict]:
    if store is None:
        return None
    with contextlib.suppress(Exception):
        if store.check([key]):
            return json.loads(store.get(key).decode("utf-8", "replace"))
    return None


@contextlib.contextmanager
def failure_report(what: str = "run", group=None) -> Iterator[None]:
    """Make a failure on one rank a clear error on every rank.

    Inside the block, an error of this rank's own (not a failed collective) is published in the
    process group's store and re-raised unchanged. A failed collective (the peer exited, or
    stopped answering until the timeout) is raised as :class:`RemoteRankError` naming the rank
    that reported a failure and its error's type and message, or as :class:`RankLostError` when
    none did; both are :class:`RankFailedError`\\ s, chained to the collective's error. The wait
    is bounded by ``init_process_group``'s ``timeout``. Every rank must enter the block the same
    number of times (it numbers reports). Collectives of your own inside the block: wrap them in
    :func:`fastlangevin.distributed.collective` so that their failure is told apart from an error
    of this rank's own. Outside torch.distributed it does nothing.
    """
    rank, world = rank_and_world(group)
    if world == 1:
        yield
        return
    _blocks[0] += 1
    key = _FAILURE_KEY.format(_blocks[0])
    store = _store()
    try:
        yield
    except RankFailedError:  # already the typed verdict of an inner block
        raise
    except Exception as exc:
        if not is_collective_failure(exc):  # this rank's own error: report it, raise it unchanged
            _publish(store, key, rank, exc)
            raise
        own = f"{type(exc).__name__}: {first_line(exc)}"
        report = _read(store, key)
        if report is None:
            raise RankLostError(
                f"fastlangevin.distributed {what}: rank {rank}: a collective failed ({own}); another rank "
                "exited, crashed or stopped answering without reporting an error (see its log)"
            ) from exc
        failed, kind, message = int(report["rank"]), str(report["type"]), str(report["message"])
        short = kind.rsplit(".", 1)[-1]
        raise RemoteRankError(
            f"fastlangevin.distributed {what}: rank {rank} stopped because rank {failed} failed: "
            f"rank {failed}: {short}: {message} (this rank's collective error: {own})",
            failed,
            kind,
            message,
        ) from exc
