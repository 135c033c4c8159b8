"""Retention on the source: remove (or archive) segments every target of the stream holds.

``retainable()`` is the pure decision. A segment may go only when it is sealed and not the newest one,
every target of the stream has acknowledged it sealed and durable (and replayed, for a target whose
retention waits for replay), and ``truncation_lag`` seconds have passed since the last of them did.
Segments go strictly in log order. A target that is Fenced or Failed, or whose position is not known
since the shipper started, holds everything: its log is kept. ``Retainer`` is the loop around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from logship.files import fsync_dir
from protocol.messages import Position
from shipper.status import AckKey, covers
from shipper.tailer import SegmentInfo

log = logging.getLogger("shipper")

HOLDING_STATES = ("Fenced", "Failed")


@dataclass(frozen=True, slots=True)
class TargetView:
    """What retention needs to know of one target."""

    name: str
    """HOST:PORT."""
    state: str
    """The target's state (Healthy, Disconnected, Suspended, Fenced, ...)."""
    acked: AckKey | None
    """Its durable position; None if not known since the shipper started."""
    replayed: Position | None
    """Its replayed position from its last ACK; None if it has not reported one since connecting."""
    wait_for_replay: bool = True
    """Whether retention waits for replay there, not only for the durable copy."""


@dataclass(frozen=True, slots=True)
class Retention:
    """What the retainer does now."""

    remove: tuple[str, ...] = ()
    """Segments to remove, in log order."""
    covered_since: dict[str, float] = field(default_factory=dict)
    """When each candidate became held by every target (to count the truncation lag from)."""
    holders: dict[str, str] = field(default_factory=dict)
    """Targets holding the oldest segment that could otherwise go, with the reason."""
    wait: float | None = None
    """Seconds until the truncation lag of the next covered segment passes; None if none waits."""


def why_not(target: TargetView, segment: SegmentInfo) -> str | None:
    """Return why ``target`` holds ``segment``, or None if it does not."""
    if target.state in HOLDING_STATES:
        return f"{target.state}: its log is kept"
    if target.acked is None:
        return "position not known yet"
    if not covers(target.acked, segment.name):
        return "not yet durable there"
    if target.wait_for_replay:
        if target.replayed is None:
            return "replay position not reported yet"
        if target.replayed.segment < segment.name:
            return "not yet replayed there"
    return None


def retainable(
    segments: Sequence[SegmentInfo],
    targets: Sequence[TargetView],
    now: float,
    lag: float,
    covered_since: dict[str, float] | None = None,
) -> Retention:
    """Decide which source segments may be removed now; see the module docstring."""
    previous = covered_since or {}
    since: dict[str, float] = {}
    remove: list[str] = []
    holders: dict[str, str] = {}
    wait: float | None = None
    if not targets:
        return Retention()
    for seg in segments[:-1]:  # never the newest: it is (or was last) the active segment
        if not seg.sealed:
            break
        reasons = {t.name: r for t in targets if (r := why_not(t, seg)) is not None}
        if reasons:
            holders = reasons
            break
        first = previous.get(seg.name, now)
        since[seg.name] = first
        if wait is None and now - first >= lag:
            remove.append(seg.name)
        elif wait is None:
            wait = lag - (now - first)
    return Retention(tuple(remove), since, holders, wait)


def remove_segment(source: Path, name: str, archive: Path | None) -> None:
    """Delete ``source/name``, or move it into ``archive`` first; durable before it returns.

    Raises OSError if it cannot.
    """
    path = source / name
    if archive is not None:
        try:
            os.rename(path, archive / name)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            # Another file system: copy to a temp name, fsync, rename, then drop the source.
            tmp = archive / f".{name}.tmp"
            with open(path, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 4 << 20)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, archive / name)
            fsync_dir(archive)
            path.unlink()
        else:
            fsync_dir(archive)
    else:
        path.unlink()
    fsync_dir(source)


class Retainer:
    """Apply ``retainable()`` to one stream's source whenever a target's position moves."""

    def __init__(
        self,
        stream: str,
        source: Path,
        segments: Callable[[], Sequence[SegmentInfo]],
        targets: Callable[[], list[TargetView]],
        lag: float,
        archive: Path | None = None,
        recheck: float = 30.0,
    ) -> None:
        self.stream = stream
        self.source = source
        self.segments = segments
        self.targets = targets
        self.lag = lag
        self.archive = archive
        self.recheck = recheck
        self.wake = asyncio.Event()
        self.last = Retention()
        self.removed = 0
        self.error: str | None = None

    async def step(self, now: float | None = None) -> Retention:
        """Decide once and remove what may go; return the decision."""
        now = time.time() if now is None else now
        decision = retainable(self.segments(), self.targets(), now, self.lag, self.last.covered_since)
        self.last = decision
        for name in decision.remove:
            if not (self.source / name).exists():
                continue  # already gone; the tailer has not looked since
            try:
                await asyncio.to_thread(remove_segment, self.source, name, self.archive)
            except OSError as e:
                if self.error != str(e):
                    log.error("stream %s: cannot remove %s from the source: %s", self.stream, name, e)
                self.error = str(e)
                break
            self.error = None
            self.removed += 1
            log.info(
                "stream %s: %s %s: every target holds it", self.stream, "archived" if self.archive else "removed", name
            )
        return decision

    async def run(self) -> None:
        """Step whenever woken, and when a truncation lag runs out."""
        while True:
            self.wake.clear()
            decision = await self.step()
            timeout = self.recheck if decision.wait is None else min(self.recheck, decision.wait + 0.01)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.wake.wait()
