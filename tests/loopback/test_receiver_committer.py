"""The committer in process: an ACK never runs ahead of fsync, and what was acknowledged is on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from protocol.messages import Ack, Position
from receiver.store import PendingSync, SegmentStore
from tests.loopback.receiver_side import Shipper, running_receiver

SEG = "E0000000001.log"
CHUNK = 64 * 1024
CHUNKS = 64


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record, after each sync of the store returned, how many bytes of the partial it made durable at least."""
    sizes: list[int] = []
    real = SegmentStore.sync

    def sync(self: SegmentStore, pending: PendingSync) -> None:
        # What was written before the fdatasync began is durable once it returned.
        try:
            before = os.stat(self.partial_path(SEG)).st_size
        except FileNotFoundError:
            before = None
        real(self, pending)
        if before is not None:
            sizes.append(before)

    monkeypatch.setattr(SegmentStore, "sync", sync)
    return sizes


async def test_acks_follow_fsync_and_match_the_bytes_on_disk(tmp_path: Path, synced: list[int]) -> None:
    data = os.urandom(CHUNK * CHUNKS)
    async with running_receiver(tmp_path / "data") as (_srv, port):
        shipper = await Shipper.connect(port)
        # Pipelined, as a shipper's window does: the committer groups what piles up into batches.
        for i in range(CHUNKS):
            shipper.data("s", SEG, i * CHUNK, data[i * CHUNK : (i + 1) * CHUNK])
        acks: list[Ack] = []
        while not acks or acks[-1].position.offset < len(data):
            msg = (await shipper.recv_until(lambda m: isinstance(m, Ack)))[-1]
            assert isinstance(msg, Ack)
            # Sent only once a sync covering it returned (the sync ran in a worker thread before).
            assert synced and msg.position.offset <= max(synced), (msg, synced)
            acks.append(msg)
        offsets = [a.position.offset for a in acks]
        assert offsets == sorted(set(offsets)), "ACKs move forward only"
        assert all(o % CHUNK == 0 for o in offsets), "an ACK covers whole frames"
        assert len(acks) < CHUNKS, "group commit: fewer ACKs (and syncs) than frames"
        partial = tmp_path / "data" / "s" / "incoming" / f"{SEG}.partial"
        assert acks[-1] == Ack("s", Position(SEG, len(data)), False)
        assert partial.read_bytes() == data

        shipper.seal("s", SEG, data)
        sealed = (await shipper.recv_until(lambda m: isinstance(m, Ack) and m.sealed))[-1]
        assert isinstance(sealed, Ack)
        # (Its replay position may already have moved: replay starts at the install.)
        assert (sealed.position, sealed.sealed) == (Position(SEG, len(data)), True)
        assert (tmp_path / "data" / "s" / "log" / SEG).read_bytes() == data
        await shipper.close()
