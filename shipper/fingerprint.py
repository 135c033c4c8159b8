"""Which bytes of a sealed segment changed: a small fingerprint taken when it is sealed, compared later.

A segment is frozen at the size it had when first seen sealed; if the source changes it afterwards the
tailer reports it. To say *where* it changed without keeping the bytes, the fingerprint holds a CRC-32
of each 1 KiB block of the first and last 32 KiB (where writers rewrite headers and trailers: MariaDB
clears a flag at offset 21 of a binlog when it closes it), 512 bytes per segment. A change between
them is reported as the stretch that was not fingerprinted.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

BLOCK = 1024
EDGE = 32 * 1024


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """CRC-32s of the blocks at both ends of a segment of ``size`` bytes."""

    size: int
    head: tuple[int, ...]
    """Blocks from offset 0, up to EDGE bytes."""
    tail_start: int
    """Offset of the first tail block (a multiple of BLOCK, at or after the end of the head)."""
    tail: tuple[int, ...]


def _blocks(data: bytes) -> tuple[int, ...]:
    return tuple(zlib.crc32(data[i : i + BLOCK]) for i in range(0, len(data), BLOCK))


def take(path: Path, size: int) -> Fingerprint | None:
    """Fingerprint the first ``size`` bytes of ``path``; None if it cannot be read."""
    try:
        with open(path, "rb") as f:
            head = os.pread(f.fileno(), min(EDGE, size), 0)
            tail_start = max(len(head), (size - EDGE) // BLOCK * BLOCK)
            tail = os.pread(f.fileno(), size - tail_start, tail_start) if size > tail_start else b""
    except OSError:
        return None
    return Fingerprint(size, _blocks(head), tail_start, _blocks(tail))


def _ranges(old: tuple[int, ...], new: tuple[int, ...], base: int, end: int) -> list[tuple[int, int]]:
    return [
        (base + i * BLOCK, min(base + (i + 1) * BLOCK, end))
        for i, (a, b) in enumerate(zip(old, new, strict=False))
        if a != b
    ]


def merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def describe_change(fp: Fingerprint, path: Path) -> str:
    """Say which byte ranges of ``path`` differ from the fingerprint (half-open ranges, "bytes 0-1024")."""
    try:
        size = os.stat(path).st_size
    except OSError as e:
        return f"cannot be read any more ({e.strerror})"
    parts = []
    if size != fp.size:
        parts.append(f"size {fp.size} -> {size}")
    now = take(path, min(size, fp.size))
    ranges: list[tuple[int, int]] = []
    if now is not None:
        common = min(size, fp.size)
        ranges += _ranges(fp.head, now.head, 0, common)
        if now.tail_start == fp.tail_start:
            ranges += _ranges(fp.tail, now.tail, fp.tail_start, common)
    if size > fp.size:
        ranges.append((fp.size, size))
    merged = merge(ranges)
    if merged:
        parts.append("changed bytes " + ", ".join(f"{a}-{b}" for a, b in merged))
    elif size == fp.size:
        head_end = len(fp.head) * BLOCK
        parts.append(f"the change lies in bytes {head_end}-{fp.tail_start} (between the fingerprinted ends)")
    return "; ".join(parts)
