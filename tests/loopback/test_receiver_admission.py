"""Admission under --max-unauthenticated, in process: over the cap a connection is closed at once,
while an attached shipper keeps being served and the peers in their handshake keep their slots."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from protocol.errors import ErrorCode
from protocol.framing import NEED_DATA, FrameDecoder
from protocol.messages import Ack, Error, Heartbeat, Position
from receiver.server import ReceiverServer, ServerConfig
from shipper.sender import TargetState
from shipper.settings import SealPolicy, SenderConfig
from tests.loopback.receiver_side import Shipper, running_receiver, wait_for
from tests.loopback.test_sender_loopback import (
    SECRET,
    STREAM,
    assert_copy,
    segment,
    shipping,
    stream_config,
    until,
    write_segment,
)

SEG = "E0000000001.log"


async def _told_busy_and_closed(reader: asyncio.StreamReader) -> Error:
    """Read what the receiver sent until it closed: exactly one untagged ERROR, nothing after it."""
    data = await reader.read()
    decoder = FrameDecoder()
    decoder.receive_data(data)
    msg = decoder.next_message()
    assert isinstance(msg, Error), msg
    assert decoder.next_message() is NEED_DATA and not decoder.buffered
    return msg


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
            told = await _told_busy_and_closed(r)
        assert time.monotonic() - began < 5
        # Told why in place of a CHALLENGE, so a shipper backs off instead of probing the port.
        assert told.code == ErrorCode.BUSY and "2 connections in their handshake already" in told.text, told
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


async def test_a_shipper_told_busy_backs_off_shows_why_and_gets_in_once_a_slot_frees(tmp_path: Path) -> None:
    source, data_dir = tmp_path / "src", tmp_path / "copy"
    source.mkdir()
    expect = {segment(1): write_segment(source, 1, 200_000)}
    # One slot, and a long handshake timeout: it stays taken until the silent peer goes.
    secret_for = {STREAM: SECRET}.get
    server = ReceiverServer(ServerConfig(data_dir, secret_for, max_unauthenticated=1, handshake_timeout=30.0))
    _, port = await server.start("127.0.0.1", 0)
    seen: set[tuple[TargetState, str | None]] = set()
    try:
        silent = await asyncio.open_connection("127.0.0.1", port)
        await wait_for(lambda: server.unauthenticated == 1)
        policy = SealPolicy("immediate")
        async with shipping(stream_config(source, port, policy), SenderConfig()) as sender:

            def busy() -> bool:
                seen.add((sender.state, sender.stats.last_error))
                return sender.state is TargetState.RETRYING and " x2, next try in " in (sender.stats.last_error or "")

            await until(busy, "two busy answers", timeout=10)
            # The silent peer and the sender's two attempts, nothing else: it did not probe the port (a
            # TLS ClientHello, an HTTP request), as a bare reset made it do, each one more connection.
            assert (server.admission.connections_total, server.refused_busy) == (3, 2)
            silent[1].close()
            await until(lambda: sender.stats.acked == Position(segment(1), 200_000), "the copy once a slot freed")
    finally:
        await server.stop()
    assert_copy(data_dir, expect)
    retrying = {text for state, text in seen if state is TargetState.RETRYING and text}
    assert retrying and all(
        t.startswith("the target is busy: 1 connections in their handshake already") for t in retrying
    )
    assert TargetState.FAILED not in {state for state, _ in seen}
