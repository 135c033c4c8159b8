"""Write the chunks of one partial segment: contiguous chunks in one pwritev, page-aligned ones with O_DIRECT.

Durability is not decided here: the store fdatasyncs the partial before anything is acknowledged,
whichever way its bytes went. What this changes is the CPU the receiver spends per byte. Written
through the page cache, each byte was copied into it, its pages allocated and set up for delayed
allocation, written back, then dropped again with posix_fadvise (perf, scripts/bench throughput:
pwrite ~26 % of the receiver's CPU, fadvise ~7 %). A chunk that arrived in a page-aligned buffer
(protocol.buffers.page_aligned) at a block-aligned offset and length goes to the device straight
from that buffer instead (O_DIRECT), and never enters the page cache. Everything else (small appends,
a segment's unaligned tail, a filesystem without O_DIRECT) is written through the page cache as before.

Mixing the two on one file is safe here: the ranges never overlap (a partial is only appended to,
block-aligned where written directly), and the kernel writes back and drops any cached page of a
range before it writes that range directly, so a later buffered read (recovery) sees the bytes.

``PendingSync`` is what a store write() leaves to its sync(): the descriptors to fdatasync.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from protocol.buffers import ALIGN, AlignedBuffer, page_aligned

log = logging.getLogger("receiver")

_LIBC = ctypes.CDLL(None, use_errno=True)
_WRITE = 2
"""SYNC_FILE_RANGE_WRITE: start writeback of the range now, wait for nothing (durability is fdatasync's)."""
MAX_RUN = 64
"""Chunks per pwritev at most (IOV_MAX is 1024; 64 MiB of 1 MiB chunks is already one long write)."""

DIRECT = True
"""Write aligned chunks with O_DIRECT where the filesystem allows it (tests turn it off to compare)."""
_direct_refused: set[int] = set()
"""Devices (st_dev) whose filesystem refused O_DIRECT: not asked again by this process."""


class SharedFd:
    """A descriptor held by the store and by the syncs of the batches written through it, closed when
    the last holder lets go. A sync may run in another thread while the store closes the file (the
    next batch installs the segment or opens the next): holding instead of a dup() and a close() per
    batch and file saves four syscalls per batch, each one the worker thread's GIL to win back."""

    __slots__ = ("_holders", "_lock", "fd")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._holders = 1
        self._lock = threading.Lock()

    def hold(self) -> SharedFd:
        with self._lock:
            if self._holders <= 0:
                raise ValueError("descriptor already closed")
            self._holders += 1
        return self

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            last = self._holders == 0
        if last:
            os.close(self.fd)


class PartialWriter:
    """The open descriptors of one partial and the run of chunks not yet written to it.

    ``add()`` queues a chunk, ``flush()`` writes what is queued; ``cached`` is the range of bytes
    written through the page cache since the caller last took it (``take_cached()``), for the
    store to drop from the cache once they are durable.
    """

    def __init__(self, path: Path) -> None:
        self.name = path.name
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        self.direct_fd = -1
        if DIRECT:
            dev = os.fstat(self.fd).st_dev
            if dev not in _direct_refused:
                try:
                    self.direct_fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
                except OSError as e:
                    if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                        os.close(self.fd)
                        raise
                    _direct_refused.add(dev)
                    log.info("%s: the filesystem refuses O_DIRECT; writing through the page cache", path.parent)
        self.shared = SharedFd(self.fd)
        """``fd`` as the syncs of this file's batches hold it (closed once all let go)."""
        self._run: list[AlignedBuffer | memoryview | bytes] = []
        self._run_offset = 0
        self._run_end = 0
        self._run_direct = False
        self._run_later = False
        self._cached: tuple[int, int] | None = None
        self.direct_bytes = 0
        self.cached_bytes = 0
        self.deferred = False
        """Bytes went through the page cache that no fdatasync of this file covered when they were
        acknowledged (inline batches, receiver/chunk_index.py): the install drops the whole file's pages."""

    def add(self, offset: int, payload: bytes | memoryview | AlignedBuffer, direct: bool = True) -> None:
        """Queue ``payload`` for ``offset``; written by this call or a later ``flush()``.

        ``direct`` False (an inline batch, receiver/chunk_index.py): through the page cache, and its
        writeback left to the caller (``start_writeback()`` once the batch is durable), since both a
        direct write and an early writeback would queue before the .idx's fdatasync on the device.
        """
        later = not direct
        direct = direct and self.direct_fd >= 0 and page_aligned(payload)
        direct = direct and offset % ALIGN == 0 and len(payload) % ALIGN == 0
        if self._run and (
            offset != self._run_end
            or direct != self._run_direct
            or later != self._run_later
            or len(self._run) >= MAX_RUN
        ):
            self.flush()
        if not self._run:
            self._run_offset = self._run_end = offset
            self._run_direct = direct
            self._run_later = later
        self._run.append(payload)
        self._run_end += len(payload)

    def flush(self) -> None:
        """Write the queued chunks. Raises OSError (a short write too)."""
        if not self._run:
            return
        run, offset, end = self._run, self._run_offset, self._run_end
        self._run = []
        if self._run_direct:
            try:
                self._pwritev(self.direct_fd, run, offset, end)
                self.direct_bytes += end - offset
                return
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                # Alignment this filesystem or device does not take after all: the page cache from now on.
                log.info("O_DIRECT write refused (%s); writing through the page cache", e.strerror)
                _direct_refused.add(os.fstat(self.fd).st_dev)
                os.close(self.direct_fd)
                self.direct_fd = -1
        self._pwritev(self.fd, run, offset, end)
        self.cached_bytes += end - offset
        if not self._run_later:
            # Start writing the run out at once, so the batch's fdatasync finds less to do.
            start_writeback(self.fd, offset, end)
        lo, hi = self._cached or (offset, end)
        self._cached = (min(lo, offset), max(hi, end))

    def _pwritev(self, fd: int, run: list[AlignedBuffer | memoryview | bytes], offset: int, end: int) -> None:
        written = os.pwritev(fd, run, offset) if len(run) > 1 else os.pwrite(fd, run[0], offset)
        if written != end - offset:
            # A regular file takes fewer bytes only when its file system is full (the disk-full path
            # backs off on ENOSPC: receiver/space.py).
            text = f"short write of {self.name}: {written} of {end - offset} bytes at offset {offset}"
            raise OSError(errno.ENOSPC, text)

    def take_cached(self) -> tuple[int, int] | None:
        """Return (and forget) the range written through the page cache since the last call."""
        cached, self._cached = self._cached, None
        return cached

    def close(self) -> None:
        """Close both descriptors (``fd`` once the syncs holding it let go too); queued chunks not
        flushed are dropped (flush() first)."""
        self._run = []
        if self.fd >= 0:
            self.shared.release()
        if self.direct_fd >= 0:
            os.close(self.direct_fd)
        self.fd = self.direct_fd = -1


def start_writeback(fd: int, start: int, end: int) -> None:
    """Start writing ``fd``'s cached bytes ``start``-``end`` to the disk; wait for nothing."""
    _LIBC.sync_file_range(fd, ctypes.c_int64(start), ctypes.c_int64(end - start), _WRITE)


@dataclass(slots=True)
class FileSync:
    """One file a write() left to make durable: its descriptors (held for this sync and let go by it,
    so the store may close or rename the files meanwhile) and how to flush them."""

    segment: str
    partial: SharedFd
    idx: SharedFd
    cached: tuple[int, int] | None
    """The range written through the page cache: dropped after the flush (plain), or the partial's
    to start writing back after the .idx's flush (inline)."""
    inline: bool
    """Only the .idx is fdatasynced: its records carry the bytes (receiver/chunk_index.py)."""

    @property
    def fd(self) -> int:
        return self.partial.fd

    @property
    def idx_fd(self) -> int:
        return self.idx.fd

    def close(self) -> None:
        self.partial.release()
        self.idx.release()


@dataclass(slots=True)
class PendingSync:
    """What a write() left to make durable: the files its chunks went to, and whether the directory
    entries it created need a flush."""

    files: list[FileSync]
    sync_incoming: bool = False

    def close(self) -> None:
        for entry in self.files:
            entry.close()
        self.files = []

    def drop(self, segment: str) -> tuple[int, int] | None:
        """Forget (and close) the entries of ``segment``; return the cached range they had."""
        cached: tuple[int, int] | None = None
        for entry in [e for e in self.files if e.segment == segment]:
            self.files.remove(entry)
            entry.close()
            if entry.cached is not None and not entry.inline:
                lo, hi = cached or entry.cached
                cached = (min(lo, entry.cached[0]), max(hi, entry.cached[1]))
        return cached
