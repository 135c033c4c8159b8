"""Shipper status: copy queue, replay queue, lag tracking, the table, and the state directory."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from logship.config import ConfigError
from protocol.messages import Position
from shipper.__main__ import build_parser
from shipper.config import config_from_args
from shipper.state import StateBusy, StateDir, Suspension
from shipper.status import LagTracker, copy_queue, end_key, replay_queue, table
from shipper.tailer import SegmentInfo

S1, S2, S3 = "E01.log", "E02.log", "E03.log"
SEGS = [SegmentInfo(S1, 100, 0.0, True), SegmentInfo(S2, 200, 0.0, True), SegmentInfo(S3, 50, 0.0, False)]
NAMES = [s.name for s in SEGS]


@pytest.mark.parametrize(
    ("acked", "queue"),
    [
        ((Position("", 0), True), (3, 350)),
        ((Position(S1, 40), False), (3, 310)),
        ((Position(S1, 100), False), (3, 250)),  # all bytes, SEAL not yet acknowledged
        ((Position(S1, 100), True), (2, 250)),
        ((Position(S2, 200), True), (1, 50)),
        ((Position(S3, 20), False), (1, 30)),
        ((Position(S3, 50), False), (0, 0)),
    ],
)
def test_copy_queue(acked: tuple[Position, bool], queue: tuple[int, int]) -> None:
    assert copy_queue(SEGS, NAMES, acked) == queue


def test_an_empty_active_segment_is_not_queued() -> None:
    segs = [SegmentInfo(S1, 100, 0.0, True), SegmentInfo(S2, 0, 0.0, False)]
    assert copy_queue(segs, [S1, S2], (Position(S1, 100), True)) == (0, 0)


def test_replay_queue_counts_sealed_in_the_copy_and_not_replayed() -> None:
    acked = (Position(S3, 10), False)
    assert replay_queue(SEGS, NAMES, acked, Position("", 0)) == (2, 300)
    assert replay_queue(SEGS, NAMES, acked, Position(S1, 100)) == (1, 200)
    assert replay_queue(SEGS, NAMES, acked, Position(S2, 200)) == (0, 0)
    assert replay_queue(SEGS, NAMES, (Position(S2, 200), False), Position("", 0)) == (1, 100)


def test_lag_is_the_age_of_the_oldest_unacknowledged_byte() -> None:
    t = LagTracker()
    t.record((Position(S1, 10), False), 100.0)
    t.record((Position(S1, 20), False), 101.0)
    t.record((Position(S1, 20), False), 102.0)  # no change: no sample
    t.record((Position(S1, 30), False), 103.0)
    assert t.lag((Position(S1, 5), False), 110.0) == 10.0
    assert t.lag((Position(S1, 10), False), 110.0) == 9.0
    assert t.lag((Position(S1, 25), False), 110.0) == 7.0
    assert t.lag((Position(S1, 30), False), 110.0) == 0.0
    assert t.lag(None, 110.0) == 0.0


def test_lag_of_an_unknown_position_counts_from_the_first_sample() -> None:
    t = LagTracker()
    t.record(end_key(SEGS), 50.0)
    assert t.lag(None, 80.0) == 30.0


def test_a_full_tracker_overstates_never_understates() -> None:
    t = LagTracker(capacity=3)
    for i in range(10):
        t.record((Position(S1, i + 1), False), float(i))
    assert t.lag((Position(S1, 2), False), 20.0) == 20.0 - 2.0
    # Everything past the third sample is dated at the third sample's time (2.0), the oldest possible.
    assert t.lag((Position(S1, 5), False), 20.0) == 18.0
    assert t.lag((Position(S1, 10), False), 20.0) == 0.0


def test_end_key() -> None:
    assert end_key(SEGS) == (Position(S3, 50), False)
    assert end_key([]) == (Position("", 0), True)


def test_table_shows_suspension_comment_and_queues() -> None:
    snap = {
        "node": "n1",
        "pid": 7,
        "copies": [
            {
                "stream": "db1",
                "target": "h:1",
                "state": "Suspended",
                "copy_queue_segments": 3,
                "copy_queue_bytes": 3 << 20,
                "replay_queue_segments": None,
                "last_copied": S1,
                "last_copied_at": 90.0,
                "lag_seconds": 12.5,
                "copy_lag_seconds": 12.5,
                "suspended": True,
                "comment": "disk swap",
                "retention": "holds: not yet durable there",
            }
        ],
    }
    out = table(snap, now=100.0)
    assert "Suspended" in out and "3 seg, 3.0 MiB" in out and "suspended: disk swap" in out
    assert f"{S1} (10.0s ago)" in out and "12.5s" in out and "holds: not yet durable there" in out


def test_state_dir_keeps_suspensions_and_is_locked(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "st")
    state.create()
    assert state.load_suspensions() == {}
    state.save_suspensions({("db1", "h:1"): Suspension("why", 5.0)})
    assert StateDir(tmp_path / "st").load_suspensions() == {("db1", "h:1"): Suspension("why", 5.0)}
    assert not [p for p in (tmp_path / "st").iterdir() if p.name.endswith(".tmp")]
    assert (tmp_path / "st" / "suspended.json").stat().st_mode & 0o077 == 0
    assert state.set_suspended("db1", "h:1", False, None) is True
    assert json.loads((tmp_path / "st" / "suspended.json").read_text()) == {"suspended": []}
    state.lock()
    other = StateDir(tmp_path / "st")
    with pytest.raises(StateBusy):
        other.lock()
    state.unlock()
    other.lock()
    other.unlock()


def _args(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def test_retention_and_state_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "s"
    secret.write_text("k" * 40)
    os.chmod(secret, 0o600)
    base = ["--stream", "db1", "--source", str(tmp_path), "--target", "h:1", "--secret-file", str(secret)]
    monkeypatch.setenv("LOGSHIP_SHIPPER_STATE_DIR", str(tmp_path / "env-state"))
    cfg = config_from_args(_args(base))
    assert cfg.state_dir == tmp_path / "env-state" and not cfg.state_dir_given and cfg.admin is None
    assert cfg.streams[0].retain is False
    # The archive is a directory of its own: one equal to the source would archive nothing (issue 18).
    archive = tmp_path / "archive"
    archive.mkdir()
    cfg = config_from_args(
        _args(
            [
                *base,
                "--retain",
                "--archive-dir",
                str(archive),
                "--truncation-lag",
                "90s",
                "--retain-until",
                "durable",
                "--state-dir",
                "/x",
                "--admin",
                "127.0.0.1:9100",
            ]
        )
    )
    s = cfg.streams[0]
    assert s.retain and s.archive_dir == archive and s.truncation_lag == 90.0
    assert s.targets[0].wait_for_replay is False
    assert cfg.state_dir == Path("/x") and cfg.state_dir_given and cfg.admin == ("127.0.0.1", 9100)
    with pytest.raises(ConfigError, match="archive directory"):
        config_from_args(_args([*base, "--retain", "--archive-dir", str(tmp_path / "none")]))
    with pytest.raises(ConfigError, match="bad duration"):
        config_from_args(_args([*base, "--truncation-lag", "soon"]))


def test_config_file_per_target_settings(tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_text("k" * 40)
    os.chmod(secret, 0o600)
    conf = tmp_path / "c.toml"
    conf.write_text(
        f'state_dir = "{tmp_path}/st"\nadmin = "127.0.0.1:0"\nwindow = "8MiB"\n'
        f'[[stream]]\nname = "a"\nsource = "{tmp_path}"\nsecret_file = "{secret}"\n'
        'retain = true\ntruncation_lag = "2h"\n'
        '[[stream.target]]\naddress = "h:1"\n'
        '[[stream.target]]\naddress = "h:2"\nwindow = "64MiB"\nretain_until = "durable"\n'
    )
    cfg = config_from_args(_args(["--config", str(conf)]))
    assert cfg.state_dir == tmp_path / "st" and cfg.admin == ("127.0.0.1", 0)
    s = cfg.streams[0]
    assert s.retain and s.truncation_lag == 7200.0
    t1, t2 = s.targets
    assert t1.sender is None and t1.wait_for_replay
    assert t2.sender is not None and t2.sender.window == 64 << 20 and not t2.wait_for_replay
    assert cfg.sender.window == 8 << 20
    conf.write_text(conf.read_text().replace('retain_until = "durable"', 'retain_until = "never"'))
    with pytest.raises(ConfigError, match="retain_until"):
        config_from_args(_args(["--config", str(conf)]))


def test_control_handler_suspends_persistently_and_refuses_unknown_targets(tmp_path: Path) -> None:
    import asyncio

    from shipper.daemon import Shipper

    secret = tmp_path / "s"
    secret.write_text("k" * 40)
    os.chmod(secret, 0o600)
    argv = ["--stream", "db1", "--source", str(tmp_path), "--secret-file", str(secret)]
    cfg = config_from_args(
        _args([*argv, "--target", "127.0.0.1:1", "--target", "127.0.0.1:2", "--state-dir", str(tmp_path / "st")])
    )
    state = StateDir(cfg.state_dir)
    state.create()

    async def scenario() -> None:
        shipper = Shipper(cfg, state)
        snap = await shipper.control({"op": "status"})
        assert [(r["target"], r["state"]) for r in snap["copies"]] == [
            ("127.0.0.1:1", "Initializing"),
            ("127.0.0.1:2", "Initializing"),
        ]
        assert (await shipper.control({"op": "suspend", "stream": "db1", "target": "127.0.0.1:2", "comment": "c"}))[
            "ok"
        ]
        rows = {r["target"]: r for r in shipper.status()["copies"]}
        assert (
            rows["127.0.0.1:2"]["state"] == "Suspended"
            and rows["127.0.0.1:2"]["comment"] == "c"
            and rows["127.0.0.1:1"]["suspended"] is False
        )
        assert (await shipper.control({"op": "suspend", "stream": "db1", "target": "127.0.0.1:9"}))["ok"] is False
        assert (await shipper.control({"op": "suspend", "stream": "nope", "target": "127.0.0.1:1"}))["ok"] is False
        assert (await shipper.control({"op": "explode"}))["ok"] is False
        # A new shipper on the same state dir starts with the suspension.
        again = Shipper(cfg, state)
        assert again.services["db1"].suspended.keys() == {"127.0.0.1:2"}
        assert (await shipper.control({"op": "resume", "stream": "db1", "target": "127.0.0.1:2"}))["ok"]
        assert Shipper(cfg, state).services["db1"].suspended == {}
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()

    asyncio.run(scenario())


def test_lag_tracker_seeded_from_file_times_survives_a_restart() -> None:
    # A restarted shipper sees the whole source "now"; the files' times say how old the bytes are.
    segs = [SegmentInfo("E1.log", 100, 1000.0, True), SegmentInfo("E2.log", 50, 1010.0, False)]
    t = LagTracker()
    t.seed(segs, 1100.0)
    t.record(end_key(segs), 1100.0)
    assert t.lag(None, 1100.0) == 100.0  # nothing known: since the first segment's time
    # E2's bytes came after E1 was last written (at 1000): overstated by at most one segment's time.
    assert t.lag((Position("E1.log", 100), True), 1100.0) == 100.0
    assert t.lag((Position("E2.log", 50), False), 1100.0) == 0.0
    t.seed(segs, 1200.0)  # once only
    assert t.lag((Position("E2.log", 50), False), 1200.0) == 0.0


def test_progress_text_rate_and_eta() -> None:
    from logship.admin.table import progress_text

    assert progress_text(10 << 20, 2 << 20) == "2.0 MiB/s, ETA 5.0s"
    assert progress_text(0, 2 << 20) == "-" and progress_text(10, None) == "-" and progress_text(10, 0) == "-"


def test_resume_wording() -> None:
    from logship.admin.wording import resume_text

    assert resume_text("", 0, True) == "starting from the first segment (empty copy)"
    assert resume_text("E1.log", 42, False) == "resuming at E1.log@42"
    assert resume_text("E1.log", 42, True) == "resuming at E1.log@42 (sealed)"
