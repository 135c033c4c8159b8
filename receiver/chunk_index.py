"""The chunk records of a partial segment (incoming/<segment>.idx): their format, packing and parsing.

A record is ``>QIQ``: offset (u64), length (u32), xxh3_64 of the chunk (u64). Two kinds:

- plain: the chunk's bytes are in the partial only, which was fdatasynced with the record;
- inline (the top bit of the length set): the record is followed in the .idx by the chunk's own
  bytes. A small batch is made durable by fdatasyncing the .idx alone (one device flush instead of
  two); its bytes go to the partial through the page cache and become durable there at the install's
  fsync or at the next batch that fdatasyncs the partial. Until then recovery writes them back into
  the partial from here (``SegmentStore._verify_partial``).

An .idx written before inline records existed holds plain records only and reads the same.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import xxhash

from logship.files import from_the_disk
from protocol.digest import chunk_digest, segment_hasher
from receiver.ops import Op, Write

RECORD = struct.Struct(">QIQ")
INLINE = 0x8000_0000
"""Flag in the length field: the chunk's bytes follow the record. No chunk is 2 GiB long."""
INLINE_MAX = 64 * 1024
"""A batch whose chunks to one partial total at most this many bytes is journaled inline: writing
them twice costs less than a second fdatasync (scripts/bench lag: the partial's fdatasync then the
.idx's, p50 0.50 ms against 0.35 ms for one)."""

WRITEBACK_EVERY = 1024 * 1024
"""Inline batches leave the partial's bytes in the page cache; their writeback is started once this
many have piled up, not after every batch: a 4 KiB write queued on the device after each flush made
the next batch's flush wait for it (scripts/benchmarks/fixes.md, eighth round: lag)."""


class Writeback:
    """The range of one partial that inline batches wrote through the page cache and that no
    writeback was started for yet. Only a matter of pace: the bytes are durable in the .idx."""

    __slots__ = ("start",)

    def __init__(self) -> None:
        self.start = -1

    def due(self, records: list[Write]) -> tuple[int, int] | None:
        """Note a batch's ``records``; return the range to start writing back now, if one is due."""
        if not records:
            return None
        first, end = records[0].offset, records[-1].offset + len(records[-1].payload)
        self.start = first if self.start < 0 else min(self.start, first)
        if end - self.start < WRITEBACK_EVERY:
            return None
        span, self.start = (self.start, end), -1
        return span


def inline_segments(ops: Iterable[Op]) -> frozenset[str]:
    """Return the segments whose chunks in the batch ``ops`` are journaled inline: at most
    ``INLINE_MAX`` bytes to that partial in the whole batch. The one decision for both halves of a
    batch: how its chunks are written (through the page cache, writeback after the flush) and which
    records and flushes make them durable."""
    sizes: dict[str, int] = {}
    for op in ops:
        if isinstance(op, Write):
            sizes[op.segment] = sizes.get(op.segment, 0) + len(op.payload)
    return frozenset(segment for segment, n in sizes.items() if n <= INLINE_MAX)


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """One record as found in an .idx."""

    offset: int
    length: int
    digest: int
    at: int
    """Where the record starts in the .idx."""
    inline: int
    """Where its chunk's bytes start in the .idx; -1 for a plain record."""

    @property
    def end(self) -> int:
        """Where the next record starts in the .idx."""
        return self.at + RECORD.size + (self.length if self.inline >= 0 else 0)

    def header(self) -> bytes:
        """The record's own bytes with ``digest`` as it is now (for a rewrite in place)."""
        return RECORD.pack(self.offset, self.length | (INLINE if self.inline >= 0 else 0), self.digest)


def plain(offset: int, length: int, digest: int) -> bytes:
    """Return a plain record."""
    return RECORD.pack(offset, length, digest)


def inline(offset: int, length: int, digest: int) -> bytes:
    """Return an inline record's header; the chunk's ``length`` bytes must follow it."""
    return RECORD.pack(offset, length | INLINE, digest)


def parse(buf: bytes | memoryview) -> list[ChunkRecord]:
    """Return the records of ``buf`` in order, up to a torn tail (a record or inline bytes cut short)."""
    out = []
    pos = 0
    while pos + RECORD.size <= len(buf):
        offset, length, digest = RECORD.unpack_from(buf, pos)
        start = -1
        if length & INLINE:
            length &= ~INLINE
            start = pos + RECORD.size
            if start + length > len(buf):
                break
        rec = ChunkRecord(offset, length, digest, pos, start)
        out.append(rec)
        pos = rec.end
    return out


def recover_partial(segment: str, path: Path, idx_path: Path) -> tuple[int, xxhash.xxh3_128, int]:
    """Verify the partial ``path`` of ``segment`` against its records at ``idx_path``, read from the disk.

    Writes inline chunks back into the partial where it lost them, cuts both files after the last
    record that verifies, and returns (verified length, digest of those bytes, bytes cut from the
    partial). Raises OSError.
    """
    hasher = segment_hasher()
    try:
        with open(idx_path, "rb") as f:
            from_the_disk(f.fileno())
            records = f.read()
    except FileNotFoundError:
        records = b""
    kept = 0
    end = 0
    replayed = False
    with open(path, "r+b") as f:
        fd = f.fileno()
        from_the_disk(fd)
        size = os.fstat(fd).st_size
        for rec in parse(records):
            if rec.offset != end:
                break
            if rec.inline >= 0:
                # A small batch's bytes were made durable here only; the partial may have lost them
                # (power cut before its writeback), so they are written back from the record.
                chunk = records[rec.inline : rec.inline + rec.length]
                if chunk_digest(segment, rec.offset, chunk) != rec.digest:
                    break
                if os.pread(fd, rec.length, rec.offset) != chunk:
                    if os.pwrite(fd, chunk, rec.offset) != rec.length:
                        raise OSError(f"short write of {path.name} at {rec.offset} in recovery")
                    replayed = True
            else:
                chunk = os.pread(fd, rec.length, rec.offset)
                if len(chunk) != rec.length or chunk_digest(segment, rec.offset, chunk) != rec.digest:
                    break
            hasher.update(chunk)
            end += rec.length
            kept = rec.end
        size = max(size, end)
        if size != end:
            f.truncate(end)
        if replayed or size != end:
            os.fsync(fd)
    if len(records) != kept:
        with open(idx_path, "ab") as f:
            f.truncate(kept)
            os.fsync(f.fileno())
    return end, hasher, size - end


def cut_records(idx_path: Path, keep: int) -> None:
    """Drop the records of ``idx_path`` for bytes at or past ``keep`` (the partial was cut there), so
    that recovery does not write inline bytes back that were never acknowledged. Raises OSError."""
    try:
        fd = os.open(idx_path, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        size = os.fstat(fd).st_size
        records = parse(os.pread(fd, size, 0))
        at = next((r.at for r in records if r.offset + r.length > keep), size)
        if at < size:
            os.ftruncate(fd, at)
            os.fsync(fd)
    finally:
        os.close(fd)
