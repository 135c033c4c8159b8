"""EIO on the receiver's partial write or fsync is transient (issue 13): ERROR storage-retry, the tail not
acknowledged is cut (an fsync that failed is never trusted again), nothing acknowledged is lost, the
shipper backs off and shows Retrying, and the copy converges once the storage works; never Failed.

The EIO is injected at the store's seam (``SegmentStore.sync`` / ``PartialWriter._pwritev``): this machine
has no device-mapper (``dmsetup`` cannot reach the kernel driver) and no libfuse, so no device that fails
and then heals can be made. tests/faults/test_storage_eio.py takes a real kernel EIO (an ext4 image
shut down under the receiver) for the part a dead file system can show.
"""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest

from protocol.aio import FramedConnection
from protocol.errors import ErrorCode
from protocol.messages import Ack, Error, Position
from protocol.session import ShipperHandshake
from receiver import partial_writer
from receiver.partial_writer import PendingSync
from receiver.store import SegmentStore
from shipper.sender import TargetState
from shipper.settings import SealPolicy, SenderConfig
from tests.loopback.receiver_side import SECRETS, TIMEOUT, Shipper, running_receiver
from tests.loopback.test_sender_loopback import (
    assert_copy,
    receiver,
    segment,
    shipping,
    stream_config,
    until,
    write_segment,
)

SEG = "E0000000001.log"
CHUNK = 64 * 1024


class Faults:
    """How many of the next syncs (or writes) of the store fail with EIO, after the real call wrote."""

    def __init__(self) -> None:
        self.syncs = 0
        self.writes = 0
        self.raised = 0
        self.errno = errno.EIO


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> Faults:
    f = Faults()
    real_sync = SegmentStore.sync
    real_pwritev = partial_writer.PartialWriter._pwritev

    def sync(self: SegmentStore, pending: PendingSync) -> None:
        if f.syncs > 0:
            # As the kernel does after a failed writeback: the bytes stay readable in the page cache,
            # the fsync says EIO (and a second one would say success: fsyncgate).
            f.syncs -= 1
            f.raised += 1
            pending.close()
            raise OSError(errno.EIO, "Input/output error")
        real_sync(self, pending)

    def pwritev(self: partial_writer.PartialWriter, fd: int, run: list[bytes], offset: int, end: int) -> None:
        real_pwritev(self, fd, run, offset, end)
        if f.writes > 0:
            f.writes -= 1
            f.raised += 1
            raise OSError(f.errno, os.strerror(f.errno))

    monkeypatch.setattr(SegmentStore, "sync", sync)
    monkeypatch.setattr(partial_writer.PartialWriter, "_pwritev", pwritev)
    return f


@pytest.mark.parametrize("where", ["fsync", "write", "enospc"])
async def test_eio_cuts_the_unacknowledged_tail_and_asks_for_a_resend(
    tmp_path: Path, faults: Faults, where: str
) -> None:
    data = os.urandom(CHUNK * 8)
    data_dir = tmp_path / "data"
    async with running_receiver(data_dir) as (srv, port):
        shipper = await Shipper.connect(port)
        for i in range(4):
            shipper.data("s", SEG, i * CHUNK, data[i * CHUNK : (i + 1) * CHUNK])
        acked = 0
        while acked < 4 * CHUNK:
            msg = (await shipper.recv_until(lambda m: isinstance(m, Ack)))[-1]
            assert isinstance(msg, Ack)
            acked = msg.position.offset
        # The storage fails: what follows is written (in the page cache) but never durable.
        if where == "fsync":
            faults.syncs = 1
        else:
            # ENOSPC part-way: written bytes never synced must not become the resume position either.
            faults.errno = errno.ENOSPC if where == "enospc" else errno.EIO
            faults.writes = 1
        for i in range(4, 8):
            shipper.data("s", SEG, i * CHUNK, data[i * CHUNK : (i + 1) * CHUNK])
        got = await shipper.recv_until(lambda m: isinstance(m, Error))
        error = got[-1]
        assert isinstance(error, Error), got
        if where == "enospc":
            assert error.code == ErrorCode.NO_SPACE, error
        else:
            assert error.code == ErrorCode.STORAGE_RETRY, error
            assert error.text.startswith("(EIO) on stream s: Input/output error; dropped "), error.text
        assert not [m for m in got if isinstance(m, Ack) and m.position.offset > acked], got
        await shipper.close()
        # Cut back to what was acknowledged, although the file held more: an fsync that failed is not
        # retried on the same bytes (they may be in the page cache only).
        partial = data_dir / "s" / "incoming" / f"{SEG}.partial"
        assert partial.stat().st_size == acked == 4 * CHUNK
        assert srv.copies["s"].state.failed is None
        if where == "enospc":
            # (The guard now counts the disk full until it has clearly more room: no reconnect here.)
            assert srv.copies["s"].store.recover().offset == acked
            return
        assert srv.space.storage.problem("s") is not None
        # The next connection resumes at the acknowledged offset, and the resend makes it whole.
        again = await Shipper.connect(port)
        assert again.resumes["s"].position == Position(SEG, acked)
        for i in range(4, 8):
            again.data("s", SEG, i * CHUNK, data[i * CHUNK : (i + 1) * CHUNK])
        again.seal("s", SEG, data)
        await again.recv_until(lambda m: isinstance(m, Ack) and m.sealed)
        await again.close()
        assert (data_dir / "s" / "log" / SEG).read_bytes() == data
        assert srv.space.storage.problem("s") is None  # the episode ended with the first ACK
        assert faults.raised == 1


async def test_eio_reading_the_copy_back_is_a_storage_retry_at_the_handshake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = SegmentStore.recover
    fail = [1]

    def recover(self: SegmentStore) -> object:
        if fail[0]:
            fail[0] -= 1
            raise OSError(errno.EIO, "Input/output error")
        return real(self)

    monkeypatch.setattr(SegmentStore, "recover", recover)
    async with running_receiver(tmp_path / "data") as (srv, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conn = FramedConnection(reader, writer)
        hs = ShipperHandshake("loopback", os.urandom(32), {"s": SECRETS["s"]}, {"s": 0})
        conn.send(hs.receive_challenge(await conn.recv(TIMEOUT)))
        answer = await conn.recv(TIMEOUT)
        await conn.close()
        assert isinstance(answer, Error) and answer.code == ErrorCode.STORAGE_RETRY, answer
        assert answer.text.startswith("(EIO) on stream s: Input/output error reading the copy back"), answer.text
        assert srv.copies["s"].state.failed is None
        shipper = await Shipper.connect(port)  # the storage works again
        await shipper.close()


async def test_the_shipper_backs_off_shows_retrying_and_converges(tmp_path: Path, faults: Faults) -> None:
    source, data_dir = tmp_path / "src", tmp_path / "copy"
    source.mkdir()
    expect = {segment(1): write_segment(source, 1, 300_000)}
    server = receiver(data_dir)
    _, port = await server.start("127.0.0.1", 0)
    seen: set[tuple[TargetState, str | None]] = set()
    try:
        policy = SealPolicy("immediate")
        async with shipping(stream_config(source, port, policy), SenderConfig(backoff_max=0.2)) as sender:
            await until(lambda: sender.stats.acked == Position(segment(1), 300_000), "the first segment")
            faults.syncs = 2  # every sync of this connection fails (two may be in flight at once)
            connects = sender.stats.connects
            for i in range(2, 5):
                expect[segment(i)] = write_segment(source, i, 200_000)

            def watched() -> bool:
                seen.add((sender.state, sender.stats.last_error))
                return sender.stats.acked == (Position(segment(5), 100_000)) and sender.stats.acked_sealed

            await until(lambda: sender.state is TargetState.RETRYING, "the first storage-retry")
            faults.syncs = 2  # and those of the next attempt too, which has a new segment to write
            expect[segment(5)] = write_segment(source, 5, 100_000)
            await until(watched, "the copy to converge after the storage healed", timeout=30)
            reconnects = sender.stats.connects - connects
    finally:
        await server.stop()
    assert_copy(data_dir, expect)
    retrying = [text for state, text in seen if state is TargetState.RETRYING and text]
    assert retrying and all(t.startswith("the target's storage failed (EIO) on stream db1") for t in retrying), seen
    assert any(" x2, next try in " in t for t in retrying), retrying
    assert TargetState.FAILED not in {state for state, _ in seen}
    # Backed off (1 s, then 2 s): one connection per failure and the one that worked, no hot loop.
    assert reconnects <= 3, reconnects
    assert faults.raised >= 2
