"""Reading a stream's segments from its source directory for one target.

``next_step()`` is the pure decision of what to send at a cursor, given the tailer's view of the
source. ``SegmentReader`` reads the bytes and keeps the running digest of the segment being sent,
which its SEAL carries.
"""

from __future__ import annotations

import logging
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import xxhash

from protocol.digest import segment_hasher
from protocol.messages import Position
from shipper.tailer import SegmentInfo, Tailer
from shipper.window import Cursor

log = logging.getLogger("shipper")

MADV_POPULATE_READ = 22
"""madvise(2) since Linux 5.14 (Python 3.11's mmap module does not name it)."""


class SourceError(Exception):
    """The source cannot give the bytes a target needs now; start over from the target's position."""


@dataclass(frozen=True, slots=True)
class SendData:
    segment: str
    offset: int
    length: int
    sealed: bool = False
    """The segment is complete on the source (its bytes may be mapped rather than copied: ``SegmentReader.view``)."""


@dataclass(frozen=True, slots=True)
class SendSeal:
    segment: str
    size: int


@dataclass(frozen=True, slots=True)
class Open:
    segment: str


@dataclass(frozen=True, slots=True)
class Wait:
    pass


@dataclass(frozen=True, slots=True)
class Stuck:
    reason: str


Step = SendData | SendSeal | Open | Wait | Stuck


def next_step(tailer: Tailer, cursor: Cursor, chunk_size: int) -> Step:
    """Decide what to send next from ``cursor`` given the tailer's view of the source."""
    if cursor.sealed:
        if cursor.segment < tailer.floor:
            # The segments after the copy's end were removed from the source: shipping the oldest one
            # left would put a gap in the copy. Only a base image can bring it back (issue 17).
            oldest = tailer.names[0] if tailer.names else "none"
            return Stuck(
                f"needs reseed: the copy ends at {cursor.segment or 'the stream start'}, but the source removed "
                f"segments up to {tailer.floor} (oldest kept: {oldest}); run `receiver reseed` on the target"
            )
        nxt: SegmentInfo | None = tailer.first_after(cursor.segment)
        return Wait() if nxt is None else Open(nxt.name)
    info = tailer.by_name.get(cursor.segment)
    if info is None:
        return Stuck(f"segment {cursor.segment} is gone from the source before it was fully shipped")
    if cursor.offset < info.size:
        return SendData(cursor.segment, cursor.offset, min(chunk_size, info.size - cursor.offset), info.sealed)
    if cursor.offset > info.size:
        return Stuck(f"segment {cursor.segment} shrank on the source to {info.size} bytes below {cursor.offset} sent")
    if info.sealed:
        return SendSeal(cursor.segment, info.size)
    return Wait()


class SegmentReader:
    """Read one segment at a time from ``source``, hashing its bytes in order for the SEAL."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self._hasher: xxhash.xxh3_128 = segment_hasher()
        self._fd = -1
        self._fd_name = ""

    def seek(self, pos: Position) -> None:
        """Go to ``pos`` inside an unsealed segment, hashing the bytes before it.

        Raises SourceError if the segment is missing or shorter than ``pos``.
        """
        self._hasher = segment_hasher()
        if pos.offset:
            fd = self._open(pos.segment)
            done = 0
            while done < pos.offset:
                block = os.pread(fd, min(4 << 20, pos.offset - done), done)
                if not block:
                    raise SourceError(f"segment {pos.segment} on the source is shorter than the copy ({pos.offset})")
                self._hasher.update(block)
                done += len(block)

    def read(self, segment: str, offset: int, length: int) -> bytes:
        """Return up to ``length`` bytes at ``offset``; only a whole read counts towards the digest.

        Raises SourceError if the segment is missing.
        """
        payload = os.pread(self._open(segment), length, offset)
        if len(payload) == length:
            self._hasher.update(payload)
        return payload

    def read_into(self, segment: str, offset: int, buf: bytearray) -> int:
        """Fill ``buf`` from ``offset``; return the bytes read. Only a whole buffer counts towards the digest.

        Raises SourceError if the segment is missing.
        """
        n = os.preadv(self._open(segment), [buf], offset)
        if n == len(buf):
            self._hasher.update(buf)
        return n

    def view(
        self, segment: str, offset: int, length: int, first: Callable[[memoryview], object] | None = None
    ) -> memoryview | None:
        """Return ``length`` bytes at ``offset`` mapped from the page cache, hashed; None where they
        cannot be mapped whole (the caller reads them into a buffer instead). ``first`` is called with
        the view before it is hashed (the pass that reads the pages from memory).

        Raises SourceError if the segment is missing.
        """
        fd = self._open(segment)
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        try:
            mapping = mmap.mmap(fd, offset + length - start, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ, offset=start)
        except (OSError, ValueError):
            return None
        try:
            # Page tables filled in one call instead of a fault per page; EFAULT where a page lies
            # past the end of the file (it shrank), which a later access would raise as SIGBUS.
            mapping.madvise(MADV_POPULATE_READ)
        except OSError:
            mapping.close()
            return None
        view = memoryview(mapping)[offset - start :]
        if first is not None:
            first(view)
        self._hasher.update(view)
        return view

    def digest(self) -> bytes:
        """Return the digest of the segment's bytes read so far (its whole content once all are read)."""
        return self._hasher.digest()

    def digest_on_disk(self, segment: str, size: int) -> bytes:
        """Return the digest of the first ``size`` bytes of ``segment`` as the source holds them now.

        For ``--seal closed``: a writer that rewrites a byte it wrote earlier (MariaDB's in-use flag at
        offset 21, cleared at rotation) leaves the bytes already sent stale. A SEAL carrying this digest
        then fails at the receiver, which fetches the segment again, so the copy equals the source.
        """
        fd = self._open(segment)
        hasher = segment_hasher()
        done = 0
        while done < size and (block := os.pread(fd, min(4 << 20, size - done), done)):
            hasher.update(block)
            done += len(block)
        digest = hasher.digest()
        if digest != self._hasher.digest():
            log.warning("segment %s changed on the source while it was shipped; the target fetches it again", segment)
        return digest

    def _open(self, segment: str) -> int:
        if self._fd_name != segment:
            self.close()
            try:
                self._fd = os.open(self.source / segment, os.O_RDONLY)
            except FileNotFoundError:
                raise SourceError(f"segment {segment} is missing from the source") from None
            self._fd_name = segment
        return self._fd

    def close(self) -> None:
        """Close the segment's file, if open."""
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._fd_name = -1, ""
