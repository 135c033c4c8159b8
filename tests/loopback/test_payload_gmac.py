"""The GMAC payload MAC end to end: the shipper's own handshake (shipper/handshake.py, as the daemon
runs it with ``--payload-mac``) against a real receiver in process negotiates GMAC, and the copy is the
bytes sent; a damaged payload is refused as with HMAC-SHA256."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from protocol.aio import ConnectionClosed, FramedConnection
from protocol.digest import chunk_digest
from protocol.framing import encode_packed
from protocol.messages import Ack, Data, Error, Message, StreamResume
from shipper.handshake import handshake
from shipper.settings import SenderConfig
from tests.loopback.receiver_side import SECRETS, Shipper, running_receiver

SEG = "E0000000001.log"
CHUNK = 256 * 1024


async def connect(port: int) -> Shipper:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = FramedConnection(reader, writer)
    hs, result = await handshake(conn, "loopback", "s", SECRETS["s"], 0, SenderConfig(payload_mac=True))
    assert isinstance(result, StreamResume), result
    assert hs.payload_mac and hs.payload_gmac
    assert conn.sealer is not None and conn.sealer.gmac
    return Shipper(conn, {"s": result})


async def test_gmac_is_negotiated_and_the_copy_is_the_bytes_sent(tmp_path: Path) -> None:
    async with running_receiver(tmp_path / "data") as (_srv, port):
        shipper = await connect(port)
        content = os.urandom(12 * CHUNK + 100)
        sizes = [CHUNK] * 12 + [100]  # payloads received in place (pool buffers) and a small one
        offset = 0
        for size in sizes:
            shipper.data("s", SEG, offset, content[offset : offset + size])
            offset += size
        shipper.seal("s", SEG, content)
        got = await shipper.recv_until(lambda m: isinstance(m, Ack) and m.sealed)
        await shipper.close()
    assert (tmp_path / "data" / "s" / "log" / SEG).read_bytes() == content
    assert not [m for m in got if isinstance(m, Error)]


async def test_a_damaged_payload_under_gmac_ends_the_connection(tmp_path: Path) -> None:
    async with running_receiver(tmp_path / "data") as (_srv, port):
        shipper = await connect(port)
        conn = shipper.conn
        content = os.urandom(3 * CHUNK)
        shipper.data("s", SEG, 0, content[:CHUNK])
        await shipper.recv_until(lambda m: isinstance(m, Ack) and m.position.offset == CHUNK)
        payload = content[CHUNK : 2 * CHUNK]
        head, wire = encode_packed(
            Data("s", SEG, CHUNK, chunk_digest(SEG, CHUNK, payload), payload), "", None, conn.sealer
        )
        damaged = bytearray(wire)
        damaged[7] ^= 0x80
        conn.writer.write(head + bytes(damaged))
        shipper.data("s", SEG, 2 * CHUNK, content[2 * CHUNK :])
        got: list[Message] = []
        try:
            got = await shipper.recv_until(lambda m: isinstance(m, Error))
        except ConnectionClosed:
            pass
        await shipper.close()
    assert all(m.position.offset <= CHUNK for m in got if isinstance(m, Ack)), got
    errors = [m for m in got if isinstance(m, Error)]
    assert not errors or errors[0].code == "bad-mac", errors
    partials = list((tmp_path / "data").rglob(f"{SEG}.partial"))
    assert [p.read_bytes() for p in partials] == [content[:CHUNK]]
