"""Back-off is a promise: a retry pause is not cut short by new segments (fake clock, Replayer.step())."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiver.config import ReplaySettings
from receiver.copy import StreamCopy
from receiver.replayer import Replay, Retry, Stopped
from receiver.store import SegmentStore
from tests.helpers.replay_copy import NAMES, Clock, install


async def test_new_segments_do_not_cut_a_retry_pause_short(store: SegmentStore, tmp_path: Path) -> None:
    down = tmp_path / "standby-down"
    down.touch()
    runs = tmp_path / "runs"
    settings = ReplaySettings(
        mode="command", command=f"echo {{name}} >> {runs}; test ! -e {down}", retries=3, backoff=1.0
    )
    copy = StreamCopy("db1", store, settings)
    clock = Clock(1e10)
    copy.replayer.clock = clock
    install(store, copy, NAMES[0], "")
    first = await copy.replayer.step()
    assert isinstance(first, Retry) and first.delay == 1.0
    # Segments keep arriving during the pause: each install wakes the loop, which steps again at once.
    for i, name in enumerate(NAMES[1:], start=1):
        clock.now += 0.09
        install(store, copy, name, NAMES[i - 1])
        assert copy.replayer.wake.is_set()
        result = await copy.replayer.step()
        assert isinstance(result, Retry), result
    # 10 wake-ups within 0.9 s: still one attempt, and the pause left is what remains of the promised 1 s.
    assert len(runs.read_text().split()) == 1
    assert result.delay == pytest.approx(1e10 + 1.0 - clock.now)
    # The pauses fall due one after another: 1 s, 2 s, 4 s; then the attempts are spent.
    clock.now = 1e10 + 1.0
    assert (await copy.replayer.step()) == Retry(2.0, copy.state.last_error or "")
    clock.now += 1.9
    assert isinstance(await copy.replayer.step(), Retry)
    assert len(runs.read_text().split()) == 2
    clock.now += 0.1
    assert isinstance(r := await copy.replayer.step(), Retry) and r.delay == 4.0
    assert len(runs.read_text().split()) == 3
    # The standby comes back within the 7 s the back-off rides out: everything is replayed, nothing Failed.
    down.unlink()
    clock.now += 4.0
    for _ in NAMES:
        assert isinstance(await copy.replayer.step(), Replay)
    assert copy.state.replayed == NAMES[-1] and copy.state.replay_failed is None
    assert runs.read_text().split() == [NAMES[0]] * 4 + NAMES[1:]


async def test_spent_attempts_fail_and_resume_starts_afresh(store: SegmentStore, tmp_path: Path) -> None:
    copy = StreamCopy("db1", store, ReplaySettings(mode="command", command="false", retries=1, backoff=5.0))
    clock = Clock(1e10)
    copy.replayer.clock = clock
    install(store, copy, NAMES[0], "")
    assert isinstance(await copy.replayer.step(), Retry)
    clock.now += 5.0
    assert await copy.replayer.step() == Stopped("failed")
    await copy.resume(None)
    # The operator's resume is a fresh attempt at once, not the rest of an old pause.
    assert isinstance(r := await copy.replayer.step(), Retry) and r.delay == 5.0
