"""Replay that meets EIO (a link into replica/, a read of log/) waits for its storage, however long,
and never counts it as a failure; an ordinary failure still does (fake clock, Replayer.step())."""

from __future__ import annotations

import errno
import os

import pytest

from receiver.config import ReplaySettings
from receiver.copy import StreamCopy
from receiver.replayer import Replay, Retry, Stopped, storage_wait
from receiver.space import ReplicaNoSpace
from receiver.store import ReplicaError, SegmentStore
from tests.helpers.replay_copy import NAMES, Clock, install


def _from(error: OSError) -> ReplicaError:
    try:
        try:
            raise error
        except OSError:
            raise ReplicaError("x: cannot install into replica/") from None
    except ReplicaError as e:
        return e


@pytest.mark.parametrize(
    ("error", "wait"),
    [
        (ReplicaNoSpace("full"), "space"),
        (_from(OSError(errno.EIO, "Input/output error")), "storage (EIO)"),
        (_from(OSError(errno.ETIMEDOUT, "Connection timed out")), "storage (ETIMEDOUT)"),
        (_from(OSError(errno.EACCES, "Permission denied")), None),
        (ReplicaError("inspector vetoed x"), None),
        (ReplicaError("x: changed in log/ while it was replayed", corrupt=True), None),
    ],
)
def test_storage_wait(error: ReplicaError, wait: str | None) -> None:
    assert storage_wait(error) == wait


async def test_eio_into_replica_waits_then_replays(store: SegmentStore, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = StreamCopy("db1", store, ReplaySettings(retries=1, backoff=0.1))
    clock = Clock(1e10)
    copy.replayer.clock = clock
    install(store, copy, NAMES[0], "")
    real = os.link

    def broken(src: object, dst: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "link", broken)
    # Far more attempts than the 2 an ordinary failure gets: still waiting, never Failed.
    for _ in range(6):
        clock.now += 60
        result = await copy.replayer.step()
        assert isinstance(result, Retry), result
    assert copy.state.replay_failed is None and copy.state.replayed is None
    assert (copy.state.last_error or "").startswith("waiting for storage (EIO): "), copy.state.last_error
    monkeypatch.setattr(os, "link", real)
    clock.now += 60
    assert isinstance(await copy.replayer.step(), Replay)
    assert copy.state.replayed == NAMES[0] and copy.replayer.space_waits == 0
    # An ordinary failure (permission) still counts, and Fails once the retries are spent.
    install(store, copy, NAMES[1], NAMES[0])

    def denied(src: object, dst: object) -> None:
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "link", denied)
    results = []
    for _ in range(3):
        clock.now += 60
        results.append(await copy.replayer.step())
    assert isinstance(results[-1], Stopped) and copy.state.replay_failed, results
