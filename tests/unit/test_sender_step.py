"""next_step(): what a sender sends next, given the tailer's view of the source and its cursor."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from shipper.settings import DEFAULT_PATTERN, SealPolicy
from shipper.source import Open, SendData, SendSeal, Stuck, Wait, next_step
from shipper.tailer import Tailer
from shipper.window import Cursor

S1 = "E00000001.log"
S2 = "E00000002.log"
S3 = "E00000003.log"
CHUNK = 4


def tailer_over(directory: Path, files: dict[str, bytes], policy: SealPolicy | None = None) -> Tailer:
    """Write ``files`` into ``directory`` and return a Tailer that has scanned it once."""
    for name, data in files.items():
        (directory / name).write_bytes(data)
    tailer = Tailer(directory, re.compile(DEFAULT_PATTERN), policy or SealPolicy())
    tailer.scan()
    return tailer


@pytest.fixture
def tailer(tmp_path: Path) -> Tailer:
    """S1 sealed at 10 bytes, S2 empty and sealed, S3 open at 6 bytes."""
    return tailer_over(tmp_path, {S1: b"0123456789", S2: b"", S3: b"abcdef"})


def test_start_opens_the_first_segment(tailer: Tailer) -> None:
    assert next_step(tailer, Cursor("", 0, True), CHUNK) == Open(S1)


def test_after_a_sealed_segment_open_the_next(tailer: Tailer) -> None:
    assert next_step(tailer, Cursor(S1, 10, True), CHUNK) == Open(S2)
    assert next_step(tailer, Cursor(S2, 0, True), CHUNK) == Open(S3)


def test_after_a_sealed_segment_that_vanished_open_the_next(tailer: Tailer) -> None:
    assert next_step(tailer, Cursor("E00000001.zzz", 3, True), CHUNK) == Open(S2)


def test_nothing_after_the_newest_sealed_segment_waits(tmp_path: Path) -> None:
    tailer = tailer_over(tmp_path, {S1: b"x"}, SealPolicy(mode="immediate"))
    assert next_step(tailer, Cursor(S1, 1, True), CHUNK) == Wait()


def test_empty_source_waits(tmp_path: Path) -> None:
    tailer = tailer_over(tmp_path, {})
    assert next_step(tailer, Cursor("", 0, True), CHUNK) == Wait()


@pytest.mark.parametrize(
    ("offset", "step"),
    [
        (0, SendData(S1, 0, 4, sealed=True)),
        (4, SendData(S1, 4, 4, sealed=True)),
        (8, SendData(S1, 8, 2, sealed=True)),
        (9, SendData(S1, 9, 1, sealed=True)),
    ],
)
def test_data_is_sent_in_chunks_capped_by_chunk_size(tailer: Tailer, offset: int, step: SendData) -> None:
    assert next_step(tailer, Cursor(S1, offset, False), CHUNK) == step


def test_one_big_chunk_when_chunk_size_allows(tailer: Tailer) -> None:
    assert next_step(tailer, Cursor(S1, 3, False), 1 << 20) == SendData(S1, 3, 7, sealed=True)


def test_walking_a_segment_covers_every_byte_once(tailer: Tailer) -> None:
    cursor = Cursor(S1, 0, False)
    sent: list[tuple[int, int]] = []
    while isinstance(step := next_step(tailer, cursor, 3), SendData):
        sent.append((step.offset, step.length))
        cursor.offset += step.length
    assert sent == [(0, 3), (3, 3), (6, 3), (9, 1)]
    assert step == SendSeal(S1, 10)


def test_end_of_sealed_segment_sends_seal(tailer: Tailer) -> None:
    assert next_step(tailer, Cursor(S1, 10, False), CHUNK) == SendSeal(S1, 10)


def test_empty_sealed_segment_sends_seal_at_once(tailer: Tailer) -> None:
    assert next_step(tailer, Cursor(S2, 0, False), CHUNK) == SendSeal(S2, 0)


def test_end_of_open_segment_waits(tailer: Tailer) -> None:
    assert next_step(tailer, Cursor(S3, 6, False), CHUNK) == Wait()
    assert next_step(tailer, Cursor(S3, 5, False), CHUNK) == SendData(S3, 5, 1)


def test_open_segment_that_grows_is_sent_further(tailer: Tailer) -> None:
    with open(tailer.source / S3, "ab") as f:
        f.write(b"ghij")
    tailer.scan()
    assert next_step(tailer, Cursor(S3, 6, False), CHUNK) == SendData(S3, 6, 4)


def test_open_segment_sealed_by_a_newer_one(tailer: Tailer) -> None:
    (tailer.source / "E00000004.log").write_bytes(b"")
    tailer.scan()
    assert next_step(tailer, Cursor(S3, 6, False), CHUNK) == SendSeal(S3, 6)


def test_vanished_segment_is_stuck(tailer: Tailer) -> None:
    os.unlink(tailer.source / S3)
    tailer.scan()
    step = next_step(tailer, Cursor(S3, 2, False), CHUNK)
    assert isinstance(step, Stuck)
    assert S3 in step.reason
    assert "gone" in step.reason


def test_shrunk_segment_is_stuck(tailer: Tailer) -> None:
    os.truncate(tailer.source / S3, 2)
    tailer.scan()
    step = next_step(tailer, Cursor(S3, 4, False), CHUNK)
    assert isinstance(step, Stuck)
    assert "shrank" in step.reason
    assert "2 bytes below 4" in step.reason


def test_sealed_segment_that_grew_is_sealed_at_its_frozen_size(tailer: Tailer) -> None:
    with open(tailer.source / S1, "ab") as f:
        f.write(b"late bytes")
    tailer.scan(now=time.time() + 3600)
    assert tailer.by_name[S1].size == 10
    assert next_step(tailer, Cursor(S1, 8, False), CHUNK) == SendData(S1, 8, 2, sealed=True)
    assert next_step(tailer, Cursor(S1, 10, False), CHUNK) == SendSeal(S1, 10)
