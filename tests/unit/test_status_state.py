"""The status a shipper keeps across restarts (shipper/status_state.py): what it keeps, what status shows
from it, and that a damaged or absent file only costs the display."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from protocol.messages import Position
from shipper.remembered import Remembered
from shipper.status import TargetStats
from shipper.status_state import STATUS_FILE, StatusKeeper, load, remember, save, shown

NAMES = ["E1", "E2", "E3"]


def kept(last: str = "E2", at: float | None = 100.0) -> Remembered:
    return Remembered(Position("E3", 500), False, 99.0, last, at, Position("E1", 0), 101.0)


def test_round_trip_and_damage(tmp_path: Path) -> None:
    save(tmp_path, {("s", "h:1"): kept()})
    assert (tmp_path / STATUS_FILE).stat().st_mode & 0o777 == 0o600
    assert load(tmp_path) == {("s", "h:1"): kept()}
    assert load(tmp_path / "nosuch") == {}
    (tmp_path / STATUS_FILE).write_text('{"targets": [{"stream": "s", "target": "h:1", "acked": 5}]}')
    assert load(tmp_path) == {}


def test_shown_uses_the_previous_run_until_the_target_answers() -> None:
    stats = TargetStats(remembered=kept())
    view = shown(stats, NAMES)
    assert view.acked == (Position("E3", 500), False) and not view.proven
    assert (view.last_copied, view.last_copied_at, view.replayed) == ("E2", 100.0, Position("E1", 0))
    # A WELCOME inside E3: proven now; E2 is the newest copied, and keeps the time the last run knew.
    stats.acked, stats.acked_sealed, stats.known = Position("E3", 700), False, True
    view = shown(stats, NAMES)
    assert view.proven and view.acked == (Position("E3", 700), False)
    assert (view.last_copied, view.last_copied_at) == ("E2", 100.0)
    # A newer segment acknowledged on this run: its own time.
    stats.last_copied, stats.last_copied_at = "E3", 200.0
    assert (shown(stats, NAMES).last_copied, shown(stats, NAMES).last_copied_at) == ("E3", 200.0)
    assert shown(TargetStats(), NAMES).acked is None


def test_remember_keeps_what_this_run_learnt_else_the_last_runs() -> None:
    assert remember(TargetStats(remembered=kept()), 5.0) == kept()
    assert remember(TargetStats(), 5.0) is None
    stats = TargetStats(acked=Position("E2", 9), acked_sealed=True, known=True, last_copied="E2", remembered=kept())
    got = remember(stats, 5.0)
    assert got is not None and (got.acked, got.last_copied, got.last_copied_at, got.saved_at) == (
        Position("E2", 9),
        "E2",
        100.0,  # the WELCOME named E2 again without a time: the one the last run had
        5.0,
    )


def test_keeper_writes_only_changes(tmp_path: Path) -> None:
    stats = TargetStats()
    keeper = StatusKeeper(tmp_path, [(("s", "h:1"), stats)])
    asyncio.run(keeper.flush())
    assert not (tmp_path / STATUS_FILE).exists()  # nothing known: nothing to keep
    stats.acked, stats.known, stats.last_copied = Position("E1", 10), True, ""
    asyncio.run(keeper.flush())
    first = (tmp_path / STATUS_FILE).stat().st_mtime_ns
    asyncio.run(keeper.flush())
    assert (tmp_path / STATUS_FILE).stat().st_mtime_ns == first
    doc = json.loads((tmp_path / STATUS_FILE).read_text())
    assert doc["targets"][0]["acked"] == ["E1", 10, True]
    again = TargetStats()
    StatusKeeper(tmp_path, [(("s", "h:1"), again)])
    assert again.remembered is not None and again.remembered.acked == Position("E1", 10)


def test_keeper_writes_each_change_after_quiet_flushes(tmp_path: Path) -> None:
    stats = TargetStats(acked=Position("E1", 10), known=True)
    keeper = StatusKeeper(tmp_path, [(("s", "h:1"), stats)])
    asyncio.run(keeper.flush())
    asyncio.run(keeper.flush())  # nothing moved: skipped without a snapshot
    stats.acked_at = 7.0  # not kept on its own: still no write
    asyncio.run(keeper.flush())
    assert json.loads((tmp_path / STATUS_FILE).read_text())["targets"][0]["acked_at"] == 0.0
    for field, value in [("replayed", Position("E1", 5)), ("last_copied_at", 9.0), ("acked", Position("E2", 1))]:
        setattr(stats, field, value)
        asyncio.run(keeper.flush())
        doc = json.loads((tmp_path / STATUS_FILE).read_text())["targets"][0]
        assert doc["replayed"] == ["E1", 5] and doc["acked_at"] == 7.0, (field, doc)
    assert doc["last_copied_at"] == 9.0 and doc["acked"] == ["E2", 1, True]
