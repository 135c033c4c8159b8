"""The receiver's committer: detaching while a batch is being written still writes what was queued
and then ends (it once waited forever for a wake-up that had already been used, holding the stream's
lock, so that every reconnection timed out)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from protocol.messages import Position
from receiver.committer import Attachment
from receiver.ops import Op, Write


class _SlowStore:
    def __init__(self) -> None:
        self.gate = threading.Event()
        self.applied: list[list[Op]] = []
        self.closed = False

    def write(self, ops: list[Op]) -> tuple[None, list[Any]]:
        self.gate.wait(10)
        self.applied.append(ops)
        return None, []

    def sync(self, pending: None) -> None:
        pass

    def apply(self, ops: list[Op]) -> list[Any]:
        return self.write(ops)[1]

    def close(self) -> None:
        self.closed = True


class _Copy:
    name = "db1"
    replayed_position = Position("", 0)

    def __init__(self) -> None:
        self.store = _SlowStore()

    def on_installed(self, installed: list[Any]) -> None:
        pass


class _Conn:
    closing = False

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, msg: Any) -> int:
        self.sent.append(msg)
        return 0


def _write(offset: int) -> Write:
    return Write("E0000000001.log", offset, b"x" * 10, 0)


async def _detach_during_a_batch() -> tuple[_Copy, _Conn]:
    copy, conn = _Copy(), _Conn()
    att = Attachment(copy, conn, None, Position("", 0), True, 1 << 20)  # type: ignore[arg-type]
    att.submit([_write(0)])
    await asyncio.sleep(0.05)  # the first batch is now being applied (held at the gate)
    att.submit([_write(10)])  # queued behind it
    detaching = asyncio.create_task(att.detach())
    await asyncio.sleep(0.05)
    copy.store.gate.set()
    async with asyncio.timeout(5):
        await detaching
    return copy, conn


def test_detach_writes_the_queued_batch_and_ends() -> None:
    copy, conn = asyncio.run(_detach_during_a_batch())
    assert [op.offset for batch in copy.store.applied for op in batch] == [0, 10]  # type: ignore[union-attr]
    assert copy.store.closed
    assert conn.sent[-1].position == Position("E0000000001.log", 20)


class _BrokenStore(_SlowStore):
    def write(self, ops: list[Op]) -> tuple[None, list[Any]]:
        raise RuntimeError("a bug in the store")


class _ClosableConn(_Conn):
    def __init__(self) -> None:
        super().__init__()
        self.writer = self
        self.closed = False

    def close(self) -> None:
        self.closed = True


async def _commit_with_a_broken_store() -> tuple[Attachment, _ClosableConn]:
    copy, conn = _Copy(), _ClosableConn()
    copy.store = _BrokenStore()
    att = Attachment(copy, conn, None, Position("", 0), True, 1 << 20)  # type: ignore[arg-type]
    att.submit([_write(0)])
    async with asyncio.timeout(5):
        await att.task
    return att, conn


def test_an_unexpected_error_in_the_committer_closes_the_connection_and_acks_nothing() -> None:
    # Not only OSError: any failure must end the connection (the shipper reconnects and the copy is
    # recovered from disk) rather than leave the stream attached with a dead committer.
    att, conn = asyncio.run(_commit_with_a_broken_store())
    assert isinstance(att.error, RuntimeError)
    assert conn.closed
    assert conn.sent == []
