"""The committer with several batches in flight: a batch is made as soon as the one before it is
written, even while earlier ones are still syncing; ACKs still come in order, each only once its own
sync and every earlier one returned; a failed sync acknowledges nothing after it."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from protocol.messages import Ack, Position
from receiver import committer
from receiver.committer import Attachment
from receiver.ops import Op, Write

SEG = "E0000000001.log"


class _GatedStore:
    """Writes return at once; the sync of batch i (in write order) waits for ``release(i)``."""

    def __init__(self) -> None:
        self.writes: list[list[Op]] = []
        self.gates: list[threading.Event] = []
        self.fail: set[int] = set()
        self.lock = threading.Lock()

    def write(self, ops: list[Op]) -> tuple[int, list[Any]]:
        with self.lock:
            self.writes.append(ops)
            self.gates.append(threading.Event())
            return len(self.writes) - 1, []

    def sync(self, pending: int) -> None:
        self.gates[pending].wait(10)
        if pending in self.fail:
            raise OSError(5, "EIO (test)")

    def release(self, i: int) -> None:
        self.gates[i].set()

    def close(self) -> None:
        pass


class _Copy:
    name = "db1"
    replayed_position = Position("", 0)

    def __init__(self) -> None:
        self.store = _GatedStore()

    def on_installed(self, installed: list[Any]) -> None:
        pass


class _Conn:
    closing = False

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.writer = self
        self.closed = False

    def send(self, msg: Any) -> int:
        self.sent.append(msg)
        return 0

    def close(self) -> None:
        self.closed = True

    def acked(self) -> list[int]:
        return [m.position.offset for m in self.sent if isinstance(m, Ack)]


async def _until(pred: Any, what: str) -> None:
    for _ in range(1000):
        if pred():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def _attach() -> tuple[Attachment, _Copy, _Conn]:
    copy, conn = _Copy(), _Conn()
    att = Attachment(copy, conn, None, Position("", 0), False, 1 << 20)  # type: ignore[arg-type]
    return att, copy, conn


async def _submit_one_batch_each(att: Attachment, store: _GatedStore, n: int) -> None:
    for i in range(n):
        att.submit([Write(SEG, i * 10, b"x" * 10, 0)])
        await _until(lambda i=i: len(store.writes) == i + 1, f"batch {i} to be written")


def test_batches_are_made_while_earlier_ones_sync_and_acked_in_order() -> None:
    async def main() -> tuple[list[int], list[int]]:
        att, copy, conn = _attach()
        store = copy.store
        # Three batches written while the first one's sync is held: none waits for an earlier sync.
        await _submit_one_batch_each(att, store, 3)
        store.release(2)
        store.release(1)
        await asyncio.sleep(0.05)
        before = conn.acked()  # later syncs returned first: nothing may be acknowledged yet
        store.release(0)
        await _until(lambda: conn.acked()[-1:] == [30], "the ACKs")
        after = conn.acked()
        att.closing = True
        att.wake.set()
        async with asyncio.timeout(5):
            await att.task
        return before, after

    before, after = asyncio.run(main())
    assert before == []
    assert after == sorted(after) and after[-1] == 30


def test_at_most_in_flight_batches_are_written_and_not_acknowledged() -> None:
    async def main() -> tuple[int, int, list[int]]:
        att, copy, conn = _attach()
        store = copy.store
        await _submit_one_batch_each(att, store, committer.IN_FLIGHT)
        att.submit([Write(SEG, committer.IN_FLIGHT * 10, b"x" * 10, 0)])
        await asyncio.sleep(0.05)
        held = len(store.writes)  # the next one waits for room
        store.release(0)
        await _until(lambda: len(store.writes) == committer.IN_FLIGHT + 1, "the next batch")
        for i in range(1, committer.IN_FLIGHT + 1):
            store.release(i)
        await _until(lambda: conn.acked()[-1:] == [(committer.IN_FLIGHT + 1) * 10], "the ACKs")
        att.closing = True
        att.wake.set()
        async with asyncio.timeout(5):
            await att.task
        return held, len(store.writes), conn.acked()

    held, written, acked = asyncio.run(main())
    assert held == committer.IN_FLIGHT
    assert written == committer.IN_FLIGHT + 1
    assert acked == sorted(acked)


def test_a_failed_sync_acknowledges_nothing_after_it_even_if_later_syncs_returned() -> None:
    async def main() -> tuple[Attachment, _Conn]:
        att, copy, conn = _attach()
        store = copy.store
        store.fail.add(1)
        await _submit_one_batch_each(att, store, 3)
        store.release(2)
        store.release(0)
        await _until(lambda: conn.acked() == [10], "the first ACK")
        store.release(1)
        async with asyncio.timeout(5):
            await att.task
        return att, conn

    att, conn = asyncio.run(main())
    assert isinstance(att.error, OSError)
    assert conn.acked() == [10]
    assert conn.closed
