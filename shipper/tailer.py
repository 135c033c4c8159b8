"""Where is new data: watch a stream's source directory and say which segments are sealed.

``classify()`` is the pure decision: given the directory's segments (name order), the sealing policy
and the time, which are sealed. ``Tailer`` looks at the directory whenever inotify says it changed
(``shipper.watcher``; every ``poll_interval`` where inotify is unavailable) and wakes every
subscriber when anything changed. A segment's size is frozen the moment it is first seen sealed; if the file changes
after that, the tailer says so loudly and keeps reporting the frozen size, so that the copy is never
overwritten with bytes the source should not have changed.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import logging
import os
import random
import re
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from pathlib import Path

from shipper.fingerprint import Fingerprint, describe_change, take
from shipper.settings import SealPolicy
from shipper.watcher import DirectoryWatcher

log = logging.getLogger("shipper")

FULL_LOOK_EVERY = 4
"""Every this many safety looks at a quiet watched directory is a full scan, whatever the stats say
(the recheck of sealed segments, ``recheck_interval``, for a change inotify did not report)."""
RACY = 1.0
"""Seconds: a stat key with an mtime this recent is not trusted (a change within the same clock tick
leaves the mtime as it was)."""


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """One segment as the tailer sees it."""

    name: str
    size: int
    mtime: float
    sealed: bool


def is_segment(name: str, pattern: re.Pattern[str]) -> bool:
    """Return whether ``name`` is a segment of the stream: it matches the pattern and is never a temp file."""
    return (
        pattern.fullmatch(name) is not None
        and not name.startswith(".")
        and not name.endswith((".tmp", ".partial"))
        and "/" not in name
    )


def late_arrivals(names: Sequence[str], known: Container[str], high: str) -> list[str]:
    """Return the names not in ``known`` that sort before ``high``, the newest name seen in earlier scans."""
    return [n for n in names[: bisect.bisect_left(names, high)] if n not in known]


def classify(
    entries: Sequence[tuple[str, int, float]], policy: SealPolicy, now: float, closed: Container[str] = ()
) -> list[SegmentInfo]:
    """Decide which of ``entries`` (name, size, mtime; name order) are sealed under ``policy`` at ``now``.

    ``closed``: the segments their writer closed after its last change (``closed`` mode needs that, or
    ``policy.settle`` seconds without a change, besides a later segment).
    """
    out = []
    last = len(entries) - 1
    for i, (name, size, mtime) in enumerate(entries):
        later = i < last
        if later and policy.mode == "closed":
            later = name in closed or now - mtime >= policy.settle
        sealed = (
            policy.mode == "immediate"
            or later
            or (policy.segment_size is not None and size >= policy.segment_size)
            or (policy.seal_idle is not None and now - mtime >= policy.seal_idle)
        )
        out.append(SegmentInfo(name, size, mtime, sealed))
    return out


WAKE_GRID = 0.1
"""Seconds: timers that may fire a little early (idle heartbeats, quiet safety looks) end on this
grid of the monotonic clock, so the streams' timers that fall due close together end in one wake-up of
the loop (and the receiver answers those heartbeats in one wake-up too). With 1000 idle streams each on
its own timer, the wake-ups themselves (a context switch, cold caches each time) were most of the idle
CPU (scripts/bench scale: shipper 3.35-3.45 % of a core, 1.60 % on this grid). A 0.5 s grid saved no
more and sent 50 heartbeats in one burst: the busy stream's p99 went from 5-15 ms to 16-28 ms."""


def on_grid(deadline: float, interval: float) -> float:
    """Return the latest point of the wake grid at or before ``deadline`` (monotonic seconds), for a
    timer of period ``interval``: at most ``interval / 8`` early, so a short period stays itself."""
    step = min(WAKE_GRID, interval / 8)
    return deadline - deadline % step if step > 0 else deadline


def next_look(segments: Sequence[SegmentInfo], policy: SealPolicy, now: float, quiet: float) -> float:
    """Return how many seconds a watched directory may go without a look: ``quiet``, or less when the
    newest segment is due to seal by ``policy.seal_idle`` sooner (a timer, not a file event, seals it)."""
    if policy.mode == "closed":
        # A segment with a later one that no close event seals is sealed by the settle timer.
        for seg in segments[:-1]:
            if not seg.sealed:
                quiet = max(0.001, min(quiet, seg.mtime + policy.settle - now + 0.001))
    if policy.seal_idle is not None and segments and not segments[-1].sealed:
        due = segments[-1].mtime + policy.seal_idle - now
        return max(0.001, min(quiet, due + 0.001))
    return quiet


class Tailer:
    """Watch a source directory; keep the current list of segments; wake subscribers on change."""

    def __init__(
        self,
        source: Path,
        pattern: re.Pattern[str],
        policy: SealPolicy,
        poll_interval: float = 0.02,
        recheck_interval: float = 5.0,
        quiet_interval: float = 15.0,
        watch: bool = True,
    ) -> None:
        self.source = source
        self.pattern = pattern
        self.policy = policy
        self.poll_interval = poll_interval
        """Seconds between looks where the directory cannot be watched."""
        self.recheck_interval = recheck_interval
        self.quiet_interval = quiet_interval
        """Seconds between looks at a watched directory that reports no change (a safety net only)."""
        self.watch = watch
        self.segments: list[SegmentInfo] = []
        self.names: list[str] = []
        self.by_name: dict[str, SegmentInfo] = {}
        self._frozen: dict[str, tuple[int, float]] = {}
        self._reported_changed: set[str] = set()
        self._prints: dict[str, Fingerprint] = {}
        self._closed: dict[str, tuple[int, float]] = {}
        """(size, mtime) of each segment when its writer last closed it."""
        self._closed_pending: set[str] = set()
        self._subscribers: list[asyncio.Event] = []
        self._last_recheck = 0.0
        self._high = ""
        self.late: list[str] = []
        """Segments that appeared after a segment sorting after them had been seen (see ``late_arrivals``)."""
        self.error: str | None = None
        self.floor = ""
        """The newest segment seen removed from the front of the source (retention, archive cleanup): a
        copy that ends before it cannot continue and needs a reseed (issue 17)."""
        self.on_floor: Callable[[str], None] | None = None
        """Called when ``floor`` moves (the service persists it)."""
        self._waiting = False
        """run() is waiting on a live watch: a change may be looked at from the watcher's callback."""
        self._scanned = False
        """The watcher's callback looked at the latest change while run() waited (each change is looked at)."""
        self._quiet_key: tuple[tuple[int, ...], ...] | None = None
        """The directory's and each unsealed segment's stat as the last full safety look left them."""
        self._quiet_looks = random.randrange(FULL_LOOK_EVERY)
        """Safety looks taken; a random start, so that the full ones of many streams started together
        fall in different rounds."""

    def subscribe(self) -> asyncio.Event:
        event = asyncio.Event()
        self._subscribers.append(event)
        return event

    def changed_sealed(self) -> set[str]:
        return set(self._reported_changed)

    def scan(self, now: float | None = None) -> bool:
        """Look at the directory once; return whether anything a sender cares about changed."""
        now = time.time() if now is None else now
        recheck = now - self._last_recheck >= self.recheck_interval
        if recheck:
            self._last_recheck = now
        try:
            names = sorted(e.name for e in os.scandir(self.source) if is_segment(e.name, self.pattern))
        except OSError as e:
            if self.error is None:
                log.error("cannot read source directory %s: %s", self.source, e.strerror)
            self.error = f"cannot read source directory {self.source}: {e.strerror}"
            return False
        if self.error is not None:
            log.warning("source directory %s can be read again", self.source)
            self.error = None
        if names != self.names:
            self._note_late(names)
        entries: list[tuple[str, int, float]] = []
        for name in names:
            frozen = self._frozen.get(name)
            if frozen is not None and not recheck:
                entries.append((name, frozen[0], frozen[1]))
                continue
            try:
                st = os.stat(self.source / name)
            except FileNotFoundError:
                continue
            if not (st.st_mode & 0o170000) == 0o100000:
                continue
            if frozen is not None:
                if (st.st_size, st.st_mtime) != frozen and name not in self._reported_changed:
                    self._reported_changed.add(name)
                    fp = self._prints.get(name)
                    where = describe_change(fp, self.source / name) if fp else f"size {frozen[0]} -> {st.st_size}"
                    log.error(
                        "sealed segment %s changed on the source after it was sealed (%s); "
                        "the copy keeps the sealed version and it will not be shipped again",
                        name,
                        where,
                    )
                entries.append((name, frozen[0], frozen[1]))
            else:
                entries.append((name, st.st_size, st.st_mtime))
        segments = classify(entries, self.policy, now, self._closed_now(entries))
        for seg in segments:
            if seg.sealed and seg.name not in self._frozen:
                self._frozen[seg.name] = (seg.size, seg.mtime)
                if (fp := take(self.source / seg.name, seg.size)) is not None:
                    self._prints[seg.name] = fp
        present = set(names)
        for name in [n for n in self._frozen if n not in present]:
            del self._frozen[name]
            self._prints.pop(name, None)
        for name in [n for n in self._closed if n not in present or n in self._frozen]:
            del self._closed[name]
        changed = segments != self.segments
        gone = [n for n in self.names if n not in present and (not names or n < names[0])]
        if gone and max(gone) > self.floor:
            self.floor = max(gone)
            if self.on_floor is not None:
                self.on_floor(self.floor)
        if changed:
            self.segments = segments
            self.names = [s.name for s in segments]
            self.by_name = {s.name: s for s in segments}
        return changed

    def quiet_look(self, now: float | None = None) -> bool:
        """The safety look at a watched directory that reported no change; return whether anything a
        sender cares about changed.

        A full scan only when the directory (an entry added, removed or renamed) or an unsealed segment
        (its size or mtime) changed since the last full safety look, or every ``FULL_LOOK_EVERY``-th
        look; otherwise a few stat() calls: with 1000 idle streams, a scan of each every 15 s was a
        fifth of the idle shipper's CPU (scripts/bench scale). Sealed segments are frozen: only the
        recheck looks at them.
        """
        now = time.time() if now is None else now
        self._quiet_looks += 1
        key = self._stat_key(now)
        if key is not None and key == self._quiet_key and self._quiet_looks % FULL_LOOK_EVERY:
            return False
        changed = self.scan(now)
        self._quiet_key = self._stat_key(now) if self.error is None else None
        return changed

    def _stat_key(self, now: float) -> tuple[tuple[int, ...], ...] | None:
        """The directory's and each unsealed segment's (inode, size, mtime); None if one cannot be had
        or is too recent to be trusted (``RACY``)."""
        source = os.fspath(self.source)
        try:
            st = os.stat(source)
            parts = [(st.st_ino, st.st_size, st.st_mtime_ns)]
            for seg in self.segments:
                if not seg.sealed:
                    st = os.stat(os.path.join(source, seg.name))
                    parts.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            return None
        if max(p[2] for p in parts) >= (now - RACY) * 1e9:
            return None
        return tuple(parts)

    def closed_by_writer(self, name: str) -> None:
        """Note that a writer closed ``name`` (IN_CLOSE_WRITE); the next scan records its size and mtime."""
        self._closed_pending.add(name)

    def _closed_now(self, entries: Sequence[tuple[str, int, float]]) -> set[str]:
        """Return the segments whose writer closed them and that have not changed since."""
        for name in self._closed_pending:
            with contextlib.suppress(OSError):
                st = os.stat(self.source / name)
                self._closed[name] = (st.st_size, st.st_mtime)
        self._closed_pending.clear()
        return {name for name, size, mtime in entries if self._closed.get(name) == (size, mtime)}

    def _note_late(self, names: list[str]) -> None:
        """Log, once each, segments that showed up after a later-sorting one had already been seen.

        Log order is name order: a sender already past such a name never ships it. PostgreSQL's archive
        does this with every ``.backup`` file (named after the backup's start segment, archived after its
        stop segment), so the loss must be loud, never silent.
        """
        for name in late_arrivals(names, self.by_name, self._high):
            self.late.append(name)
            log.error(
                "segment %s appeared after %s, which sorts after it; log order is name order, so targets "
                "already past it will not receive it (ship such files as a stream of their own)",
                name,
                self._high,
            )
        if names and names[-1] > self._high:
            self._high = names[-1]

    def first_after(self, name: str) -> SegmentInfo | None:
        """Return the first segment whose name sorts after ``name``."""
        i = bisect.bisect_right(self.names, name)
        return self.segments[i] if i < len(self.segments) else None

    def notify(self) -> None:
        for event in self._subscribers:
            event.set()

    def _on_change(self, wake: asyncio.Event) -> None:
        """The watched directory changed: look at once, from the watcher's callback, while run() waits.

        This saves the append's trip through run()'s task before the senders hear of it (scripts/bench
        lag: inotify -> tailer task p50 0.04 ms, p90 0.18 ms). run() is still woken, to set its timer
        again from what the look found (a new segment may have a seal timer due sooner), not to look.
        """
        if self._waiting:
            try:
                if self.scan():
                    self.notify()
                self._scanned = self.error is None
            except Exception:  # noqa: BLE001 (looked at again by run(), where a failure is handled)
                self._scanned = False
        wake.set()

    async def run(self) -> None:
        """Scan whenever the directory changes (or every poll_interval unwatched), waking subscribers."""
        watcher: DirectoryWatcher | None = None
        wake = asyncio.Event()
        on_change = functools.partial(self._on_change, wake)
        wd: int | None = None
        quiet = False
        """The last wait ended by the safety timeout alone: no change reported, no seal timer due."""
        try:
            while True:
                if self.watch and (watcher is None or wd is None or not watcher.watching(wd)):
                    # (Re)watch: the first time, and after the directory went away or could not be watched.
                    watcher = DirectoryWatcher.for_loop()
                    wd = watcher.watch(self.source, on_change, self.closed_by_writer) if watcher is not None else None
                # Cleared before the look: a change noticed while we scan wakes us again at once.
                wake.clear()
                had_error = self.error is not None
                if self._scanned:
                    self._scanned = False  # the watcher's callback looked already, since nothing changed
                elif self.quiet_look() if quiet else self.scan():
                    self.notify()
                quiet = False
                if had_error and self.error is None and watcher is not None and wd is not None:
                    # Back after a move or a deletion: the old watch may follow the moved directory.
                    watcher.unwatch(wd, on_change, self.closed_by_writer)
                    wd = None
                    continue
                if wd is None or self.error is not None:
                    # Unwatched, or gone (a moved directory keeps its watch): look every poll_interval.
                    await asyncio.sleep(self.poll_interval)
                    continue
                self._waiting = True
                try:
                    delay = next_look(self.segments, self.policy, time.time(), self.quiet_interval)
                    wait = delay
                    if delay >= self.quiet_interval:  # a safety look, not a seal timer: it may come early
                        now = time.monotonic()
                        wait = max(0.001, on_grid(now + delay, delay) - now)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await wake.wait()
                    quiet = not wake.is_set() and delay >= self.quiet_interval
                finally:
                    self._waiting = False
        finally:
            if watcher is not None and wd is not None:
                watcher.unwatch(wd, on_change, self.closed_by_writer)
