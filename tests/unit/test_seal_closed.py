"""``--seal closed``: a segment is sealed once a later one exists and its writer closed it (or it settled),
and a sealed segment that changes afterwards is reported with the byte range that changed."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import struct
from pathlib import Path
from typing import BinaryIO

import pytest

from shipper.config import _policy
from shipper.fingerprint import describe_change, take
from shipper.settings import DEFAULT_PATTERN, SealPolicy
from shipper.tailer import SegmentInfo, Tailer, classify, next_look
from shipper.watcher import IN_CLOSE_WRITE, parse_named_events
from tests.helpers.tailing import NEVER, running, watcher_or_skip
from tests.helpers.waiting import wait_until

DEFAULT = re.compile(DEFAULT_PATTERN)
CLOSED = SealPolicy(mode="closed", settle=2.0)


def sealed(out: list[SegmentInfo]) -> list[bool]:
    return [s.sealed for s in out]


def test_closed_needs_a_later_segment_and_the_writers_close_or_the_settle_time() -> None:
    now = 1000.0
    entries = [("b.1", 10, now - 0.5), ("b.2", 10, now - 0.5), ("b.3", 5, now)]
    assert sealed(classify(entries, CLOSED, now)) == [False, False, False]
    assert sealed(classify(entries, CLOSED, now, {"b.1"})) == [True, False, False]
    # Closed, but the newest: a later segment is still needed.
    assert sealed(classify(entries, CLOSED, now, {"b.1", "b.2", "b.3"})) == [True, True, False]
    # Where no close is seen, settle time without a change seals it.
    assert sealed(classify(entries, CLOSED, now + 1.5)) == [True, True, False]
    assert sealed(classify(entries, SealPolicy(), now)) == [True, True, False]


def test_next_look_wakes_for_the_settle_timer() -> None:
    segs = [SegmentInfo("b.1", 1, 100.0, False), SegmentInfo("b.2", 1, 100.0, False)]
    assert next_look(segs, CLOSED, 101.0, 15.0) == pytest.approx(1.001)
    assert next_look(segs, SealPolicy(), 101.0, 15.0) == 15.0


def test_config_accepts_closed_and_a_settle_time() -> None:
    assert _policy("closed", None, None, 0.5) == SealPolicy("closed", None, None, 0.5)
    assert _policy("closed", None, None).settle == 1.0


def test_inotify_names_come_with_their_events() -> None:
    buf = struct.pack("iIII", 3, IN_CLOSE_WRITE, 0, 16) + b"mysql-bin.000001".ljust(16, b"\0")
    assert parse_named_events(buf) == [(3, IN_CLOSE_WRITE, "mysql-bin.000001")]


def test_a_change_report_names_the_byte_range(tmp_path: Path) -> None:
    path = tmp_path / "mysql-bin.000001"
    data = bytearray(os.urandom(200_000))
    path.write_bytes(data)
    fp = take(path, len(data))
    assert fp is not None
    data[21] ^= 1  # MariaDB's in-use flag
    path.write_bytes(data)
    assert describe_change(fp, path) == "changed bytes 0-1024"
    data[199_999] ^= 1
    path.write_bytes(bytes(data) + b"more")
    assert describe_change(fp, path) == "size 200000 -> 200004; changed bytes 0-1024, 199680-200004"
    data[21] ^= 1
    data[199_999] ^= 1
    data[100_000] ^= 1
    path.write_bytes(data)
    assert describe_change(fp, path) == "the change lies in bytes 32768-166912 (between the fingerprinted ends)"


def open_writer(path: Path) -> BinaryIO:
    """Open a segment the way its writer does: kept open across the rotation."""
    return open(path, "wb")


async def test_a_rotated_segment_is_sealed_when_its_writer_closes_it(tmp_path: Path) -> None:
    await watcher_or_skip()
    policy = SealPolicy(mode="closed", settle=NEVER)
    tailer = Tailer(tmp_path, DEFAULT, policy, poll_interval=NEVER, quiet_interval=NEVER)
    changed = tailer.subscribe()
    first = open_writer(tmp_path / "b.000001")
    try:
        first.write(b"header" + b"\1" + b"events" * 100)
        first.flush()
        async with running(tailer):
            (tmp_path / "b.000002").write_bytes(b"header\1")
            async with asyncio.timeout(10):
                while tailer.names != ["b.000001", "b.000002"]:
                    await changed.wait()
                    changed.clear()
            await asyncio.sleep(0.2)
            assert not tailer.by_name["b.000001"].sealed, "still open by its writer"
            # The writer clears its in-use flag after the rotation, then closes the file.
            first.seek(6)
            first.write(b"\0")
            first.close()
            async with asyncio.timeout(10):
                while not tailer.by_name["b.000001"].sealed:
                    await changed.wait()
                    changed.clear()
            assert tailer.by_name["b.000001"].size == 607
            assert not tailer.by_name["b.000002"].sealed
    finally:
        first.close()


async def test_without_inotify_the_settle_time_seals(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tailer = Tailer(tmp_path, DEFAULT, SealPolicy(mode="closed", settle=0.3), poll_interval=0.02, watch=False)
    changed = tailer.subscribe()
    (tmp_path / "b.000001").write_bytes(b"x" * 5000)
    (tmp_path / "b.000002").write_bytes(b"y")
    async with running(tailer):
        async with asyncio.timeout(10):
            while not (tailer.by_name.get("b.000001") and tailer.by_name["b.000001"].sealed):
                await changed.wait()
                changed.clear()
        # A change after sealing is reported with where it happened.
        tailer.recheck_interval = 0.0
        with caplog.at_level(logging.ERROR, logger="shipper"):
            data = bytearray((tmp_path / "b.000001").read_bytes())
            data[21] = 0
            (tmp_path / "b.000001").write_bytes(data)
            reported = lambda: "b.000001" in tailer.changed_sealed()  # noqa: E731
            await asyncio.to_thread(wait_until, reported, 10, 0.05, "the change report")
    assert "changed bytes 0-1024" in caplog.text
