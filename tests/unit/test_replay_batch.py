"""Directory replay records a run of due segments as one batch: links first, one replica/ flush, then
state.json (receiver/replay_batch.py); a restart inside a batch finds the links and records them."""

from __future__ import annotations

from protocol.digest import chunk_digest, segment_digest
from receiver.copy import StreamCopy
from receiver.ops import Install, Write
from receiver.replay_batch import BATCH
from receiver.replayer import Idle, Replay
from receiver.state import load_state
from receiver.store import SegmentStore

NAMES = [f"E{i:08d}.log" for i in range(1, 5)]


def install_all(store: SegmentStore, copy: StreamCopy, names: list[str]) -> None:
    prev = ""
    for name in names:
        data = name.encode() * 50
        ops = [Write(name, 0, data, chunk_digest(name, 0, data)), Install(name, len(data), segment_digest(data), prev)]
        copy.on_installed(store.apply(ops))
        prev = name


def flushes(copy: StreamCopy) -> list[int]:
    """Count the directory flushes of the copy's target (the real fsync still runs)."""
    target = copy.replayer.target
    count = [0]
    real = target.flush  # type: ignore[attr-defined]

    def counted() -> None:
        if target.unflushed:  # type: ignore[attr-defined]
            count[0] += 1
        real()

    target.flush = counted  # type: ignore[attr-defined]
    return count


async def test_segments_due_together_are_linked_then_recorded_once(store: SegmentStore) -> None:
    copy = StreamCopy("db1", store)
    install_all(store, copy, NAMES)
    count = flushes(copy)
    replayed: list[str | None] = []
    copy.replayer.on_replayed = lambda: replayed.append(copy.state.replayed)
    for i, name in enumerate(NAMES[:-1]):
        assert await copy.replayer.step() == Replay(copy.installed[i])
        # Linked, but not recorded: neither in memory (ACKs, retention, status) nor in state.json.
        assert (store.replica / name).exists()
        assert copy.state.replayed is None and load_state(store.state_path).replayed is None
        assert copy.replayer.replayed == name
    assert isinstance(await copy.replayer.step(), Replay)
    assert copy.state.replayed == NAMES[-1] == load_state(store.state_path).replayed
    assert count == [1] and replayed == [NAMES[-1]]
    assert isinstance(await copy.replayer.step(), Idle)


async def test_a_restart_inside_a_batch_records_the_links_it_finds(store: SegmentStore) -> None:
    copy = StreamCopy("db1", store)
    install_all(store, copy, NAMES[:2])
    await copy.replayer.step()  # S1 linked, S2 due: nothing recorded (a crash here)
    assert load_state(store.state_path).replayed is None
    again = StreamCopy("db1", store)
    assert isinstance(await again.replayer.step(), Replay)
    assert again.replayer.target.how["linked already"] == 1  # type: ignore[attr-defined]
    await again.replayer.step()
    assert load_state(store.state_path).replayed == NAMES[1]
    assert (store.replica / NAMES[1]).stat().st_ino == (store.log_dir / NAMES[1]).stat().st_ino


async def test_a_batch_is_recorded_after_at_most_batch_segments(store: SegmentStore) -> None:
    names = [f"E{i:08d}.log" for i in range(1, BATCH + 3)]
    copy = StreamCopy("db1", store)
    install_all(store, copy, names)
    for _ in range(BATCH):
        await copy.replayer.step()
    assert copy.state.replayed == names[BATCH - 1]
