"""Free space on the receiver's data dir: the ``min_free`` threshold, and whether a write may go on.

A full disk is transient (protocol/failures.py): the receiver stops taking bytes while the data dir's
file system has less than ``min_free`` free, tells the shipper ``no-space`` so that it backs off, and
takes bytes again once space returns. The threshold keeps the disk from being really full, so that
state.json, the manifest and replay still find room; ENOSPC on a write is handled the same way.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from logship.files import write_atomic
from protocol.failures import Kind, classify_os_error
from receiver.space_config import MinFree
from receiver.storage_retry import StorageTrouble
from receiver.store import ReplicaError

log = logging.getLogger("receiver")

NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class ReplicaNoSpace(ReplicaError):
    """Replay could not install a segment for lack of space: it waits for space, it never gives up."""


SPACE_WAIT_MAX = 30.0


def space_wait(waits: int) -> float:
    """Return the pause before replay tries again after ``waits`` full-disk failures in a row."""
    return min(SPACE_WAIT_MAX, 2.0 ** (waits - 1))


def is_no_space(error: BaseException) -> bool:
    """Return whether ``error`` is a full disk (or quota): transient, it heals once space returns."""
    return isinstance(error, OSError) and error.errno in NO_SPACE_ERRNOS


async def write_until_room(path: Path, produce: Callable[[], bytes], max_pause: float = 5.0) -> int:
    """Write ``produce()`` to ``path`` crash-safely, retrying while the disk is full or failing (EIO);
    return the retries.

    ``produce`` is called again for every attempt: what is written is the newest state, not the one of
    the first try. Any other OSError is raised as before. Logged once per file system episode.
    """
    loop = asyncio.get_running_loop()
    tries = 0
    while True:
        try:
            await loop.run_in_executor(None, write_atomic, path, produce())
        except OSError as e:
            if classify_os_error(e) is not Kind.TRANSIENT:
                raise
            tries += 1
            if tries == 1:
                # A full disk, or an I/O error (EIO): both heal by themselves (write_atomic writes a new
                # temp file each time, never an fsync retried on the same one).
                log.warning("cannot save %s: %s; retrying until it can be written", path, e.strerror or e)
            await asyncio.sleep(min(max_pause, 0.1 * 2**tries))
            continue
        if tries:
            log.warning("saved %s after %d retries", path, tries)
        return tries


NO_SPACE_WORDS = tuple(os.strerror(code) for code in sorted(NO_SPACE_ERRNOS))
"""What a command that met a full disk (or quota) prints: "No space left on device", "Disk quota exceeded"."""


def command_lacks_space(output: str, free: Sequence[tuple[int, int]], min_free: MinFree | None = None) -> str | None:
    """Decide whether a replay command that failed did so for lack of space: return why, or None. Pure.

    ``free`` is (free, total) bytes of each file system it may have written to (replica/, the data dir).
    Lack of space when the command said so itself, or when one of them is below ``min_free`` or has less
    than ``ENOSPC_ROOM`` left (at most a tenth of it: a tiny file system is not always full). Anything
    else is an ordinary replay failure, retried and then Failed as before.
    """
    for words in NO_SPACE_WORDS:
        if words.lower() in output.lower():
            return f"it said {words!r}"
    threshold = min_free or MinFree()
    for avail, total in free:
        if total <= 0:
            continue
        need = max(threshold.threshold(total), min(ENOSPC_ROOM, total // 10))
        if avail < need:
            return f"only {human(avail)} of {human(total)} free (below {human(need)})"
    return None


def free_space(paths: Sequence[Path]) -> list[tuple[int, int]]:
    """Return (free, total) bytes of the file system of each path that exists (statvfs follows symlinks)."""
    found: list[tuple[int, int]] = []
    for path in paths:
        try:
            st = os.statvfs(path)
        except OSError:
            continue
        found.append((st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize))
    return found


def human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


ENOSPC_ROOM = 8 * 1024 * 1024
"""Room beyond the free space of a failed write that counts as space returned (a few batches; at most
a tenth of the file system)."""


class SpaceGuard:
    """Whether the data dir has room for more bytes; shared by every connection of one receiver.

    ``problem()`` asks the file system at most every ``interval`` seconds (statvfs is cheap, but it is
    asked per DATA frame). A full disk is logged once when it begins and once when it ends, however
    many shippers knock meanwhile.
    """

    def __init__(self, path: Path, min_free: MinFree | None = None, interval: float = 0.2) -> None:
        self.path = path
        self.min_free = min_free or MinFree()
        self.interval = interval
        self._checked_at = -1e9
        self._problem: str | None = None
        self._floor = 0
        """Free bytes at the last ENOSPC plus ``ENOSPC_ROOM``: full until there is more (0: none)."""
        self.full_since: float | None = None
        """Clock time since when the disk is too full; None while there is room."""
        self.refusals = 0
        """Connections and writes turned away for lack of space since this receiver started."""
        self.storage = StorageTrouble()
        """The copies whose writes failed lately with an I/O error (receiver/storage_retry.py)."""
        self.refused_streams: set[str] = set()
        """Streams whose shippers were told ``no-space`` since the disk became full (their status rows say so)."""
        self._free_seen = (0, 0)

    def problem(self, now: float | None = None) -> str | None:
        """Return why no more bytes should be accepted (the disk is too full), or None."""
        now = time.monotonic() if now is None else now
        if now - self._checked_at >= self.interval:
            self._checked_at = now
            self._set(self._look())
        return self._problem

    def refused(self, *streams: str) -> None:
        """Count a connection (shipping ``streams``) told to back off for lack of space."""
        self.refusals += 1
        self.refused_streams.update(streams)

    def waiting(self, stream: str, replay_wait: str | None = None) -> str | None:
        """Return why ``stream``'s copy waits for its storage, for its status row; None if it does not.

        Its shipper was refused for a full disk, its writes failed with EIO lately, or (``replay_wait``,
        the replayer's reason) its replay waits for space.
        """
        trouble = self.storage.problem(stream)
        if trouble is not None:
            return trouble
        if stream in self.refused_streams and self._problem is not None:
            free, _ = self._free_seen
            return f"disk full ({human(free)} free, min_free {self.min_free})"
        if replay_wait is not None:
            return f"replay {replay_wait}"
        return None

    def enospc(self, error: BaseException) -> str:
        """Record a write that failed for lack of space (ENOSPC / EDQUOT); return the reason to send."""
        # The file system said no at this much free space: until it has clearly more (``ENOSPC_ROOM``
        # above it), it counts as full even if that is above min_free, so that a write larger than
        # min_free does not fail, "recover" and fail again every few seconds.
        self.refusals += 1
        free, total = self._free()
        self._floor = free + min(ENOSPC_ROOM, total // 10)
        self._checked_at = time.monotonic()
        self._set(self._look() or f"disk full while writing: {getattr(error, 'strerror', None) or error}")
        assert self._problem is not None
        return self._problem

    def _free(self) -> tuple[int, int]:
        """Return (free, total) bytes of the data dir's file system ((0, 0) if it cannot be asked)."""
        try:
            st = os.statvfs(self.path)
        except OSError:
            return 0, 0
        return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize

    def _look(self) -> str | None:
        free, total = self._free_seen = self._free()
        if total == 0:
            # The data dir vanished or cannot be read: logship/dirwatch.py deals with that.
            return None
        need = max(self.min_free.threshold(total), self._floor)
        if free > need:
            self._floor = 0
            return None
        return (
            f"receiver disk full: {human(free)} free of {human(total)} on {self.path}, "
            f"below the {human(need)} it keeps free (min_free {self.min_free}); waiting for space"
        )

    def _set(self, problem: str | None) -> None:
        if problem is not None and self._problem is None:
            self.full_since = time.monotonic()
            log.error("%s (shippers are told to back off; nothing acknowledged is lost)", problem)
        elif problem is None and self._problem is not None:
            since = self.full_since or time.monotonic()
            log.warning("space returned on %s after %.1fs: accepting bytes again", self.path, time.monotonic() - since)
            self.full_since = None
            self.refused_streams.clear()
        self._problem = problem
