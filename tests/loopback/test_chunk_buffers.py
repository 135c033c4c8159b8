"""DATA read buffers are reused only once the transport let them go: bytes on the wire stay the file's.

A peer that reads slowly keeps the sender's transport full, so most chunks wait in it (as a reference
to the read buffer) while later chunks are read: were a waiting buffer reused, the wire would carry
the later chunk's bytes twice.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import uvloop

from protocol.aio import FramedConnection
from protocol.digest import chunk_digest, segment_digest
from protocol.framing import NEED_DATA, FrameDecoder
from protocol.messages import Data, Position
from shipper.chunks import DataSender
from shipper.rewrite import TrackingReader
from shipper.source import SegmentReader, SendData

CHUNK = 256 * 1024
SIZE = 48 * CHUNK


async def ship_to_slow_peer(
    source: Path, sealed: bool = False, segments: SegmentReader | None = None
) -> tuple[list[Data], DataSender]:
    received = bytearray()
    got_all = asyncio.Event()

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Slow at first (the sender's transport fills up), then as fast as it comes.
        for i in range(20_000):
            data = await reader.read(16 * 1024 if i < 400 else 1 << 20)
            if not data:
                break
            received.extend(data)
            if i < 400:
                await asyncio.sleep(0.001)
        got_all.set()
        writer.close()

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = FramedConnection(reader, writer)
    sender = DataSender(conn, segments or SegmentReader(source.parent), "s")
    for offset in range(0, SIZE, CHUNK):
        assert await sender.send(SendData(source.name, offset, CHUNK, sealed)) is not None
        # What the send loop does: no more than two chunks wait in the transport.
        if writer.transport.get_write_buffer_size() > 2 * CHUNK:
            await conn.drain()
    await conn.drain()
    writer.close()
    async with asyncio.timeout(60):
        await got_all.wait()
    server.close()
    decoder = FrameDecoder()
    decoder.receive_data(bytes(received))
    msgs = []
    while (msg := decoder.next_message()) is not NEED_DATA:
        assert isinstance(msg, Data)
        msgs.append(msg)
    return msgs, sender


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_wire_carries_the_file_while_buffers_are_reused(tmp_path: Path, loop_factory: Callable) -> None:
    source = tmp_path / "E0000000000000001.log"
    content = os.urandom(SIZE)
    source.write_bytes(content)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        msgs, sender = runner.run(ship_to_slow_peer(source))
    assert [Position(m.segment, m.offset) for m in msgs] == [Position(source.name, o) for o in range(0, SIZE, CHUNK)]
    for m in msgs:
        assert bytes(m.payload) == content[m.offset : m.offset + CHUNK]
        assert m.digest == chunk_digest(m.segment, m.offset, content[m.offset : m.offset + CHUNK])
    # The buffers were reused, not only allocated afresh.
    assert sender.buffers.hits > 0
    assert sender.buffers.hits + sender.buffers.misses == SIZE // CHUNK


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_a_sealed_segment_is_sent_from_its_mapping(tmp_path: Path, loop_factory: Callable) -> None:
    # The slow peer keeps mapped chunks waiting in the transport: they must stay mapped until sent.
    source = tmp_path / "E0000000000000001.log"
    content = os.urandom(SIZE)
    source.write_bytes(content)
    reader = SegmentReader(tmp_path)
    reader.seek(Position(source.name, 0))
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        msgs, sender = runner.run(ship_to_slow_peer(source, sealed=True, segments=reader))
    assert len(msgs) == SIZE // CHUNK
    for m in msgs:
        assert bytes(m.payload) == content[m.offset : m.offset + CHUNK]
        assert m.digest == chunk_digest(m.segment, m.offset, content[m.offset : m.offset + CHUNK])
    # No chunk went through a read buffer, and the segment's digest covers every byte, in order.
    assert sender.buffers.hits + sender.buffers.misses == 0
    assert reader.digest() == segment_digest(content)
    reader.close()


def test_a_closed_mode_reader_reads_every_sealed_chunk(tmp_path: Path) -> None:
    # --seal closed remembers what was sent from what read_into() read: no chunk may bypass it.
    source = tmp_path / "E0000000000000001.log"
    content = os.urandom(SIZE)
    source.write_bytes(content)
    reader = TrackingReader(tmp_path)
    reader.seek(Position(source.name, 0))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        msgs, sender = runner.run(ship_to_slow_peer(source, sealed=True, segments=reader))
    assert [bytes(m.payload) for m in msgs] == [content[o : o + CHUNK] for o in range(0, SIZE, CHUNK)]
    assert sender.buffers.hits + sender.buffers.misses == SIZE // CHUNK
    assert reader.sent.end == SIZE
    reader.close()
