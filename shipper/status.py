"""What the shipper knows about each copy: a sender's counters, copy queue, replay queue, lag; and the
status table.

The queues are pure functions of the tailer's view of the source and a target's acknowledged
positions. Lag is measured like PostgreSQL's walsender does: the tailer's view of the source's end is
sampled with the time it was first seen, and a target's lag is how long ago the oldest byte it has not
durably acknowledged was first seen (0 when it has everything).
"""

from __future__ import annotations

import bisect
import collections
import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from logship.admin import live
from logship.admin.table import STATUS_COLUMNS, epoch_text, render, status_cells
from protocol.messages import Heartbeat, Position, SourceHead
from shipper.remembered import Remembered
from shipper.tailer import SegmentInfo
from shipper.window import AckKey


class TargetState(enum.Enum):
    INITIALIZING = "Initializing"
    HEALTHY = "Healthy"
    DISCONNECTED = "Disconnected"
    SUSPENDED = "Suspended"
    FENCED = "Fenced"
    FAILED = "Failed"
    RETRYING = "Retrying"
    """Connected, but a transient failure (a damaged link) makes it resend in smaller chunks."""
    SEEDING = "Seeding"
    """The target's copy is Seeding: this shipper sends it a base image (shipper/seed.py)."""
    REFUSED = "Refused"
    """The target refuses us for a reason retrying cannot fix (secret, version, name): a long back-off."""


@dataclass(slots=True)
class TargetStats:
    """Counters a sender keeps for status and tests."""

    connects: int = 0
    resends: int = 0
    bytes_sent: int = 0
    """Payload bytes sent (uncompressed)."""
    bytes_wire: int = 0
    """Bytes those DATA frames took on the wire (headers included, after compression)."""
    segments_sealed: int = 0
    last_error: str = ""
    acked: Position = field(default_factory=lambda: Position("", 0))
    acked_sealed: bool = True
    acked_at: float = 0.0
    known: bool = False
    """Whether ``acked`` was learnt from this target since the shipper started."""
    replayed: Position | None = None
    """The target's replayed position from its last ACK on this connection; None before one."""
    last_copied: str = ""
    """The newest segment the target acknowledged sealed."""
    last_copied_at: float | None = None
    stuck: str = ""
    """Why shipping to this target cannot go on (e.g. the segment it needs is gone); empty if it can."""
    remembered: Remembered | None = None
    """What the previous run of the shipper last knew of this target (shipper/status_state.py): shown by
    status until the target answers, never used to decide anything."""
    seed: Any = None
    """The seed transfer to this target (shipper/seed.py SeedProgress), once one began; None before."""


def newest_copied(names: Sequence[str], acked: AckKey) -> str:
    """Return the newest segment of ``names`` sealed in a copy that acknowledged ``acked``."""
    # Its own segment if sealed, else the one before it: one ACK can cover a SEAL and data of the next.
    pos, sealed = acked
    if sealed:
        return pos.segment
    i = bisect.bisect_left(names, pos.segment)
    return names[i - 1] if i > 0 else ""


def heartbeat(stream: str, segments: Sequence[SegmentInfo], names: Sequence[str], stats: TargetStats) -> Heartbeat:
    """Return the HEARTBEAT for one target: the source's head and this target's copy queue, once known."""
    if not stats.known:
        return Heartbeat()
    head = Position(segments[-1].name, segments[-1].size) if segments else Position("", 0)
    count, nbytes = copy_queue(segments, names, (stats.acked, stats.acked_sealed))
    return Heartbeat(stream, SourceHead(head, count, nbytes))


def end_key(segments: Sequence[SegmentInfo]) -> AckKey:
    """Return the source's end as an AckKey: the newest segment, its size, whether it is sealed."""
    if not segments:
        return (Position("", 0), True)
    last = segments[-1]
    return (Position(last.name, last.size), last.sealed)


def covers(acked: AckKey, segment: str) -> bool:
    """Return whether a target that acknowledged ``acked`` holds ``segment`` sealed and durable."""
    pos, sealed = acked
    return pos.segment > segment or (pos.segment == segment and sealed)


def copy_queue(segments: Sequence[SegmentInfo], names: Sequence[str], acked: AckKey) -> tuple[int, int]:
    """Return (segments, bytes) the source has that a target which acknowledged ``acked`` does not.

    A segment counts until its SEAL is acknowledged; an empty, unsealed newest segment does not count.
    """
    pos, sealed = acked
    i = bisect.bisect_left(names, pos.segment)
    count = nbytes = 0
    for seg in segments[i:]:
        if seg.name == pos.segment:
            if sealed:
                continue
            left = max(0, seg.size - pos.offset)
            if left or seg.sealed:
                count += 1
                nbytes += left
        elif seg.size or seg.sealed:
            count += 1
            nbytes += seg.size
    return count, nbytes


def replay_queue(
    segments: Sequence[SegmentInfo], names: Sequence[str], acked: AckKey, replayed: Position
) -> tuple[int, int]:
    """Return (segments, bytes) sealed in a target's copy but not replayed there, as far as the source knows them."""
    i = bisect.bisect_right(names, replayed.segment)
    count = nbytes = 0
    for seg in segments[i:]:
        if not covers(acked, seg.name):
            break
        count += 1
        nbytes += seg.size
    return count, nbytes


class LagTracker:
    """Remember when each stretch of the source was first seen, to tell a target's lag in seconds.

    Holds at most ``capacity`` samples; when full, the newest sample's position moves forward and keeps
    its older time, so the lag can only be overstated, never understated.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._samples: collections.deque[tuple[AckKey, float]] = collections.deque()
        self._seeded = False

    def seed(self, segments: Sequence[SegmentInfo], now: float) -> None:
        """Sample the source as it is at start from its files' times, so a restart does not reset lags.

        Segment k's bytes are taken to have appeared when segment k-1 was last written (its own
        time for the first): a lag from file times can be overstated, never understated.
        """
        if self._seeded:
            return
        self._seeded = True
        start = segments[0].mtime if segments else now
        for seg in segments:
            self.record((Position(seg.name, seg.size), seg.sealed), min(start, now))
            start = max(start, seg.mtime)

    def record(self, end: AckKey, now: float) -> None:
        """Note that the source reached ``end`` at ``now``."""
        if self._samples and end <= self._samples[-1][0]:
            return
        if len(self._samples) >= self.capacity:
            self._samples[-1] = (end, self._samples[-1][1])
        else:
            self._samples.append((end, now))

    def lag(self, acked: AckKey | None, now: float, *, consume: bool = True) -> float:
        """Return the seconds since the oldest byte not covered by ``acked`` (None: nothing known) was seen.

        ``consume=False`` leaves the samples in place: for a position a target has not proven on this
        run (the previous run's, which the target's copy may no longer hold).
        """
        if acked is not None and consume:
            while self._samples and self._samples[0][0] <= acked:
                self._samples.popleft()
        elif acked is not None:
            for end, seen in self._samples:
                if not end <= acked:
                    return max(0.0, now - seen)
            return 0.0
        return max(0.0, now - self._samples[0][1]) if self._samples else 0.0


# -- the table ---------------------------------------------------------------------------------

COLUMNS = [("stream", "STREAM"), ("target", "TARGET"), ("epoch_text", "EPOCH")]
"""The shipper's own first columns; logship.admin.table.STATUS_COLUMNS (shared with the receiver) and
RETENTION follow."""


def table(status: dict[str, Any], now: float | None = None) -> str:
    """Render a shipper status snapshot as a readable table."""
    now = time.time() if now is None else now
    rows = [{**status_cells(row, now), "epoch_text": epoch_text(row)} for row in status.get("copies", [])]
    head = f"shipper {status.get('node', '?')} (pid {status.get('pid', '?')})"
    text = f"{head}\n{render(rows, [*COLUMNS, *STATUS_COLUMNS, ('retention', 'RETENTION')])}"
    return text + "".join(f"\n{line}" for line in ha_lines(status))


def ha_lines(status: dict[str, Any]) -> list[str]:
    """One line per stream the HA agent that started this shipper reports on (logship/ha/view_file.py)."""
    # The watch's heading shows the same lines (logship/admin/live.py): one wording for both.
    return live.ha_lines(live.ha_of(status, None))
