"""Record replayed segments in batches: one replica/ directory flush and one state.json save for a run
of segments replayed back to back, instead of both for every segment.

A directory replay (receiver/targets.py ``DirectoryTarget``) links each segment into replica/ and
makes the link's inode durable at once, but leaves the directory entry to ``flush()``. While the next
segment is due too, the replayer goes on linking; when none is (or ``BATCH`` segments are linked, or
the target runs commands), ``commit()`` flushes replica/ once and only then records every segment of
the batch as replayed in state.json. So a crash never leaves state.json saying a segment is replayed
whose link is not durable; a crash inside a batch leaves links that state.json does not know yet,
and the replay after the restart finds them linked already and only records them
(docs/reliability.md). Before ``commit()`` nothing outside the replayer sees those segments as
replayed: not the ACKs, not retention, not status.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from receiver.manifest import Installed
from receiver.state import CopyState
from receiver.targets import DirectoryTarget, ReplayTarget

log = logging.getLogger("receiver")


class BatchedCopy(Protocol):
    """What a batch needs of the copy (a part of receiver/replayer.py's ``ReplayedCopy``)."""

    name: str
    state: CopyState

    async def save_state(self) -> None: ...


BATCH = 16
"""Segments linked at most before they are recorded (16 MiB segments: 256 MiB, well under a second)."""


class ReplayBatch:
    """Segments replayed into the target but not yet recorded as replayed."""

    def __init__(
        self,
        copy: BatchedCopy,
        target: ReplayTarget,
    ) -> None:
        self.copy = copy
        self.target = target
        self.records: list[Installed] = []

    @property
    def last(self) -> str | None:
        """The newest segment replayed (recorded or not): where the replayer goes on from."""
        return self.records[-1].name if self.records else None

    def add(self, record: Installed) -> None:
        self.records.append(record)

    def may_grow(self) -> bool:
        """Whether another segment may join before the batch is recorded."""
        return isinstance(self.target, DirectoryTarget) and 0 < len(self.records) < BATCH

    async def commit(self, now: float, on_replayed: Callable[[], None] | None) -> None:
        """Flush the target, then record the batch as replayed at ``now`` (state.json) and call
        ``on_replayed``."""
        if not self.records:
            return
        records = self.records
        if isinstance(self.target, DirectoryTarget):
            await asyncio.get_running_loop().run_in_executor(None, self.target.flush)
        state = self.copy.state
        for record in records:
            state.replayed_up_to(record.name, record.size, now)
        self.records = []
        await self.copy.save_state()
        for record in records:
            log.info("stream %s: replayed %s (%d bytes)", self.copy.name, record.name, record.size)
        if on_replayed is not None:
            on_replayed()
