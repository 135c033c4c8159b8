"""The per-stream committer: group commit, acks after fsync, and a detach that always finishes."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from protocol.digest import chunk_digest
from protocol.messages import Ack, Position
from receiver.committer import Attachment
from receiver.copy import StreamCopy
from receiver.ingest import Ingest
from receiver.manifest import Installed
from receiver.ops import Op, Write
from receiver.store import PendingSync, SegmentStore


class _Conn:
    """Just what an Attachment uses of a connection: it records what would go on the wire."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.closing = False

    def send(self, msg: Any) -> None:
        self.sent.append(msg)


class _GatedStore(SegmentStore):
    """A real store whose writes wait for the test to open a gate, so a batch is 'in hand'."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches: list[list[Op]] = []

    def write(self, ops: list[Op]) -> tuple[PendingSync, list[Installed]]:
        self.entered.set()
        assert self.gate.wait(10)
        self.batches.append(list(ops))
        return super().write(ops)


def _write(offset: int, payload: bytes) -> Write:
    return Write("E0000000001.log", offset, payload, chunk_digest("E0000000001.log", offset, payload))


async def test_detach_while_a_batch_is_in_hand_writes_the_rest_and_returns(tmp_path: Path) -> None:
    store = _GatedStore(tmp_path / "s")
    conn = _Conn()
    att = Attachment(StreamCopy("s", store), conn, Ingest("", None, 0), Position("", 0), True, 1 << 20)  # type: ignore[arg-type]
    att.submit([_write(0, b"a" * 100)])
    assert await asyncio.to_thread(store.entered.wait, 10)
    # More arrives while the first batch is being written, then the connection goes away.
    att.submit([_write(100, b"b" * 50), _write(150, b"c" * 25)])
    detaching = asyncio.create_task(att.detach())
    await asyncio.sleep(0.05)
    store.gate.set()
    async with asyncio.timeout(10):
        await detaching
    # Group commit: everything that piled up went in one second batch; all of it is on disk.
    assert [len(b) for b in store.batches] == [1, 2]
    assert store.partial_path("E0000000001.log").read_bytes() == b"a" * 100 + b"b" * 50 + b"c" * 25
    acks = [m for m in conn.sent if isinstance(m, Ack)]
    assert [a.position for a in acks] == [Position("E0000000001.log", 100), Position("E0000000001.log", 175)]
