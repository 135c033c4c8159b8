"""The acknowledged-bytes check itself: it must see a loss when there is one (milliseconds, no processes)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from protocol.digest import chunk_digest
from receiver import chunk_index
from tests.faults.common import Acked, DiskChecker, highest_acked, verified_partial_size

A, B = "E0000000001.log", "E0000000002.log"


def layout(tmp_path: Path, chunks: list[bytes], garbage: bytes = b"") -> tuple[Path, Path, bytes]:
    source, copy = tmp_path / "src", tmp_path / "copy"
    for d in (source, copy / "log", copy / "incoming"):
        d.mkdir(parents=True)
    a = os.urandom(1000)
    (source / A).write_bytes(a)
    (copy / "log" / A).write_bytes(a)
    b = b"".join(chunks) + os.urandom(500)
    (source / B).write_bytes(b)
    records, off = b"", 0
    for c in chunks:
        records += struct.pack(">QIQ", off, len(c), chunk_digest(B, off, c))
        off += len(c)
    (copy / "incoming" / f"{B}.partial").write_bytes(b[:off] + garbage)
    (copy / "incoming" / f"{B}.idx").write_bytes(records)
    return source, copy, b


def test_nothing_lost_when_the_disk_holds_the_acked_bytes(tmp_path: Path) -> None:
    source, copy, _ = layout(tmp_path, [b"x" * 100, b"y" * 100], garbage=b"torn")
    disk = DiskChecker(source, copy)
    assert verified_partial_size(copy, B) == 200
    assert disk.lost_bytes(Acked(B, 200, False)) == 0
    assert disk.lost_bytes(Acked(A, 1000, True)) == 0


def test_losses_are_seen(tmp_path: Path) -> None:
    source, copy, _ = layout(tmp_path, [b"x" * 100, b"y" * 100], garbage=os.urandom(300))
    disk = DiskChecker(source, copy)
    # Bytes on disk beyond the chunk records do not count: a restarted receiver would cut them.
    assert disk.lost_bytes(Acked(B, 350, False)) == 150
    assert disk.lost_bytes(Acked(B, 200, True)) == 200
    (copy / "log" / A).unlink()
    disk = DiskChecker(source, copy)
    assert disk.lost_bytes(Acked(B, 100, False)) == 1000
    with pytest.raises(AssertionError, match="acknowledged bytes lost"):
        disk.check_acked("x acked stream=s target=t seg=E0000000002.log off=100 sealed=0\n", tries=1)


def test_a_recorded_chunk_that_does_not_verify_is_lost(tmp_path: Path) -> None:
    source, copy, _ = layout(tmp_path, [b"x" * 100, b"y" * 100])
    part = copy / "incoming" / f"{B}.partial"
    data = bytearray(part.read_bytes())
    data[150] ^= 1
    part.write_bytes(bytes(data))
    assert DiskChecker(source, copy).lost_bytes(Acked(B, 200, False)) == 100


def test_corrupt_log_segment_is_reported(tmp_path: Path) -> None:
    source, copy, _ = layout(tmp_path, [b"x"])
    (copy / "log" / A).write_bytes(os.urandom(1000))
    with pytest.raises(AssertionError, match="corrupt segment installed"):
        DiskChecker(source, copy).check_log()


def test_highest_acked_ignores_torn_lines() -> None:
    text = (
        "a acked stream=s target=t seg=E1 off=5 sealed=0\n"
        "a acked stream=s target=t seg=E1 off=9 sealed=1\n"
        "a acked stream=s target=t seg=E2 off=77"
    )
    assert highest_acked(text) == Acked("E1", 9, True)
    assert highest_acked("") is None


def test_inline_chunks_count_from_the_idx_when_the_partial_lost_them(tmp_path: Path) -> None:
    # A power cut after a small batch's ACK: its bytes are durable in the .idx only (receiver/chunk_index.py),
    # the partial holds zeros or nothing there; recovery writes them back, so nothing acknowledged is lost.
    source, copy, b = layout(tmp_path, [b"x" * 100])
    idx, part = copy / "incoming" / f"{B}.idx", copy / "incoming" / f"{B}.partial"
    tail = b[100:160]
    with open(idx, "ab") as f:
        f.write(chunk_index.inline(100, len(tail), chunk_digest(B, 100, tail)) + tail)
    part.write_bytes(b[:100] + bytes(30))
    disk = DiskChecker(source, copy)
    assert verified_partial_size(copy, B) == 160
    assert disk.lost_bytes(Acked(B, 160, False)) == 0
    # An inline chunk whose own bytes do not verify is not recovered: those bytes are lost.
    with open(idx, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        f.write(bytes([tail[-1] ^ 1]))
    assert DiskChecker(source, copy).lost_bytes(Acked(B, 160, False)) == 60
