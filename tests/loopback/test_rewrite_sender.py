"""The shipper's side of rewrites (issue 20) against a real receiver in process, ``--seal closed``: what
it sent of the active segment is remembered across a reconnect, so a receiver restarted between the
shipping and the writer's rewrite still gets the rewrite, not a second copy; and a segment that a
writer rewrote whole (more than the shipper holds for rewrites) is fetched again, identical."""

from __future__ import annotations

import os
from pathlib import Path

from protocol.messages import Position
from shipper.rewrite import BLOCK, MAX_REWRITE
from shipper.settings import SealPolicy
from tests.loopback.test_sender_loopback import FAST, STREAM, acked, receiver, segment, shipping, stream_config, until

FLAG = 21


def start_segment(source: Path, i: int, size: int) -> tuple[int, bytearray]:
    """Create segment ``i`` with ``size`` bytes, its flag byte set; return its open descriptor and bytes."""
    content = bytearray(os.urandom(size))
    content[FLAG] = 1
    fd = os.open(source / segment(i), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, content)
    return fd, content


def rotate(fd: int, content: bytearray) -> None:
    """Clear the flag of the segment before the one just opened, then close it (as MariaDB does)."""
    os.pwrite(fd, b"\x00", FLAG)
    content[FLAG] = 0
    os.close(fd)


async def test_a_receiver_restarted_before_the_rotation_still_gets_the_rewrite(tmp_path: Path) -> None:
    source, data_dir = tmp_path / "src", tmp_path / "copy"
    source.mkdir()
    size = 300_000
    fd, content = start_segment(source, 1, size)
    server = receiver(data_dir)
    _, port = await server.start("127.0.0.1", 0)
    policy = SealPolicy("closed", settle=0.3)
    async with shipping(stream_config(source, port, policy), FAST) as sender:
        await until(lambda: acked(sender) == (Position(segment(1), size), False), "the growing segment's bytes")
        await server.stop()
        await until(lambda: sender.stats.connects == 1 and sender.state.value != "healthy", "the cut")
        server = receiver(data_dir)
        await server.start("127.0.0.1", port)
        try:
            await until(lambda: sender.stats.connects == 2, "the reconnect")
            fd2, _ = start_segment(source, 2, 1000)
            rotate(fd, content)
            await until(lambda: sender.stats.last_copied == segment(1), "the SEAL of the rewritten segment")
            os.close(fd2)
        finally:
            await server.stop()
    copy = data_dir / STREAM
    assert (copy / "log" / segment(1)).read_bytes() == content
    assert list((copy / "quarantine").iterdir()) == []
    reader = sender._reader
    assert getattr(reader, "rewritten", None) == BLOCK  # one block, after the reconnect
    assert sender.stats.bytes_sent == size + BLOCK + 1000


async def test_a_segment_rewritten_whole_is_fetched_again_identical(tmp_path: Path) -> None:
    source, data_dir = tmp_path / "src", tmp_path / "copy"
    source.mkdir()
    size = MAX_REWRITE + BLOCK
    fd, content = start_segment(source, 1, size)
    server = receiver(data_dir)
    _, port = await server.start("127.0.0.1", 0)
    try:
        async with shipping(stream_config(source, port, SealPolicy("closed", settle=0.3)), FAST) as sender:
            await until(lambda: acked(sender) == (Position(segment(1), size), False), "the growing segment's bytes")
            content[:] = os.urandom(size)
            os.pwrite(fd, content, 0)
            fd2, _ = start_segment(source, 2, 100)
            os.close(fd)
            await until(lambda: sender.stats.last_copied == segment(1), "the SEAL", timeout=60)
            os.close(fd2)
    finally:
        await server.stop()
    copy = data_dir / STREAM
    assert (copy / "log" / segment(1)).read_bytes() == content
    # No rewrite: the receiver found its copy different at the SEAL and fetched it again.
    assert getattr(sender._reader, "rewritten", None) == 0
    assert len([p for p in (copy / "quarantine").iterdir() if not p.name.endswith(".reason")]) == 1
