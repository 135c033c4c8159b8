"""Replay decisions (pure), the replayer's one-step coroutine on a store in a temp dir, status rows,
activation's missing-data check, and the replay settings."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from logship.config import ConfigError, parse_duration
from protocol.digest import chunk_digest, segment_digest
from protocol.messages import Position
from receiver.activation import missing_after_activation
from receiver.config import ReplaySettings, replay_from_doc
from receiver.copy import StreamCopy
from receiver.manifest import Installed, record_digest
from receiver.ops import Install, Write
from receiver.replayer import Gap, Hold, Idle, Replay, Retry, Stopped, next_to_replay, replay_queue, retry_delay
from receiver.state import CopyState
from receiver.status import copy_row, copy_state, render_rows
from receiver.store import SegmentStore
from receiver.targets import expand_command

S1, S2, S3, S4 = (f"E0000000{i}.log" for i in range(1, 5))


def rec(name: str, prev: str, at: float = 100.0, size: int = 10) -> Installed:
    return Installed(name, size, b"\0" * 16, prev, at)


LOG = [rec(S1, ""), rec(S2, S1, 110.0), rec(S3, S2, 120.0, 30)]


# -- next_to_replay ----------------------------------------------------------------------------


def test_replays_in_log_order_from_the_start() -> None:
    assert next_to_replay(LOG, "", 200.0, 0) == Replay(LOG[0])
    assert next_to_replay(LOG, S1, 200.0, 0) == Replay(LOG[1])
    assert next_to_replay(LOG, S2, 200.0, 0) == Replay(LOG[2])
    assert next_to_replay(LOG, S3, 200.0, 0) == Idle()
    assert next_to_replay([], "", 200.0, 0) == Idle()


def test_lag_holds_a_segment_until_it_was_installed_that_long_ago() -> None:
    assert next_to_replay(LOG, S1, 150.0, 60) == Hold(170.0)
    assert next_to_replay(LOG, S1, 170.0, 60) == Replay(LOG[1])
    # Lag zero: due at once, even with a clock behind the install time.
    assert next_to_replay(LOG, S1, 0.0, 0) == Hold(110.0)


def test_a_missing_segment_is_a_gap_never_skipped() -> None:
    broken = [LOG[0], LOG[2]]  # S2 missing: S3 says it follows S2
    d = next_to_replay(broken, S1, 500.0, 0)
    assert isinstance(d, Gap) and S3 in d.reason and "missing" in d.reason
    # Replay that has not started must begin at a segment that follows nothing.
    assert isinstance(next_to_replay(LOG[1:], "", 500.0, 0), Gap)


def test_a_segment_of_another_history_is_a_gap_even_with_the_right_name() -> None:
    first = Installed(S1, 10, b"\1" * 16, "", 100.0, b"")
    ours = Installed(S2, 10, b"\2" * 16, S1, 100.0, record_digest(first))
    assert next_to_replay([first, ours], S1, 200.0, 0) == Replay(ours)
    # Same name, same predecessor name, but chained after a different S1 record: another history's S2.
    other_first = Installed(S1, 11, b"\3" * 16, "", 100.0, b"")
    theirs = Installed(S2, 10, b"\4" * 16, S1, 100.0, record_digest(other_first))
    d = next_to_replay([first, theirs], S1, 200.0, 0)
    assert isinstance(d, Gap) and "another history" in d.reason, d
    # A first record that claims a predecessor it cannot have.
    assert isinstance(next_to_replay([Installed(S1, 10, b"\1" * 16, "", 100.0, b"x")], "", 200.0, 0), Gap)
    # Records written before the chain existed (no pdx) still replay by name.
    assert next_to_replay([rec(S1, ""), rec(S2, S1)], S1, 200.0, 0) == Replay(rec(S2, S1))


def test_retry_delay_doubles_then_gives_up() -> None:
    assert [retry_delay(n, 3, 0.5) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, None]
    assert retry_delay(1, 0, 1.0) is None


def test_replay_queue_counts_what_is_installed_but_not_replayed() -> None:
    assert replay_queue(LOG, "") == (3, 50, 100.0)
    assert replay_queue(LOG, S2) == (1, 30, 120.0)
    assert replay_queue(LOG, S3) == (0, 0, None)


def test_expand_command_quotes_values_and_keeps_shell_syntax() -> None:
    cmd = expand_command("cp {path} /r/{name} # ${HOME} {stream}", "/d/a b.log", "a b.log", "db1")
    assert cmd == "cp '/d/a b.log' /r/'a b.log' # ${HOME} db1"
    assert expand_command("check", "/x/y", "y", "s", append_path=True) == "check /x/y"
    assert expand_command("check {name}", "/x/y", "y", "s", append_path=True) == "check y"
    assert expand_command("rm {path}; x", "$(reboot)", "n", "s") == "rm '$(reboot)'; x"


def test_parse_duration() -> None:
    assert [parse_duration(t) for t in ("0", "90s", "15m", "24h", "1.5d", "2")] == [0, 90, 900, 86400, 129600, 2]
    for bad in ("", "1w", "-5s", "abc", "5 hours"):
        with pytest.raises(ConfigError):
            parse_duration(bad)


def test_replay_settings_flags_then_file_then_per_stream() -> None:
    args = argparse.Namespace(replay=None, replay_command=None, inspect_cmd="chk", replay_lag="90s")
    doc = {"replay_lag": "24h", "streams": {"a": {"replay": "command", "replay_command": "x {path}"}, "b": {}}}
    default, own = replay_from_doc(doc, args)
    assert default == ReplaySettings(inspect_cmd="chk", lag=90.0)
    assert own == {"a": ReplaySettings(mode="command", command="x {path}", inspect_cmd="chk", lag=90.0)}
    with pytest.raises(ConfigError, match="needs a replay command"):
        replay_from_doc({"replay": "command"}, argparse.Namespace())
    with pytest.raises(ConfigError, match="replay must be one of"):
        replay_from_doc({"replay": "tape"}, argparse.Namespace())


# -- status rows and activation's check ---------------------------------------------------------


def test_copy_state_names() -> None:
    assert copy_state(CopyState.from_json({"activated": {"epoch": 1}, "suspended": True}), True) == "Activated"
    assert copy_state(CopyState.from_json({"replay_failed": "x"}), True) == "Failed"
    assert copy_state(CopyState.from_json({"failed": "x"}), False) == "Failed"
    assert copy_state(CopyState.from_json({"suspended": True}), True) == "Suspended"
    assert copy_state(CopyState.from_json({}), True) == "Healthy"
    assert copy_state(CopyState.from_json({}), False, attached_once=True) == "Disconnected"
    assert copy_state(CopyState.from_json({}), False) == "Initializing"
    assert copy_state(CopyState.from_json({}), None) == "Disconnected"


def test_copy_row_and_table() -> None:
    state = CopyState.from_json(
        {"epoch": 2, "replayed": S1, "replayed_at": 105.0, "suspended": True, "comment": "backup"}
    )
    row = copy_row("db1", state, LOG, 130.0, True, replay_lag=60.0)
    assert row["state"] == "Suspended"
    assert (row["replay_queue_segments"], row["replay_queue_bytes"]) == (2, 40)
    assert row["last_copied"] == S3 and row["last_replayed"] == S1
    assert row["lag_seconds"] == 20.0
    assert row["replay_lag_seconds"] == 60.0
    text = render_rows([row], 130.0)
    assert "Suspended" in text and "backup" in text and "2 seg, 40 B" in text and "20.0s (lag 1m00s)" in text


def test_missing_after_activation() -> None:
    names = {S1, S2, S3}
    assert missing_after_activation(LOG, S3, names, Position(S4, 50), False, Position(S4, 50)) == []
    assert missing_after_activation(LOG, S3, names, Position(S3, 30), True, None) == []
    # Replay stopped at S2: S3 was acknowledged (installed) but is not in the replica.
    assert missing_after_activation(LOG, S2, names, None, False, None) == [f"{S3}: installed but not replayed"]
    # The tail left beside the replica is shorter than what was acknowledged.
    out = missing_after_activation(LOG, S3, names, Position(S4, 80), False, Position(S4, 50))
    assert len(out) == 1 and "beyond the tail" in out[0]
    out = missing_after_activation(LOG, S3, {S1, S3}, None, False, None)
    assert out == [f"{S2}: replayed but not in replica/"]


# -- the replayer, one step at a time -----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def install(store: SegmentStore, copy: StreamCopy, name: str, data: bytes, prev: str) -> None:
    records = store.apply(
        [Write(name, 0, data, chunk_digest(name, 0, data)), Install(name, len(data), segment_digest(data), prev)]
    )
    copy.on_installed(records)


async def test_step_replays_in_order_with_lag_and_persists(store: SegmentStore) -> None:
    clock = Clock()
    settings = ReplaySettings(lag=60.0)
    copy = StreamCopy("db1", store, settings)
    copy.replayer.clock = clock
    clock.now = copy.installed[0].at if copy.installed else 0.0
    install(store, copy, S1, b"one" * 100, "")
    install(store, copy, S2, b"two" * 100, S1)
    clock.now = copy.installed[0].at + 30
    assert isinstance(await copy.replayer.step(), Hold)
    assert not (store.replica / S1).exists()
    clock.now = copy.installed[1].at + 60
    assert isinstance(await copy.replayer.step(), Replay)
    assert isinstance(await copy.replayer.step(), Replay)
    assert await copy.replayer.step() == Idle()
    assert (store.replica / S1).read_bytes() == b"one" * 100
    assert (store.replica / S2).read_bytes() == b"two" * 100
    saved = json.loads(store.state_path.read_text())
    assert saved["replayed"] == S2 and saved["replayed_size"] == 300
    assert copy.replayed_position == Position(S2, 300)
    # Suspension holds replay; it survives a new StreamCopy from disk (a restart).
    await copy.suspend("testing")
    install(store, copy, S3, b"three", S2)
    clock.now += 1000
    assert await copy.replayer.step() == Stopped("suspended")
    again = StreamCopy("db1", store, ReplaySettings())
    assert again.state.suspended and again.state.comment == "testing"
    assert [r.name for r in again.installed] == [S1, S2, S3]
    await again.resume(None)
    assert isinstance(await again.replayer.step(), Replay)
    assert (store.replica / S3).read_bytes() == b"three"


async def test_corrupt_segment_is_retried_then_failed_and_quarantined(store: SegmentStore) -> None:
    copy = StreamCopy("db1", store, ReplaySettings(retries=2, backoff=0.5))
    clock = Clock()
    clock.now = 1e10  # after every install time
    copy.replayer.clock = clock
    install(store, copy, S1, b"a" * 1000, "")
    install(store, copy, S2, b"b" * 1000, S1)
    assert isinstance(await copy.replayer.step(), Replay)
    bad = bytearray((store.log_dir / S2).read_bytes())
    bad[500:501] = b"X"
    (store.log_dir / S2).write_bytes(bytes(bad))
    r1 = await copy.replayer.step()
    clock.now += 0.5
    r2 = await copy.replayer.step()
    clock.now += 1.0
    r3 = await copy.replayer.step()
    assert isinstance(r1, Retry) and r1.delay == 0.5 and "xxh3_128" in r1.reason
    assert isinstance(r2, Retry) and r2.delay == 1.0
    assert r3 == Stopped("failed")
    assert "xxh3_128 differs" in copy.state.replay_failed and "3 attempts" in copy.state.replay_failed
    assert not (store.replica / S2).exists()
    assert not (store.log_dir / S2).exists()
    kept = [p for p in store.quarantine.iterdir() if p.name.startswith(S2) and not p.name.endswith(".reason")]
    assert len(kept) == 1 and kept[0].read_bytes()[500:501] == b"X"
    # Never skipped: a later segment does not move replay past the failed one.
    install(store, copy, S3, b"c" * 10, S2)
    assert await copy.replayer.step() == Stopped("failed")
    assert json.loads(store.state_path.read_text())["replay_failed"] == copy.state.replay_failed


async def test_inspector_veto_and_command_replayer(store: SegmentStore, tmp_path: Path) -> None:
    out = tmp_path / "applied"
    settings = ReplaySettings(
        mode="command",
        command=f"cat {{path}} >> {out} && test {{name}} != {S2}",
        inspect_cmd=f"test ! -e {tmp_path}/veto-$(basename {{path}})",
        retries=0,
    )
    copy = StreamCopy("db1", store, settings)
    install(store, copy, S1, b"1111", "")
    install(store, copy, S2, b"2222", S1)
    (tmp_path / f"veto-{S1}").touch()
    assert await copy.replayer.step() == Stopped("failed")
    assert "inspector vetoed" in copy.state.replay_failed
    assert not out.exists()
    (tmp_path / f"veto-{S1}").unlink()
    await copy.resume(None)
    assert isinstance(await copy.replayer.step(), Replay)
    assert await copy.replayer.step() == Stopped("failed")
    assert "replay command failed on " + S2 in copy.state.replay_failed
    assert copy.state.replayed == S1
    assert (store.log_dir / S2).exists()  # a failing command is not bad data: nothing quarantined


def test_manifest_skips_torn_lines_and_the_newest_record_of_a_name_wins(store: SegmentStore) -> None:
    first = Installed(S1, 3, b"\1" * 16, "", 1.0)
    again = Installed(S1, 4, b"\2" * 16, "", 2.0)
    second = Installed(S2, 5, b"\3" * 16, S1, 3.0)
    store.manifest_path.write_bytes(first.to_line() + second.to_line() + again.to_line() + b'{"seg": "E000')
    assert store.read_manifest() == [again, second]
    assert Installed.from_line(b"not json") is None


async def test_segment_missing_from_log_is_retried_then_failed(store: SegmentStore) -> None:
    copy = StreamCopy("db1", store, ReplaySettings(retries=1, backoff=0.1))
    clock = Clock()
    clock.now = 1e10
    copy.replayer.clock = clock
    install(store, copy, S1, b"a" * 100, "")
    (store.log_dir / S1).unlink()
    r1 = await copy.replayer.step()
    assert isinstance(r1, Retry) and "missing from log/" in r1.reason
    clock.now += 0.1
    assert await copy.replayer.step() == Stopped("failed")
    assert "missing from log/" in copy.state.replay_failed
    assert copy.replayed_position == Position("", 0)


async def test_run_wakes_on_install_and_on_resume(store: SegmentStore) -> None:
    copy = StreamCopy("db1", store, ReplaySettings())
    replayed = asyncio.Event()
    copy.replayer.on_replayed = replayed.set
    copy.replayer.start()
    try:
        install(store, copy, S1, b"x" * 10, "")
        await asyncio.wait_for(replayed.wait(), 5)
        assert copy.replayed_position == Position(S1, 10)
        await copy.suspend(None)
        replayed.clear()
        install(store, copy, S2, b"y" * 10, S1)
        await asyncio.sleep(0.3)
        assert not replayed.is_set()
        await copy.resume(None)
        await asyncio.wait_for(replayed.wait(), 5)
        assert copy.replayed_position == Position(S2, 10)
    finally:
        await copy.replayer.stop()
