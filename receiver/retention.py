"""Standby retention: remove replayed segments from a copy's log/ and replica/ once nothing needs them,
and compact the manifest so that its chain still checks from the oldest kept segment (a base record).

``decide()`` is the pure decision: given the manifest records, the replayed segment, ``now``, the
settings (receiver/retention_config.py), when each segment was replayed and whether the copy holds
everything, it says what may go. What may go is always a prefix of the log that ends before the last
replayed segment:

- nothing not yet replayed: a lagged replay, an inspector retry and activation's catch-up need it, and
  so does the partial (it is not in log/ at all);
- not the last replayed segment: a restart resumes after it (the newest sealed segment in log/ is where
  the WELCOME position comes from) and a rewind may cut at its end;
- not the newest ``keep_min`` segments, nor one replayed less than ``truncation_lag`` ago;
- nothing of a copy that is Suspended, Failed, activated (or being activated), or in any state but the
  plain standby's (a reseed's Seeding too): an operator looking at a problem finds everything.

``StandbyRetainer`` carries it out, in this order, so that a kill -9 anywhere leaves a copy whose
manifest never names a segment that is gone: (1) the manifest is compacted (one atomic rename: the base
moves after the last removed segment, with that record's digest and the running count of what was
removed); (2) the segments at or before the base are unlinked from log/; (3) replica/ loses what it no
longer needs. A crash after (1) leaves files outside the chain; the next step (each start runs one)
finds them by name, at or before the base, and removes them. replica/ never loses a segment log/ still
has a record of: activation checks every recorded, replayed segment is in replica/, and a replica/
segment is a hard link to its log/ file, so removing it alone frees no disk anyway.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from logship.files import fsync_dir
from receiver.manifest import Base, Installed
from receiver.retention_config import CONSUMER, RetentionSettings
from receiver.state import CopyState
from receiver.status import copy_state
from receiver.store import SegmentStore
from receiver.targets import run_command

log = logging.getLogger("receiver")

CLEANUP_TIMEOUT = 600.0
"""Seconds a replica cleanup command may run."""
DISK_EVERY = 10.0
"""Seconds between measurements of disk_bytes when nothing was removed (a scan of log/ and replica/)."""


# -- the decision (pure) -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trim:
    """What retention may remove from one copy now."""

    through: str = ""
    """log/: every segment up to and including this one goes ("" none)."""
    segments: int = 0
    bytes: int = 0
    """How many segments and bytes that is."""
    replica_floor: str = ""
    """The oldest segment replica/ must keep ("": it keeps everything)."""
    replica_gone: tuple[str, ...] = ()
    """The names in replica/ before that floor."""
    next_at: float | None = None
    """When the next segment gets past the truncation lag (look again then); None: at the next replay."""
    held: str | None = None
    """Why nothing may go at all (the copy's state, or ``keep = all``); None: the rest applies."""


def decide(
    records: Sequence[Installed],
    replayed: str,
    now: float,
    settings: RetentionSettings,
    replayed_at: Callable[[str], float],
    held: str | None = None,
    replica: Sequence[str] = (),
) -> Trim:
    """Decide what may be removed from a copy whose manifest holds ``records`` (log order), replayed up
    to ``replayed`` ("" nothing yet). ``replayed_at(name)``: when that segment was replayed, or a time
    no earlier (after a restart: the start). ``held``: why the copy keeps everything (None: it may
    trim). ``replica``: the segment names in replica/, in log order."""
    if held is not None:
        return Trim(held=held)
    if settings.keep == "all":
        return Trim(held="keep = all")
    done = bisect.bisect_right(records, replayed, key=lambda r: r.name) if replayed else 0
    # Never the last replayed segment, never one of the newest keep_min.
    limit = min(done - 1 if done and records[done - 1].name == replayed else done, len(records) - settings.keep_min)
    n, next_at = 0, None
    # Replay goes in log order, so the segments past the lag are a prefix: stop at the first one that
    # is not (no copy of a day's records per replayed segment).
    while n < limit:
        due = replayed_at(records[n].name) + settings.truncation_lag
        if due > now:
            next_at = due
            break
        n += 1
    gone = records[:n]
    floor = records[n].name if n < len(records) else ""
    if settings.replica_keep == CONSUMER:
        floor = ""  # the database cleans replica/ itself
    elif floor and isinstance(settings.replica_keep, int) and settings.replica_keep:
        replayed_names = [name for name in replica if name <= replayed]
        keep_from = replayed_names[-settings.replica_keep] if len(replayed_names) >= settings.replica_keep else ""
        floor = min(floor, keep_from)
    return Trim(
        through=gone[-1].name if gone else "",
        segments=n,
        bytes=sum(r.size for r in gone),
        replica_floor=floor,
        replica_gone=tuple(name for name in replica if floor and name < floor),
        next_at=next_at,
    )


def hold_reason(state: CopyState, activating: bool = False) -> str | None:
    """Say why a copy in ``state`` keeps everything (None: retention may trim it).

    Only a plain standby trims: copy_state() names every other state (Suspended, Failed, Activated, and
    any a later version adds, such as a reseed's), and each of them keeps everything.
    """
    if activating:
        return "Activated"
    name = copy_state(state, None)
    return None if name == "Disconnected" else name


def retention_fields(installed: Sequence[Installed], base: Base | None) -> dict[str, Any]:
    """Return the status fields of retention: what log/ keeps (per the manifest), what went before it."""
    return {
        "kept_segments": len(installed),
        "kept_bytes": sum(r.size for r in installed),
        "oldest_kept": installed[0].name if installed else None,
        "removed_segments": base.removed if base is not None else 0,
        "removed_bytes": base.removed_bytes if base is not None else 0,
    }


# -- the file verbs (blocking; run in a worker thread) ---------------------------------------------


def _segment_names(directory: os.PathLike[str] | str) -> list[str]:
    """The segment names in ``directory`` in log order: no temp files, no activation tail."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    return sorted(
        e.name
        for e in entries
        if e.is_file(follow_symlinks=False) and not e.name.startswith(".") and not e.name.endswith(".partial")
    )


def remove_log_through(store: SegmentStore, after: str) -> int:
    """Unlink every segment of log/ named ``after`` or before (they are outside the manifest's chain
    now); return how many were there."""
    gone = [name for name in _segment_names(store.log_dir) if name <= after]
    for name in gone:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(store.log_dir / name)
        store.fresh.pop(name, None)
    if gone:
        fsync_dir(store.log_dir)
    return len(gone)


def remove_replica(store: SegmentStore, names: Sequence[str]) -> None:
    """Unlink ``names`` from replica/."""
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(store.replica / name)
    if names:
        fsync_dir(store.replica)


def disk_bytes(store: SegmentStore) -> int:
    """Return the bytes log/ and replica/ take together, a file linked into both counted once."""
    seen: dict[tuple[int, int], int] = {}
    for directory in (store.log_dir, store.replica):
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue
        for e in entries:
            with contextlib.suppress(FileNotFoundError):
                st = e.stat(follow_symlinks=False)
                seen[(st.st_dev, st.st_ino)] = st.st_size
    return sum(seen.values())


# -- the loop --------------------------------------------------------------------------------------


class RetainedCopy(Protocol):
    """What retention needs of its stream's copy (receiver/copy.py's ``StreamCopy``)."""

    name: str
    store: SegmentStore
    state: CopyState
    installed: list[Installed]
    base: Base | None
    activating: bool


class StandbyRetainer:
    """Remove one copy's replayed segments as ``decide()`` allows: after each replay, when the next
    one gets past the lag, when an operator resumes the copy, and once at start."""

    def __init__(
        self,
        copy: RetainedCopy,
        settings: RetentionSettings,
        directory: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.copy = copy
        self.settings = settings
        self.directory = directory
        """Whether replica/ is this copy's replay target (directory mode); else only the command cleans it."""
        self.clock = clock
        self.started = clock()
        self.replayed_times: dict[str, float] = {}
        """When each segment replayed by this process was replayed; one replayed before it started counts
        as replayed at the start (no earlier than the truth: the lag is never cut short)."""
        self.disk_bytes: int | None = None
        """Bytes of log/ and replica/ at the last step (None before the first)."""
        self.wake = asyncio.Event()
        self._cleaned = ""
        """The floor the cleanup command last succeeded with."""
        self._swept = False
        """Whether a step looked for what a crash between compaction and unlink left behind."""
        self._measured = 0.0
        """Clock time of the last disk_bytes measurement."""
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def replayed(self, segment: str, at: float) -> None:
        """Note that ``segment`` was replayed at ``at`` and look again."""
        if self.settings.keep == "all":
            return  # nothing will ever go: remember nothing (the times would pile up for ever)
        self.replayed_times[segment] = at
        self.wake.set()

    def pruned_before(self, replica_names: set[str] | None) -> str:
        """The name before which replica/ was pruned on purpose by its consumer ("" none): activation does
        not count those segments as missing (``replica_keep = "consumer"``)."""
        if self.settings.replica_keep != CONSUMER or not replica_names:
            return ""
        segments = [n for n in replica_names if not n.startswith(".") and not n.endswith(".partial")]
        return min(segments, default="")

    def replayed_at(self, segment: str) -> float:
        return self.replayed_times.get(segment, self.started)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"retention-{self.copy.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        """Trim for ever, sleeping until a replay, the lag, or an operator wakes us."""
        while True:
            self.wake.clear()
            try:
                trim = await self.step()
                timeout = None if trim.next_at is None else max(0.0, trim.next_at - self.clock()) + 0.01
            except Exception:
                # A disk error or a manifest that cannot be rewritten: retention is not worth stopping
                # the copy for; it keeps everything meanwhile and tries again.
                log.exception("stream %s: standby retention failed; trying again in 30s", self.copy.name)
                timeout = 30.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.wake.wait()

    async def step(self) -> Trim:
        """Remove what ``decide()`` allows now; return the decision."""
        async with self._lock:
            return await self._step()

    async def _step(self) -> Trim:
        copy, store = self.copy, self.copy.store
        loop = asyncio.get_running_loop()
        now = self.clock()
        held = hold_reason(copy.state, copy.activating)
        replayed = copy.state.replayed or ""
        trim = decide(copy.installed, replayed, now, self.settings, self.replayed_at, held)
        # The directories are scanned only when something may go: a trim, the first step (what a crash
        # left), or replica_keep N (its count moves with each replay; replica/ is short then). A replay
        # within the lag, the common case, costs no scan of a log/ that may hold a day of segments.
        first = not self._swept
        counted = isinstance(self.settings.replica_keep, int) and self.settings.replica_keep > 0
        if trim.held is None and self.directory and (trim.through or first or counted):
            replica = await loop.run_in_executor(None, _segment_names, store.replica)
            trim = decide(copy.installed, replayed, now, self.settings, self.replayed_at, held, replica)
        if trim.held is None:
            if trim.through:
                done = await loop.run_in_executor(None, store.manifest.compact, trim.through, now)
                if done is not None:
                    base = done[0]
                    # Only older records drop: ones installed meanwhile (newer names) stay in the list.
                    copy.base = base
                    copy.installed = [r for r in copy.installed if r.name > base.after]
                    for name in [n for n in self.replayed_times if n <= base.after]:
                        del self.replayed_times[name]
                    log.info(
                        "stream %s: retention removed %d segment(s), %d bytes, through %s",
                        copy.name,
                        trim.segments,
                        trim.bytes,
                        base.after,
                    )
            if (trim.through or first) and copy.base is not None and copy.base.why == "retention":
                await loop.run_in_executor(None, remove_log_through, store, copy.base.after)
            self._swept = True
            await self._clean_replica(trim)
        if trim.through or self.disk_bytes is None or now - self._measured >= DISK_EVERY:
            self.disk_bytes = await loop.run_in_executor(None, disk_bytes, store)
            self._measured = now
        return trim

    async def _clean_replica(self, trim: Trim) -> None:
        command = self.settings.replica_cleanup_command
        loop = asyncio.get_running_loop()
        if command is None:
            if self.directory and trim.replica_gone:
                await loop.run_in_executor(None, remove_replica, self.copy.store, trim.replica_gone)
            return
        floor = trim.replica_floor
        if not floor or floor <= self._cleaned:
            return
        values = {"{oldest}": floor, "{replica}": str(self.copy.store.replica), "{stream}": self.copy.name}
        for key, value in values.items():
            command = command.replace(key, shlex.quote(value))
        env = {"LOGSHIP_STREAM": self.copy.name, "LOGSHIP_OLDEST": floor, "LOGSHIP_REPLICA": values["{replica}"]}
        rc, out = await loop.run_in_executor(None, run_command, command, CLEANUP_TIMEOUT, env)
        if rc == 0:
            self._cleaned = floor
        else:
            log.warning("stream %s: replica cleanup command failed (exit %d): %s", self.copy.name, rc, out)
