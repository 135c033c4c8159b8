"""SegmentReader.view(): a chunk mapped from the page cache is the file's bytes and counts towards the
segment's digest as a read would; a chunk the file no longer holds whole is not mapped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from protocol.digest import segment_digest
from protocol.messages import Position
from shipper.source import SegmentReader, SourceError

NAME = "E00000001.log"


@pytest.fixture
def content(tmp_path: Path) -> bytes:
    data = os.urandom(3 * 1024 * 1024 + 123)
    (tmp_path / NAME).write_bytes(data)
    return data


@pytest.mark.parametrize("offset", [0, 1, 4095, 4096, 1 << 20, (1 << 20) + 5])
def test_a_view_holds_the_bytes_at_any_offset(tmp_path: Path, content: bytes, offset: int) -> None:
    reader = SegmentReader(tmp_path)
    view = reader.view(NAME, offset, 1 << 20)
    assert view is not None
    assert bytes(view) == content[offset : offset + (1 << 20)]
    view.release()
    reader.close()


def test_views_and_reads_in_turn_give_the_segment_digest(tmp_path: Path, content: bytes) -> None:
    reader = SegmentReader(tmp_path)
    reader.seek(Position(NAME, 0))
    views = [reader.view(NAME, 0, 1 << 20), reader.view(NAME, 1 << 20, 1 << 20)]
    buf = bytearray(len(content) - (2 << 20))
    assert reader.read_into(NAME, 2 << 20, buf) == len(buf)
    assert reader.digest() == segment_digest(content)
    assert all(v is not None for v in views)


def test_bytes_past_the_end_are_not_mapped_nor_hashed(tmp_path: Path, content: bytes) -> None:
    reader = SegmentReader(tmp_path)
    reader.seek(Position(NAME, 0))
    assert reader.view(NAME, 3 << 20, 1 << 20) is None
    assert reader.view(NAME, len(content), 1) is None
    assert reader.digest() == segment_digest(b"")
    tail = reader.view(NAME, 3 << 20, 123)
    assert tail is not None and bytes(tail) == content[3 << 20 :]


def test_a_file_that_shrank_is_not_mapped(tmp_path: Path, content: bytes) -> None:
    reader = SegmentReader(tmp_path)
    assert reader.view(NAME, 0, 4096) is not None
    os.truncate(tmp_path / NAME, 1 << 20)  # the same open file, now shorter
    assert reader.view(NAME, 0, 2 << 20) is None
    assert reader.view(NAME, (1 << 20) - 10, 4096) is None


def test_a_missing_segment_raises(tmp_path: Path) -> None:
    with pytest.raises(SourceError):
        SegmentReader(tmp_path).view("E00000009.log", 0, 10)
