"""Exactly-once command replay: the wrapper records the exit status even when the receiver is gone.

A receiver "dies" here by having its replayer task cancelled and its copy dropped (the wrapper runs in a
session of its own and goes on, as after a kill -9; the MariaDB tests kill a real receiver process). A
new ``StreamCopy`` read from the same directory is the restarted receiver. Commands append their
LOGSHIP_ATTEMPT and LOGSHIP_RUN to a file, so every run is counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from protocol.digest import chunk_digest, segment_digest
from receiver.config import ReplaySettings
from receiver.copy import StreamCopy
from receiver.ops import Install, Write
from receiver.replay_run import REFUSED, RUN_FILE, Finished, NeverStarted, read_run, settle
from receiver.replayer import Replay, Retry, Stopped
from receiver.store import SegmentStore
from tests.helpers.waiting import wait_until

S1, S2 = "mysql-bin.000001", "mysql-bin.000002"
INTERRUPTED = f"replay of {S1} was interrupted; the target is not known to be safe to re-run"


def install(store: SegmentStore, copy: StreamCopy, name: str, prev: str) -> None:
    data = name.encode() * 10
    records = store.apply(
        [Write(name, 0, data, chunk_digest(name, 0, data)), Install(name, len(data), segment_digest(data), prev)]
    )
    copy.on_installed(records)


def held_command(tmp: Path) -> str:
    """A command that says it started, waits for tmp/go (at most 20 s), then logs its run."""
    return (
        f"touch {tmp}/started-{{name}}; i=0; while [ ! -e {tmp}/go ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); "
        f'done; echo "{{name}} $LOGSHIP_ATTEMPT $LOGSHIP_RUN" >> {tmp}/runs'
    )


def runs(tmp: Path) -> list[str]:
    path = tmp / "runs"
    return path.read_text().splitlines() if path.exists() else []


async def wait_for(path: Path, timeout: float = 15) -> None:
    await asyncio.to_thread(wait_until, path.exists, timeout, 0.02, str(path))


async def die_during_replay(store: SegmentStore, tmp: Path, settings: ReplaySettings) -> StreamCopy:
    """Start replaying S1, wait until its command runs, then let the receiver die; return the restarted copy."""
    copy = StreamCopy("db1", store, settings)
    install(store, copy, S1, "")
    step = asyncio.create_task(copy.replayer.step())
    await wait_for(tmp / f"started-{S1}")
    step.cancel()
    with pytest.raises(asyncio.CancelledError):
        await step
    assert json.loads(store.state_path.read_text())["replaying"]["segment"] == S1
    return StreamCopy("db1", store, settings)


async def test_a_run_that_outlives_the_receiver_is_waited_for_not_run_again(
    store: SegmentStore, tmp_path: Path
) -> None:
    again = await die_during_replay(store, tmp_path, ReplaySettings(mode="command", command=held_command(tmp_path)))
    step = asyncio.create_task(again.replayer.step())
    await asyncio.sleep(0.5)
    assert not step.done(), "the restarted receiver must wait for the command that still runs"
    (tmp_path / "go").touch()
    assert isinstance(await asyncio.wait_for(step, 15), Replay)
    assert runs(tmp_path) == [f"{S1} 1 replay"]
    assert again.state.replayed == S1 and again.state.replaying is None
    install(store, again, S2, S1)
    assert isinstance(await again.replayer.step(), Replay)
    assert runs(tmp_path) == [f"{S1} 1 replay", f"{S2} 1 replay"]


async def test_a_run_that_finished_while_no_receiver_watched_is_taken_as_done(
    store: SegmentStore, tmp_path: Path
) -> None:
    again = await die_during_replay(store, tmp_path, ReplaySettings(mode="command", command=held_command(tmp_path)))
    (tmp_path / "go").touch()
    done = lambda: (rec := read_run(store.root / RUN_FILE)) is not None and rec.state == "done"  # noqa: E731
    await asyncio.to_thread(wait_until, done, 15, 0.02, "the run record of a finished run")
    assert isinstance(await again.replayer.step(), Replay)
    assert runs(tmp_path) == [f"{S1} 1 replay"]


async def test_a_failed_run_found_after_a_restart_is_retried_as_the_next_attempt(
    store: SegmentStore, tmp_path: Path
) -> None:
    command = held_command(tmp_path) + f"; test -e {tmp_path}/fixed"
    again = await die_during_replay(store, tmp_path, ReplaySettings(mode="command", command=command, backoff=0.01))
    (tmp_path / "go").touch()
    first = await asyncio.wait_for(again.replayer.step(), 15)
    assert isinstance(first, Retry) and "exit 1" in first.reason
    (tmp_path / "fixed").touch()
    await asyncio.sleep(0.02)
    assert isinstance(await again.replayer.step(), Replay)
    assert runs(tmp_path) == [f"{S1} 1 replay", f"{S1} 2 replay"]


async def test_a_run_found_after_a_restart_that_failed_for_lack_of_space_waits(
    store: SegmentStore, tmp_path: Path
) -> None:
    # Not counted as a failure: replay waits for space and runs the command again (attempt 2).
    fails = f"echo 'cp: error writing: No space left on device' >&2; test -e {tmp_path}/fixed"
    settings = ReplaySettings(mode="command", command=held_command(tmp_path) + "; " + fails, backoff=0.01)
    again = await die_during_replay(store, tmp_path, settings)
    (tmp_path / "go").touch()
    first = await asyncio.wait_for(again.replayer.step(), 15)
    assert isinstance(first, Retry) and "lack of space" in first.reason, first
    assert (again.replayer.failures, again.replayer.space_waits) == (0, 1)
    assert again.state.failed is None
    (tmp_path / "fixed").touch()
    again.replayer.retry_at = 0.0  # the space wait's pause (1 s and more) is not what this test is about
    assert isinstance(await asyncio.wait_for(again.replayer.step(), 15), Replay)
    assert runs(tmp_path) == [f"{S1} 1 replay", f"{S1} 2 replay"]


def kill_run(store: SegmentStore) -> None:
    """Kill the wrapper and its command (a whole-group kill: the run never records its end)."""
    rec = read_run(store.root / RUN_FILE)
    assert rec is not None and rec.pid is not None and rec.state == "running"
    os.killpg(rec.pid, signal.SIGKILL)


async def interrupted(store: SegmentStore, tmp: Path, settings: ReplaySettings) -> StreamCopy:
    again = await die_during_replay(store, tmp, settings)
    kill_run(store)
    (tmp / "go").touch()
    return again


async def test_an_interrupted_run_stops_the_copy_unless_the_target_is_safe(store: SegmentStore, tmp_path: Path) -> None:
    settings = ReplaySettings(mode="command", command=held_command(tmp_path))
    again = await interrupted(store, tmp_path, settings)
    await asyncio.sleep(0.2)  # the killed group is gone
    assert await asyncio.wait_for(again.replayer.step(), 15) == Stopped("failed")
    assert INTERRUPTED in (again.state.replay_failed or "")
    assert runs(tmp_path) == []
    # The reason survives a restart; an operator's resume (after repairing the target) runs it again.
    third = StreamCopy("db1", store, settings)
    assert INTERRUPTED in (third.state.replay_failed or "")
    await third.resume("repaired by hand")
    assert isinstance(await third.replayer.step(), Replay)
    assert runs(tmp_path) == [f"{S1} 2 replay"]


async def test_an_interrupted_run_is_rerun_when_safe_or_recovered(store: SegmentStore, tmp_path: Path) -> None:
    safe = ReplaySettings(mode="command", command=held_command(tmp_path), rerun="safe")
    again = await interrupted(store, tmp_path, safe)
    await asyncio.sleep(0.2)
    assert isinstance(await asyncio.wait_for(again.replayer.step(), 15), Replay)
    assert runs(tmp_path) == [f"{S1} 2 replay"]


async def test_an_interrupted_run_goes_to_the_recover_command(store: SegmentStore, tmp_path: Path) -> None:
    recover = f'echo "{{name}} $LOGSHIP_ATTEMPT $LOGSHIP_RUN" >> {tmp_path}/runs'
    settings = ReplaySettings(mode="command", command=held_command(tmp_path), recover_command=recover)
    again = await interrupted(store, tmp_path, settings)
    await asyncio.sleep(0.2)
    assert isinstance(await asyncio.wait_for(again.replayer.step(), 15), Replay)
    assert runs(tmp_path) == [f"{S1} 2 recover"]


async def test_a_timed_out_command_is_an_interrupted_run(store: SegmentStore, tmp_path: Path) -> None:
    settings = ReplaySettings(mode="command", command="sleep 30", command_timeout=0.5)
    copy = StreamCopy("db1", store, settings)
    install(store, copy, S1, "")
    result = await asyncio.wait_for(copy.replayer.step(), 20)
    assert result == Stopped("failed")
    assert "timed out after 0.5s" in (copy.state.replay_failed or "")
    assert "not known to be safe to re-run" in (copy.state.replay_failed or "")


async def test_a_run_that_never_started_is_run_and_a_late_wrapper_runs_nothing(
    store: SegmentStore, tmp_path: Path
) -> None:
    # The receiver recorded attempt 1 and died before its wrapper claimed it.
    store.root.mkdir(parents=True, exist_ok=True)
    store.state_path.write_text(json.dumps({"replaying": {"segment": S1, "attempt": 1}}))
    assert settle(store.root, S1, 1) == NeverStarted("no run record")
    # A wrapper of attempt 1 that starts only now finds the attempt settled and runs nothing.
    late = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "receiver.replay_wrapper",
            str(store.root),
            S1,
            "1",
            "replay",
            "10",
            f"touch {tmp_path}/x",
        ],
        timeout=30,
    )
    assert late.returncode == REFUSED and not (tmp_path / "x").exists()
    command = f'echo "{{name}} $LOGSHIP_ATTEMPT $LOGSHIP_RUN" >> {tmp_path}/runs'
    copy = StreamCopy("db1", store, ReplaySettings(mode="command", command=command))
    install(store, copy, S1, "")
    assert isinstance(await copy.replayer.step(), Replay)
    # Never started is not interrupted: no safety is needed to run it, as attempt 2.
    assert runs(tmp_path) == [f"{S1} 2 replay"]
    assert settle(store.root, S1, 2) == Finished(0, "")
