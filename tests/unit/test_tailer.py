"""Tailer: the sealing policy (pure), which names are segments, and scanning a real directory."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from pathlib import Path

import pytest

from shipper.settings import DEFAULT_PATTERN, SealPolicy
from shipper.tailer import WAKE_GRID, SegmentInfo, Tailer, classify, is_segment, late_arrivals, on_grid

DEFAULT = re.compile(DEFAULT_PATTERN)
NOW = 1_000_000.0


def entries(*sizes_and_ages: tuple[int, float]) -> list[tuple[str, int, float]]:
    """Return classify() entries named s1, s2, ... with the given sizes and ages (seconds before NOW)."""
    return [(f"s{i + 1}", size, NOW - age) for i, (size, age) in enumerate(sizes_and_ages)]


def sealed(infos: list[SegmentInfo]) -> list[bool]:
    return [s.sealed for s in infos]


def write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


# -- classify --------------------------------------------------------------------------------


def test_classify_nothing() -> None:
    assert classify([], SealPolicy(), NOW) == []


def test_classify_next_mode_leaves_only_the_newest_open() -> None:
    out = classify(entries((10, 100), (20, 50), (5, 0)), SealPolicy(), NOW)
    assert out == [
        SegmentInfo("s1", 10, NOW - 100, True),
        SegmentInfo("s2", 20, NOW - 50, True),
        SegmentInfo("s3", 5, NOW, False),
    ]
    assert sealed(classify(entries((10, 1e9)), SealPolicy(), NOW)) == [False]


def test_classify_immediate_seals_everything() -> None:
    assert sealed(classify(entries((10, 0), (0, 0)), SealPolicy(mode="immediate"), NOW)) == [True, True]


@pytest.mark.parametrize(("size", "expected"), [(0, False), (99, False), (100, True), (1000, True)])
def test_classify_segment_size(size: int, expected: bool) -> None:
    policy = SealPolicy(segment_size=100)
    assert sealed(classify(entries((1, 0), (size, 0)), policy, NOW)) == [True, expected]


@pytest.mark.parametrize(("age", "expected"), [(0.0, False), (4.9, False), (5.0, True), (60.0, True)])
def test_classify_seal_idle(age: float, expected: bool) -> None:
    policy = SealPolicy(seal_idle=5.0)
    assert sealed(classify(entries((1, 100), (10, age)), policy, NOW)) == [True, expected]


# -- is_segment ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("E00000001.log", True),
        ("000000010000000000000003", True),
        ("a", True),
        ("seg.tmp.log", True),
        ("partial", True),
        (".hidden", False),
        (".E00000001.log", False),
        ("E00000001.log.tmp", False),
        ("E00000001.log.partial", False),
        (".state.json.tmp", False),
        ("", False),
    ],
)
def test_default_pattern(name: str, expected: bool) -> None:
    assert is_segment(name, DEFAULT) is expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [("E00000001.log", True), ("E1.log", True), ("E00000001.txt", False), ("xE1.log", False), ("E.log", False)],
)
def test_custom_pattern_must_match_whole_name(name: str, expected: bool) -> None:
    assert is_segment(name, re.compile(r"E\d+\.log")) is expected


@pytest.mark.parametrize("name", [".x", "a.tmp", "a.partial", "a/b"])
def test_temp_files_never_count_even_with_a_permissive_pattern(name: str) -> None:
    assert not is_segment(name, re.compile(r".*"))


# -- Tailer.scan -----------------------------------------------------------------------------


def test_scan_sees_new_segments_and_ignores_the_rest(tmp_path: Path) -> None:
    tailer = Tailer(tmp_path, DEFAULT, SealPolicy())
    assert tailer.scan() is False
    assert tailer.segments == []

    write(tmp_path, "E00000001.log", b"a" * 10)
    write(tmp_path, ".E00000009.log", b"hidden")
    write(tmp_path, "E00000009.log.tmp", b"temp")
    write(tmp_path, "E00000009.log.partial", b"partial")
    (tmp_path / "E00000008.log").mkdir()
    assert tailer.scan() is True
    assert tailer.names == ["E00000001.log"]
    assert tailer.by_name["E00000001.log"].size == 10
    assert tailer.by_name["E00000001.log"].sealed is False
    assert tailer.scan() is False

    write(tmp_path, "E00000002.log", b"b" * 3)
    assert tailer.scan() is True
    assert [(s.name, s.size, s.sealed) for s in tailer.segments] == [
        ("E00000001.log", 10, True),
        ("E00000002.log", 3, False),
    ]

    append(tmp_path / "E00000002.log", b"more")
    assert tailer.scan() is True
    assert tailer.by_name["E00000002.log"].size == 7
    assert tailer.by_name["E00000002.log"].sealed is False


def test_scan_seal_idle_uses_the_time_given(tmp_path: Path) -> None:
    path = write(tmp_path, "E00000001.log", b"abc")
    mtime = path.stat().st_mtime
    tailer = Tailer(tmp_path, DEFAULT, SealPolicy(seal_idle=30.0))
    tailer.scan(now=mtime + 1)
    assert tailer.by_name["E00000001.log"].sealed is False
    assert tailer.scan(now=mtime + 31) is True
    assert tailer.by_name["E00000001.log"].sealed is True


@pytest.mark.parametrize("recheck", [False, True])
def test_sealed_size_is_frozen_and_a_change_is_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, recheck: bool
) -> None:
    caplog.set_level(logging.ERROR, logger="shipper")
    first = write(tmp_path, "E00000001.log", b"a" * 10)
    write(tmp_path, "E00000002.log", b"b")
    tailer = Tailer(tmp_path, DEFAULT, SealPolicy())
    t0 = time.time()
    tailer.scan(now=t0)
    assert tailer.by_name["E00000001.log"] == SegmentInfo("E00000001.log", 10, first.stat().st_mtime, True)

    append(first, b"EXTRA")
    step = 10.0 if recheck else 0.1
    for i in range(1, 4):
        tailer.scan(now=t0 + i * step)
        assert tailer.by_name["E00000001.log"].size == 10
        assert tailer.by_name["E00000001.log"].sealed is True
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    if recheck:
        assert len(errors) == 1
        assert "E00000001.log" in errors[0].getMessage()
        assert "10 -> 15" in errors[0].getMessage()
        assert tailer.changed_sealed() == {"E00000001.log"}
    else:
        # Between rechecks sealed segments are not even looked at.
        assert errors == []
        assert tailer.changed_sealed() == set()


def test_immediate_mode_freezes_at_first_sight(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="shipper")
    path = write(tmp_path, "E00000001.log", b"abc")
    tailer = Tailer(tmp_path, DEFAULT, SealPolicy(mode="immediate"), recheck_interval=0.0)
    tailer.scan()
    append(path, b"def")
    tailer.scan()
    tailer.scan()
    assert tailer.by_name["E00000001.log"].size == 3
    assert len([r for r in caplog.records if "changed on the source" in r.getMessage()]) == 1


def test_vanished_segment_is_forgotten(tmp_path: Path) -> None:
    write(tmp_path, "E00000001.log", b"a")
    write(tmp_path, "E00000002.log", b"b")
    tailer = Tailer(tmp_path, DEFAULT, SealPolicy(), recheck_interval=0.0)
    tailer.scan()
    os.unlink(tmp_path / "E00000001.log")
    assert tailer.scan() is True
    assert tailer.names == ["E00000002.log"]
    assert "E00000001.log" not in tailer.by_name


def test_unreadable_source_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="shipper")
    source = tmp_path / "missing"
    tailer = Tailer(source, DEFAULT, SealPolicy())
    assert tailer.scan() is False
    assert tailer.scan() is False
    assert tailer.error is not None
    assert len([r for r in caplog.records if "cannot read source directory" in r.getMessage()]) == 1

    source.mkdir()
    write(source, "E00000001.log", b"x")
    assert tailer.scan() is True
    assert tailer.error is None


def test_first_after(tmp_path: Path) -> None:
    for name in ("E00000001.log", "E00000002.log", "E00000004.log"):
        write(tmp_path, name, b"x")
    tailer = Tailer(tmp_path, DEFAULT, SealPolicy())
    tailer.scan()

    def first(name: str) -> str | None:
        info = tailer.first_after(name)
        return None if info is None else info.name

    assert first("") == "E00000001.log"
    assert first("E00000001.log") == "E00000002.log"
    assert first("E00000002.log") == "E00000004.log"
    assert first("E00000003.log") == "E00000004.log"
    assert first("E00000004.log") is None
    assert first("F") is None


# -- late arrivals ---------------------------------------------------------------------------


def test_late_arrivals_pure() -> None:
    names = ["a1", "a2", "a2.backup", "a3"]
    assert late_arrivals(names, {"a1", "a2", "a3"}, "a3") == ["a2.backup"]
    # On the first scan nothing is late, and a new name after the newest one is simply new.
    assert late_arrivals(names, set(), "") == []
    assert late_arrivals([*names, "a4"], set(names), "a3") == []


def test_postgresql_backup_file_arriving_after_its_stop_segment_is_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # What a PostgreSQL archive does at every base backup: the .backup file is named after the start
    # segment but archived after the stop segment, so it sorts before a segment already seen.
    tailer = Tailer(tmp_path, DEFAULT, SealPolicy(mode="immediate"))
    for name in ("000000020000000000000007", "000000020000000000000008"):
        write(tmp_path, name, b"w" * 16)
    tailer.scan(NOW)
    assert tailer.late == []
    write(tmp_path, "000000020000000000000007.00000028.backup", b"b" * 8)
    write(tmp_path, "000000020000000000000009", b"w" * 16)
    with caplog.at_level(logging.ERROR, logger="shipper"):
        tailer.scan(NOW + 1)
        tailer.scan(NOW + 2)
    assert tailer.late == ["000000020000000000000007.00000028.backup"]
    assert [r.getMessage().split()[1] for r in caplog.records] == ["000000020000000000000007.00000028.backup"]
    # The tailer still lists it: a sender that has not passed it yet ships it.
    assert "000000020000000000000007.00000028.backup" in tailer.by_name


# -- the safety look -------------------------------------------------------------------------


def aged(path: Path, seconds: float = 100.0) -> None:
    """Set ``path``'s mtime ``seconds`` back: older than the racy window, as an idle source's files are."""
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_quiet_look_scans_only_when_a_stat_changed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="shipper")
    first = write(tmp_path, "E00000001.log", b"a" * 10)
    active = write(tmp_path, "E00000002.log", b"b")
    for path in (first, active, tmp_path):
        aged(path)
    tailer = Tailer(tmp_path, DEFAULT, SealPolicy(), recheck_interval=0.0)
    tailer._quiet_looks = 0  # the random start of the count, made known
    scans: list[float | None] = []
    real = tailer.scan

    def counted(now: float | None = None) -> bool:
        scans.append(now)
        return real(now)

    tailer.scan = counted  # type: ignore[method-assign]
    assert tailer.quiet_look() is True and len(scans) == 1  # no key yet: a full scan
    assert tailer.quiet_look() is False and tailer.quiet_look() is False and len(scans) == 1
    # The active segment grows (even with an old mtime): seen at the next safety look.
    append(active, b"more")
    aged(active, 90.0)
    assert tailer.quiet_look() is True and len(scans) == 2
    assert tailer.by_name["E00000002.log"].size == 5
    # A new segment: the directory's mtime moved.
    aged(write(tmp_path, "E00000003.log", b"c"))
    aged(tmp_path, 80.0)
    assert tailer.quiet_look() is True and len(scans) == 3 and tailer.names[-1] == "E00000003.log"
    # A sealed segment changed where inotify said nothing: every FULL_LOOK_EVERY-th look rechecks it.
    append(first, b"EXTRA")
    aged(first, 70.0)
    assert [tailer.quiet_look() for _ in range(4)] == [False] * 4 and len(scans) == 4  # the 8th look
    assert tailer.changed_sealed() == {"E00000001.log"}
    assert [tailer.quiet_look() for _ in range(4)] == [False] * 4 and len(scans) == 5


def test_quiet_look_trusts_no_recent_mtime(tmp_path: Path) -> None:
    write(tmp_path, "E00000001.log", b"a")  # written now: within the racy window
    tailer = Tailer(tmp_path, DEFAULT, SealPolicy())
    tailer.quiet_look()
    appended = []
    real = tailer.scan
    tailer.scan = lambda now=None: appended.append(1) or real(now)  # type: ignore[method-assign]
    tailer.quiet_look()
    assert appended == [1]  # a change within the same clock tick would leave the mtime as it was


def test_run_takes_safety_looks_while_nothing_changes(tmp_path: Path) -> None:
    write(tmp_path, "E00000001.log", b"a")
    tailer = Tailer(tmp_path, DEFAULT, SealPolicy(), quiet_interval=0.02)
    looks: list[int] = []

    def quiet_look(now: float | None = None) -> bool:
        looks.append(1)
        return len(looks) == 3  # the third look finds a change inotify did not report

    tailer.quiet_look = quiet_look  # type: ignore[method-assign]
    woken = tailer.subscribe()

    async def main() -> None:
        task = asyncio.create_task(tailer.run())
        try:
            async with asyncio.timeout(5):
                await woken.wait()  # the first scan
                woken.clear()
                await woken.wait()  # the third safety look
        finally:
            task.cancel()

    asyncio.run(main())
    assert len(looks) >= 3 and tailer.names == ["E00000001.log"]


@pytest.mark.parametrize("interval", [10.0, 15.0, 0.4, 0.2])
def test_on_grid_ends_timers_of_one_interval_together_and_never_late(interval: float) -> None:
    # Timers armed at different moments of one interval (1000 idle streams) must end at one grid point,
    # never after their deadline and never more than an eighth of the interval before it.
    step = min(WAKE_GRID, interval / 8)
    base = 1234.0
    ends = set()
    for i in range(50):
        deadline = base + interval + step * (i + 0.5) / 51  # (a deadline just on a point may fall to the one before)
        end = on_grid(deadline, interval)
        assert deadline - interval / 8 <= end <= deadline
        ends.add(round(end, 9))
    assert ends == {round(base + interval, 9)}, ends
