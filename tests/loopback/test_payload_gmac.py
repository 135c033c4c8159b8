"""The GMAC payload MAC as the daemon negotiates it: the shipper's own handshake (shipper/handshake.py,
as it runs with ``--payload-mac``) against a real receiver in process agrees on GMAC, and the copy is
the bytes sent. Both payload MACs end to end, damage included: tests/loopback/test_payload_mac.py."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from protocol.aio import FramedConnection
from protocol.messages import Ack, Error, StreamResume
from shipper.handshake import handshake
from shipper.settings import SenderConfig
from tests.loopback.receiver_side import SECRETS, Shipper, running_receiver

SEG = "E0000000001.log"
CHUNK = 256 * 1024


async def test_the_shippers_handshake_negotiates_gmac_and_the_copy_is_the_bytes_sent(tmp_path: Path) -> None:
    async with running_receiver(tmp_path / "data") as (_srv, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conn = FramedConnection(reader, writer)
        hs, result = await handshake(conn, "loopback", "s", SECRETS["s"], 0, SenderConfig(payload_mac=True))
        assert isinstance(result, StreamResume), result
        assert hs.payload_mac and hs.payload_gmac
        assert conn.sealer is not None and conn.sealer.gmac
        shipper = Shipper(conn, {"s": result})
        content = os.urandom(2 * CHUNK + 100)
        for offset in range(0, len(content), CHUNK):
            shipper.data("s", SEG, offset, content[offset : offset + CHUNK])
        shipper.seal("s", SEG, content)
        got = await shipper.recv_until(lambda m: isinstance(m, Ack) and m.sealed)
        await shipper.close()
    assert (tmp_path / "data" / "s" / "log" / SEG).read_bytes() == content
    assert not [m for m in got if isinstance(m, Error)]
