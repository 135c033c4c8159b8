"""The inotify watcher and the tailer's watched loop: a change is seen at once, without polling."""

from __future__ import annotations

import asyncio
import re
import shutil
import struct
from pathlib import Path

import pytest

from shipper.settings import DEFAULT_PATTERN, SealPolicy
from shipper.tailer import SegmentInfo, Tailer, next_look
from shipper.watcher import IN_CREATE, IN_MODIFY, DirectoryWatcher, parse_events
from tests.helpers.tailing import NEVER, running, watcher_or_skip

DEFAULT = re.compile(DEFAULT_PATTERN)


def test_parse_events_walks_names_of_any_length() -> None:
    buf = struct.pack("iIII", 1, IN_CREATE, 0, 16) + b"E0001.log".ljust(16, b"\0")
    buf += struct.pack("iIII", 2, IN_MODIFY, 0, 0)
    buf += struct.pack("iIII", 1, IN_MODIFY, 0, 32) + b"x" * 32
    assert parse_events(buf) == [(1, IN_CREATE), (2, IN_MODIFY), (1, IN_MODIFY)]
    assert parse_events(buf[:10]) == []


def test_next_look_is_quiet_unless_the_newest_is_due_to_seal_by_idle_time() -> None:
    active = [SegmentInfo("a", 1, 100.0, True), SegmentInfo("b", 1, 100.0, False)]
    assert next_look(active, SealPolicy(), 100.0, 5.0) == 5.0
    assert next_look(active, SealPolicy(seal_idle=2.0), 101.0, 5.0) == pytest.approx(1.001)
    assert next_look(active, SealPolicy(seal_idle=20.0), 101.0, 5.0) == 5.0
    assert next_look(active, SealPolicy(seal_idle=2.0), 200.0, 5.0) == 0.001
    assert next_look(active[:1], SealPolicy(seal_idle=2.0), 101.0, 5.0) == 5.0
    assert next_look([], SealPolicy(seal_idle=2.0), 101.0, 5.0) == 5.0


async def wait_for_names(tailer: Tailer, changed: asyncio.Event, names: list[str]) -> None:
    async with asyncio.timeout(10):
        while tailer.names != names:
            await changed.wait()
            changed.clear()


async def test_a_watched_tailer_sees_new_bytes_without_polling(tmp_path: Path) -> None:
    await watcher_or_skip()
    tailer = Tailer(tmp_path, DEFAULT, SealPolicy(), poll_interval=NEVER, quiet_interval=NEVER)
    changed = tailer.subscribe()
    async with running(tailer):
        (tmp_path / "E1.log").write_bytes(b"abc")
        await wait_for_names(tailer, changed, ["E1.log"])
        (tmp_path / "E1.log").write_bytes(b"abcdefg")
        async with asyncio.timeout(10):
            while tailer.by_name["E1.log"].size != 7:
                await changed.wait()
                changed.clear()


async def test_seal_idle_fires_on_time_without_any_file_event(tmp_path: Path) -> None:
    await watcher_or_skip()
    tailer = Tailer(tmp_path, DEFAULT, SealPolicy(seal_idle=0.3), poll_interval=NEVER, quiet_interval=NEVER)
    changed = tailer.subscribe()
    async with running(tailer):
        (tmp_path / "E1.log").write_bytes(b"abc")
        async with asyncio.timeout(10):
            while not (tailer.segments and tailer.segments[-1].sealed):
                await changed.wait()
                changed.clear()


async def test_a_directory_that_goes_away_and_comes_back_is_watched_again(tmp_path: Path) -> None:
    await watcher_or_skip()
    source = tmp_path / "src"
    source.mkdir()
    tailer = Tailer(source, DEFAULT, SealPolicy(), poll_interval=0.05, quiet_interval=NEVER)
    changed = tailer.subscribe()
    async with running(tailer):
        (source / "E1.log").write_bytes(b"a")
        await wait_for_names(tailer, changed, ["E1.log"])
        shutil.rmtree(source)
        for _ in range(500):
            if tailer.error is not None:
                break
            await asyncio.sleep(0.02)
        assert tailer.error is not None
        source.mkdir()
        (source / "E2.log").write_bytes(b"b")
        await wait_for_names(tailer, changed, ["E2.log"])


async def test_the_watcher_closes_when_the_last_tailer_stops(tmp_path: Path) -> None:
    await watcher_or_skip()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = Tailer(tmp_path / "a", DEFAULT, SealPolicy(), quiet_interval=NEVER)
    second = Tailer(tmp_path / "b", DEFAULT, SealPolicy(), quiet_interval=NEVER)
    async with running(first):
        watcher = DirectoryWatcher.for_loop()
        assert watcher is not None
        async with running(second):
            assert DirectoryWatcher.for_loop() is watcher
        assert watcher.fd >= 0
    assert watcher.fd == -1
    assert DirectoryWatcher.for_loop() is not watcher


async def test_without_inotify_the_tailer_polls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DirectoryWatcher, "for_loop", classmethod(lambda cls: None))
    tailer = Tailer(tmp_path, DEFAULT, SealPolicy(), poll_interval=0.02, quiet_interval=NEVER)
    changed = tailer.subscribe()
    async with running(tailer):
        (tmp_path / "E1.log").write_bytes(b"abc")
        await wait_for_names(tailer, changed, ["E1.log"])
