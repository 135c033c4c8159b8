"""Admission under --max-unauthenticated, in process: over the cap a connection is closed at once,
while an attached shipper keeps being served and the peers in their handshake keep their slots."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from protocol.messages import Ack, Heartbeat, Position
from tests.loopback.receiver_side import Shipper, running_receiver, wait_for

SEG = "E0000000001.log"


async def _closed_without_a_byte(reader: asyncio.StreamReader) -> bool:
    try:
        return await reader.read(100) == b""
    except ConnectionResetError:
        return True


async def test_over_the_cap_is_closed_at_once_and_the_others_are_served(tmp_path: Path) -> None:
    # A long handshake timeout: whatever closes at once below was refused, not timed out.
    async with running_receiver(tmp_path / "data", max_unauthenticated=2, handshake_timeout=30.0) as (srv, port):
        attached = await Shipper.connect(port)
        assert srv.unauthenticated == 0  # its slot went back once it proved the secret
        silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await wait_for(lambda: srv.unauthenticated == 2)

        began = time.monotonic()
        r, w = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(5):
            assert await _closed_without_a_byte(r)
        assert time.monotonic() - began < 5
        w.close()
        assert srv.refused_busy == 1
        assert srv.unauthenticated == 2  # the refused one took no slot from the two in their handshake

        # The attached shipper is served meanwhile: its data is acknowledged, its heartbeat answered.
        attached.data("s", SEG, 0, b"x" * 100)
        got = await attached.recv_until(lambda m: isinstance(m, Ack))
        assert got[-1] == Ack("s", Position(SEG, 100), False)
        attached.conn.send(Heartbeat())
        assert isinstance((await attached.recv_until(lambda m: isinstance(m, Heartbeat)))[-1], Heartbeat)

        # The two in their handshake still hold their slots and got their CHALLENGE.
        for sr, _ in silent:
            async with asyncio.timeout(5):
                assert len(await sr.read(4)) == 4
        # Once they go, a new shipper gets in.
        for _, sw in silent:
            sw.close()
        await wait_for(lambda: srv.unauthenticated == 0)
        other = await Shipper.connect(port, ("o",))
        assert other.resumes["o"].position == Position("", 0)
        await other.close()
        await attached.close()
        assert srv.status()["connections"]["refused_busy"] == 1
