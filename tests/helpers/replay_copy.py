"""A receiver's copy for the replayer's unit tests: segment names, a fake clock, and a segment
installed into the copy as the committer installs one."""

from __future__ import annotations

from protocol.digest import chunk_digest, segment_digest
from receiver.copy import StreamCopy
from receiver.ops import Install, Write
from receiver.store import SegmentStore

NAMES = [f"mysql-bin.{i:06d}" for i in range(1, 12)]


class Clock:
    """A clock the test sets (``clock.now``), called as ``time.monotonic`` is."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def install(store: SegmentStore, copy: StreamCopy, name: str, prev: str) -> None:
    """Write and install segment ``name`` (after ``prev``) into the store and tell the copy."""
    data = name.encode() * 10
    records = store.apply(
        [Write(name, 0, data, chunk_digest(name, 0, data)), Install(name, len(data), segment_digest(data), prev)]
    )
    copy.on_installed(records)
