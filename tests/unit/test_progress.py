"""The catch-up bookkeeping behind ``status --watch`` and the daemons' progress lines (pure, fake clock)."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import pytest

from logship.admin.progress import ProgressLog, Tracker


def row(left: int | None, sent: int | None = None, lag: float = 60.0, state: str = "Healthy") -> dict[str, Any]:
    out: dict[str, Any] = {"stream": "s", "target": "t:1", "state": state, "copy_lag_seconds": lag}
    out |= {"copy_queue_bytes": left, "copy_queue_segments": None if left is None else (left + 999) // 1000}
    if sent is not None:
        out["bytes_sent"] = sent
    return out


def test_rate_from_bytes_sent_and_eta() -> None:
    t = Tracker()
    assert t.update(row(10_000, sent=0), 0.0).rate is None  # type: ignore[union-attr]
    p = t.update(row(8_000, sent=2_000), 1.0)
    assert p is not None and p.rate == 2_000 and p.eta == 4.0 and p.total == 10_000 and p.done == 2_000
    assert p.text() == "copied 2.0 KiB of 9.8 KiB (20%), 8 seg left, 2.0 KiB/s, ETA 4.0s"


def test_rate_from_a_shrinking_queue_when_nothing_counts_bytes() -> None:
    t = Tracker()
    t.update(row(10_000), 0.0)
    p = t.update(row(6_000), 2.0)
    assert p is not None and p.rate == 2_000
    # The source grows: the catch-up's size grows with it.
    p = t.update(row(12_000), 3.0)
    assert p is not None and p.total == 12_000 and p.done == 0
    assert t.update(row(None), 4.0) is None
    assert t.update(row(0), 5.0).total == 0  # type: ignore[union-attr]


def test_progress_log_speaks_only_when_behind(caplog: pytest.LogCaptureFixture) -> None:
    rows: list[dict[str, Any]] = []
    plog = ProgressLog(lambda: rows, logging.getLogger("t"), every=5.0)
    with caplog.at_level(logging.INFO, "t"):
        rows[:] = [row(3_000, sent=0, lag=1.0)]  # a busy live stream: a small queue, not behind
        plog.look(0.0)
        rows[:] = [row(3_000, sent=1_000, lag=2.0, state="Disconnected")]
        plog.look(5.0)
        assert not caplog.records
        rows[:] = [row(50_000, sent=2_000, lag=6.0)]
        plog.look(10.0)
        rows[:] = [row(40_000, sent=12_000, lag=1.0)]  # once logging, it goes on until caught up
        plog.look(15.0)
        rows[:] = [row(0, sent=52_000, lag=0.0)]
        plog.look(20.0)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("target t:1 (stream s): catching up: copied 0 B of 48.8 KiB (0%)"), messages
    # 10 kB in 5 s (2 kB/s) after 1 kB in 5 s: the smoothed rate is 0.3 * 2000 + 0.7 * 200 = 740 B/s.
    assert messages[1].endswith("copied 9.8 KiB of 48.8 KiB (20%), 40 seg left, 740 B/s, ETA 54.1s"), messages
    assert messages[2] == "target t:1 (stream s): caught up: 48.8 KiB copied, 10.0s after the first progress line"
    assert len(messages) == 3


def test_progress_log_looks_each_second_only_while_a_queue_is_there(caplog: pytest.LogCaptureFixture) -> None:
    """Idle, a look (the whole status) every ``every`` s; a catch-up is still seen, measured each second
    and told every ``every`` s, and once it is over the looks slow down again."""
    rows: list[dict[str, Any]] = [row(0, sent=0, lag=0.0)]
    looks: list[float] = []
    clock = [0.0]

    def rows_now() -> list[dict[str, Any]]:
        looks.append(clock[0])
        return rows

    async def sleep(seconds: float) -> None:
        clock[0] += seconds
        if clock[0] == 21.0:
            rows[:] = [row(50_000, sent=0, lag=30.0)]  # a shipper comes back 30 s behind
        elif clock[0] == 22.0:
            rows[:] = [row(40_000, sent=10_240, lag=29.0)]
        elif clock[0] == 30.0:
            rows[:] = [row(0, sent=50_000, lag=0.0)]
        elif clock[0] >= 60.0:
            raise asyncio.CancelledError

    plog = ProgressLog(rows_now, logging.getLogger("t"), every=5.0)
    with caplog.at_level(logging.INFO, "t"), pytest.raises(asyncio.CancelledError):
        asyncio.run(plog.run(lambda: clock[0], sleep))
    assert looks[:5] == [1.0, 6.0, 11.0, 16.0, 21.0]  # one look a second after start, then idle: every 5 s
    assert looks[5:15] == [22.0 + i for i in range(10)]  # behind: every second, until told caught up
    assert looks[15:] == [36.0, 41.0, 46.0, 51.0, 56.0]  # caught up: every 5 s again
    messages = [r.getMessage() for r in caplog.records]
    assert [m.split(": ")[1] for m in messages] == ["catching up", "catching up", "caught up"], messages
    assert "10.0 KiB/s" in messages[1], messages  # measured over the last second, not the last 5


def test_a_look_collects_no_garbage_while_it_builds_the_rows_and_turns_collection_back_on() -> None:
    seen: list[bool] = []

    def rows() -> list[dict[str, Any]]:
        seen.append(gc.isenabled())
        return [row(0)]

    def broken() -> list[dict[str, Any]]:
        raise RuntimeError("status failed")

    assert gc.isenabled()
    ProgressLog(rows, logging.getLogger("t")).look(0.0)
    with pytest.raises(RuntimeError):
        ProgressLog(broken, logging.getLogger("t")).look(0.0)
    assert seen == [False] and gc.isenabled()


def test_an_idle_look_builds_no_rows_while_the_probe_says_nothing_is_behind(caplog: pytest.LogCaptureFixture) -> None:
    rows: list[dict[str, Any]] = [row(0, sent=0, lag=0.0)]
    looks: list[float] = []
    probes: list[float] = []
    clock = [0.0]

    def rows_now() -> list[dict[str, Any]]:
        looks.append(clock[0])
        return rows

    def behind() -> bool:
        probes.append(clock[0])
        return bool(rows[0]["copy_queue_bytes"])

    async def sleep(seconds: float) -> None:
        clock[0] += seconds
        if clock[0] == 21.0:
            rows[:] = [row(50_000, sent=0, lag=30.0)]
        elif clock[0] == 23.0:
            rows[:] = [row(0, sent=50_000, lag=0.0)]
        elif clock[0] >= 40.0:
            raise asyncio.CancelledError

    plog = ProgressLog(rows_now, logging.getLogger("t"), every=5.0, behind=behind)
    with caplog.at_level(logging.INFO, "t"), pytest.raises(asyncio.CancelledError):
        asyncio.run(plog.run(lambda: clock[0], sleep))
    assert looks[0] == 1.0 and probes[:4] == [6.0, 11.0, 16.0, 21.0]  # idle: the probe, not the rows
    assert looks[1:4] == [21.0, 22.0, 23.0]  # the probe saw a queue: looked, then each second till caught up
    assert 6.0 not in looks and 16.0 not in looks and 36.0 not in looks
    messages = [r.getMessage() for r in caplog.records]
    assert [m.split(": ")[1] for m in messages] == ["catching up", "caught up"], messages
