"""The payload MAC end to end: a real receiver in process, DATA payloads with ``pmac``, HMAC-SHA256 or
GMAC (both ends listing ``pmac-gmac``). What is acknowledged is the bytes sent; a payload that fails its
MAC ends the connection and nothing from it on is written or acknowledged, though frames after it may
have been decoded already."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from protocol.aio import ConnectionClosed
from protocol.digest import chunk_digest
from protocol.framing import DIRECT_PAYLOAD, encode_packed
from protocol.messages import Ack, Data, Error, Message
from tests.loopback.receiver_side import Shipper, running_receiver

SEG = "E0000000001.log"
CHUNK = 256 * 1024
MACS = pytest.mark.parametrize("features", [("pmac",), ("pmac", "pmac-gmac")], ids=["hmac", "gmac"])
"""Each test under both payload MACs: HMAC-SHA256, and GMAC where both ends list it."""


async def connect(port: int, features: tuple[str, ...]) -> Shipper:
    shipper = await Shipper.connect(port, features=features)
    sealer = shipper.conn.sealer
    assert sealer is not None and sealer.payload_mac and sealer.gmac == ("pmac-gmac" in features)
    return shipper


@MACS
async def test_payload_macs_verify_and_the_copy_is_the_bytes_sent(tmp_path: Path, features: tuple[str, ...]) -> None:
    async with running_receiver(tmp_path / "data") as (_srv, port):
        shipper = await connect(port, features)
        content = os.urandom(12 * CHUNK + 100)
        # Payloads received in place (pool buffers) and small ones, in one stream, in order.
        sizes = [CHUNK] * 12 + [100]
        offset = 0
        for size in sizes:
            shipper.data("s", SEG, offset, content[offset : offset + size])
            offset += size
        shipper.seal("s", SEG, content)
        got = await shipper.recv_until(lambda m: isinstance(m, Ack) and m.sealed)
        await shipper.close()
    assert (tmp_path / "data" / "s" / "log" / SEG).read_bytes() == content
    assert not [m for m in got if isinstance(m, Error)]


@MACS
async def test_a_payload_failing_its_mac_ends_the_connection_and_nothing_after_it_is_taken(
    tmp_path: Path, features: tuple[str, ...]
) -> None:
    async with running_receiver(tmp_path / "data") as (_srv, port):
        shipper = await connect(port, features)
        conn = shipper.conn
        content = os.urandom(8 * CHUNK)
        good = 3 * CHUNK
        for offset in range(0, good, CHUNK):
            shipper.data("s", SEG, offset, content[offset : offset + CHUNK])
        await shipper.recv_until(lambda m: isinstance(m, Ack) and m.position.offset == good)
        # The fourth chunk is damaged after its MAC was computed (its xxh still fits: only the MAC
        # can tell), and good chunks follow it on the same connection.
        payload = content[good : good + CHUNK]
        head, wire_payload = encode_packed(
            Data("s", SEG, good, chunk_digest(SEG, good, payload), payload), "", None, conn.sealer
        )
        assert len(wire_payload) >= DIRECT_PAYLOAD
        damaged = bytearray(wire_payload)
        damaged[CHUNK // 2] ^= 0x01
        conn.writer.write(head + bytes(damaged))
        for offset in range(good + CHUNK, len(content), CHUNK):
            shipper.data("s", SEG, offset, content[offset : offset + CHUNK])
        got: list[Message] = []
        try:
            got = await shipper.recv_until(lambda m: isinstance(m, Error))
        except ConnectionClosed:
            pass
        await shipper.close()
    assert all(m.position.offset <= good for m in got if isinstance(m, Ack)), got
    errors = [m for m in got if isinstance(m, Error)]
    assert not errors or errors[0].code == "bad-mac", errors
    # Nothing from the damaged chunk on was written, though later frames may have been decoded already.
    partials = list((tmp_path / "data").rglob(f"{SEG}.partial"))
    assert [p.read_bytes() for p in partials] == [content[:good]]
