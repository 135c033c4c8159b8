"""retainable(): which source segments may go, and the retainer's one step on real files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from protocol.messages import Position
from shipper.retainer import Retainer, TargetView, retainable, why_not
from shipper.tailer import SegmentInfo

S1, S2, S3, S4 = (f"E0000000{i}.log" for i in range(1, 5))
SEGS = [
    SegmentInfo(S1, 10, 0.0, True),
    SegmentInfo(S2, 20, 0.0, True),
    SegmentInfo(S3, 30, 0.0, True),
    SegmentInfo(S4, 5, 0.0, False),
]
ALL = (Position(S4, 5), False)
REPLAYED_S3 = Position(S3, 30)


def target(
    name: str = "t1",
    state: str = "Healthy",
    acked: tuple[Position, bool] | None = ALL,
    replayed: Position | None = REPLAYED_S3,
    wait_for_replay: bool = True,
) -> TargetView:
    return TargetView(name, state, acked, replayed, wait_for_replay)


def test_every_sealed_segment_but_the_newest_goes_when_all_targets_hold_and_replayed_it() -> None:
    r = retainable(SEGS, [target("a"), target("b")], now=100.0, lag=0.0)
    assert r.remove == (S1, S2, S3) and r.holders == {}


def test_the_newest_segment_never_goes_even_if_sealed() -> None:
    segs = [*SEGS[:3], SegmentInfo(S4, 5, 0.0, True)]
    r = retainable(segs, [target(acked=(Position(S4, 5), True), replayed=Position(S4, 5))], 100.0, 0.0)
    assert r.remove == (S1, S2, S3)


def test_the_slowest_target_decides() -> None:
    slow = target("slow", acked=(Position(S2, 7), False))
    r = retainable(SEGS, [target("fast"), slow], 100.0, 0.0)
    assert r.remove == (S1,)
    assert r.holders == {"slow": "not yet durable there"}


def test_a_segment_sealed_in_the_copy_counts_only_once_its_seal_is_acknowledged() -> None:
    assert retainable(SEGS, [target(acked=(Position(S2, 20), False))], 100.0, 0.0).remove == (S1,)
    assert retainable(SEGS, [target(acked=(Position(S2, 20), True))], 100.0, 0.0).remove == (S1, S2)


@pytest.mark.parametrize("state", ["Fenced", "Failed"])
def test_a_fenced_or_failed_target_holds_everything(state: str) -> None:
    r = retainable(SEGS, [target("ok"), target("bad", state=state)], 100.0, 0.0)
    assert r.remove == ()
    assert r.holders == {"bad": f"{state}: its log is kept"}


@pytest.mark.parametrize("state", ["Disconnected", "Suspended"])
def test_a_disconnected_or_suspended_target_holds_after_its_last_known_position(state: str) -> None:
    r = retainable(SEGS, [target(state=state, acked=(Position(S2, 20), True), replayed=Position(S2, 20))], 1.0, 0.0)
    assert r.remove == (S1, S2)


def test_an_unknown_position_holds_everything() -> None:
    r = retainable(SEGS, [target("new", acked=None, replayed=None)], 100.0, 0.0)
    assert r.remove == () and r.holders == {"new": "position not known yet"}


def test_replay_is_waited_for_unless_the_target_says_durable_is_enough() -> None:
    behind = target(replayed=Position(S1, 10))
    assert retainable(SEGS, [behind], 100.0, 0.0).remove == (S1,)
    assert retainable(SEGS, [behind], 100.0, 0.0).holders == {"t1": "not yet replayed there"}
    nothing = target(replayed=Position("", 0))
    assert retainable(SEGS, [nothing], 100.0, 0.0).remove == ()
    unreported = target(replayed=None)
    assert why_not(unreported, SEGS[0]) == "replay position not reported yet"
    durable_only = target(replayed=None, wait_for_replay=False)
    assert retainable(SEGS, [durable_only], 100.0, 0.0).remove == (S1, S2, S3)


def test_truncation_lag_counts_from_when_every_target_held_it() -> None:
    slow = target("slow", acked=(Position(S1, 10), True), replayed=Position(S1, 10))
    r1 = retainable(SEGS, [target("fast"), slow], now=100.0, lag=60.0)
    assert r1.remove == () and r1.covered_since == {S1: 100.0} and r1.wait == 60.0
    # The slow target catches up at 130: S2 and S3 start their own clock then.
    r2 = retainable(SEGS, [target("fast"), target("slow")], 130.0, 60.0, r1.covered_since)
    assert r2.remove == () and r2.covered_since == {S1: 100.0, S2: 130.0, S3: 130.0}
    assert r2.wait == pytest.approx(30.0)
    r3 = retainable(SEGS, [target("fast"), target("slow")], 160.0, 60.0, r2.covered_since)
    assert r3.remove == (S1,) and r3.wait == pytest.approx(30.0)
    r4 = retainable(SEGS, [target("fast"), target("slow")], 190.0, 60.0, r3.covered_since)
    assert r4.remove == (S1, S2, S3)


def test_an_unsealed_segment_stops_the_walk() -> None:
    segs = [SegmentInfo(S1, 10, 0.0, True), SegmentInfo(S2, 20, 0.0, False), SegmentInfo(S3, 0, 0.0, False)]
    r = retainable(segs, [target(acked=(Position(S3, 0), False), replayed=Position(S3, 0))], 1.0, 0.0)
    assert r.remove == (S1,)


def test_no_target_no_retention() -> None:
    assert retainable(SEGS, [], 100.0, 0.0).remove == ()


def test_one_step_archives_in_order_and_durably(tmp_path: Path) -> None:
    source, archive = tmp_path / "src", tmp_path / "archive"
    source.mkdir()
    archive.mkdir()
    for seg in SEGS:
        (source / seg.name).write_bytes(b"x" * seg.size)
    targets = [target(acked=(Position(S2, 20), True), replayed=Position(S2, 20))]
    retainer = Retainer("db1", source, lambda: SEGS, lambda: targets, 0.0, archive)
    decision = asyncio.run(retainer.step(now=10.0))
    assert decision.remove == (S1, S2)
    assert sorted(p.name for p in source.iterdir()) == [S3, S4]
    assert sorted(p.name for p in archive.iterdir()) == [S1, S2]
    assert (archive / S2).read_bytes() == b"x" * 20
    # The tailer still lists them until its next scan: a second step is harmless.
    asyncio.run(retainer.step(now=11.0))
    assert retainer.removed == 2


def test_one_step_deletes_without_an_archive(tmp_path: Path) -> None:
    for seg in SEGS:
        (tmp_path / seg.name).write_bytes(b"y" * seg.size)
    retainer = Retainer("db1", tmp_path, lambda: SEGS, lambda: [target()], 0.0)
    asyncio.run(retainer.step(now=1.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == [S4]


def test_a_failing_archive_stops_retention_and_says_why(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for seg in SEGS:
        (source / seg.name).write_bytes(b"z" * seg.size)
    retainer = Retainer("db1", source, lambda: SEGS, lambda: [target()], 0.0, tmp_path / "no-such-archive")
    asyncio.run(retainer.step(now=1.0))
    assert sorted(p.name for p in source.iterdir()) == [s.name for s in SEGS]
    assert retainer.error is not None and "no-such-archive" in retainer.error and retainer.removed == 0
    (tmp_path / "no-such-archive").mkdir()
    asyncio.run(retainer.step(now=2.0))
    assert retainer.error is None and retainer.removed == 3
