"""Hostile input after a genuine handshake: every bad field gets ERROR and a closed connection.

A raw client proves stream ``s``'s secret, then sends one crafted frame. For each case the receiver
must answer ERROR (with the expected code) and close; another shipper attached to stream ``o`` keeps
being served throughout; and not one stored byte changes (the data directory is compared byte for
byte before and after).
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from protocol.digest import chunk_digest
from protocol.framing import NEED_DATA, FrameDecoder, encode
from protocol.messages import Ack, Challenge, Error, Heartbeat, Position
from receiver.server import ReceiverServer, ServerConfig
from tests.helpers.frames import data_header, raw_frame
from tests.helpers.rawclient import RawClient, snapshot

SECRET_S = b"s" * 32
SECRET_O = b"o" * 32
S1, S2 = "E0000000001.log", "E0000000002.log"
MAX_PAYLOAD = 64 * 1024
SEALED = os.urandom(1000)
PARTIAL = os.urandom(500)


def seal_header(segment: str, size: int, **override: Any) -> dict[str, Any]:
    header: dict[str, Any] = {"t": "SEAL", "stream": "s", "seg": segment, "size": size, "xxh": b"\0" * 16}
    header.update(override)
    return header


P = b"payload!"
# (case, frame bytes, the ERROR codes that are right for it)
CASES: list[tuple[str, bytes, set[str]]] = [
    ("traversal ../", raw_frame(data_header("s", "../../etc/passwd", 500, P), P), {"bad-name"}),
    ("absolute path", raw_frame(data_header("s", "/etc/passwd", 500, P), P), {"bad-name"}),
    ("sub directory", raw_frame(data_header("s", "log/E0000000003.log", 500, P), P), {"bad-name"}),
    ("dot-dot", raw_frame(data_header("s", "..", 0, P), P), {"bad-name"}),
    ("hidden name", raw_frame(data_header("s", ".E0000000003.log", 0, P), P), {"bad-name"}),
    ("our own .partial", raw_frame(data_header("s", "E0000000003.log.partial", 0, P), P), {"bad-name"}),
    ("NUL in name", raw_frame(data_header("s", "E00000\x0000003.log", 0, P), P), {"bad-name"}),
    ("overlong name", raw_frame(data_header("s", "E" * 300, 0, P), P), {"bad-name"}),
    ("stream traversal", raw_frame(data_header("../s", S2, 500, P), P), {"bad-name"}),
    ("stream not proven", raw_frame(data_header("o", S2, 500, P), P), {"bad-stream"}),
    ("offset in the past", raw_frame(data_header("s", S2, 0, P), P), {"bad-position"}),
    ("offset one byte back", raw_frame(data_header("s", S2, 499, P), P), {"bad-position"}),
    ("offset in the future", raw_frame(data_header("s", S2, 10_000, P), P), {"bad-position"}),
    ("sealed segment again", raw_frame(data_header("s", S1, 0, P), P), {"bad-position"}),
    ("next segment while open", raw_frame(data_header("s", "E0000000003.log", 0, P), P), {"bad-position"}),
    ("SEAL too small", raw_frame(seal_header(S2, 499)), {"bad-size"}),
    ("SEAL too large", raw_frame(seal_header(S2, 501)), {"bad-size"}),
    ("SEAL of the sealed one", raw_frame(seal_header(S1, 1000)), {"bad-position"}),
    ("SEAL digest too short", raw_frame(seal_header(S2, 500, xxh=b"\0" * 15)), {"bad-frame"}),
    ("offset a string", raw_frame(data_header("s", S2, 500, P, off="500"), P), {"bad-frame"}),
    ("offset negative", raw_frame(data_header("s", S2, 500, P, off=-1), P), {"bad-frame"}),
    ("offset huge", raw_frame(data_header("s", S2, 500, P, off=2**63), P), {"bad-frame"}),
    ("offset a bool", raw_frame(data_header("s", S2, 500, P, off=True), P), {"bad-frame"}),
    ("segment an int", raw_frame(data_header("s", S2, 500, P, seg=12), P), {"bad-name", "bad-frame"}),
    ("stream missing", raw_frame({k: v for k, v in data_header("s", S2, 500, P).items() if k != "stream"}, P), set()),
    ("digest a string", raw_frame(data_header("s", S2, 500, P, xxh="abc"), P), {"bad-frame"}),
    ("len a string", raw_frame(data_header("s", S2, 500, P, len="8"), P), {"bad-frame"}),
    ("len negative", raw_frame(data_header("s", S2, 500, P, len=-8), P), {"bad-frame", "too-large"}),
    ("header a list", raw_frame(["DATA", "s", S2, 500]), {"bad-frame"}),
    ("header an int", raw_frame(7), {"bad-frame"}),
    ("unknown type", raw_frame({"t": "NOPE"}), {"bad-type", "bad-frame"}),
    ("type missing", raw_frame({"stream": "s"}), {"bad-frame", "bad-type"}),
    ("not msgpack", struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1", {"bad-frame"}),
    ("trailing bytes in header", struct.pack(">I", 3) + b"\x80\x80\x80", {"bad-frame"}),
    ("zero-length header", struct.pack(">I", 0), {"bad-frame"}),
    ("oversize length prefix", struct.pack(">I", 0xFFFFFFFF) + b"x" * 100, {"too-large"}),
    ("header just over 64 KiB", struct.pack(">I", 64 * 1024 + 1), {"too-large"}),
    (
        "payload over the limit",
        raw_frame(data_header("s", S2, 500, b"", len=MAX_PAYLOAD + 1)),
        {"too-large"},
    ),
    ("CHALLENGE from a shipper", encode(Challenge((1,), b"\1" * 32, "x")), {"bad-type"}),
    ("ACK from a shipper", encode(Ack("s", Position(S2, 500), False)), {"bad-type"}),
]
# A missing "stream" must be refused as a bad frame whichever check sees it first.
CASES = [(n, f, c or {"bad-frame"}) for n, f, c in CASES]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[ReceiverServer, int]]:
    secrets = {"s": SECRET_S, "o": SECRET_O}
    config = ServerConfig(
        data_dir=tmp_path / "data",
        secret_for=secrets.get,
        max_payload=MAX_PAYLOAD,
        handshake_timeout=5,
        idle_timeout=30,
    )
    srv = ReceiverServer(config)
    _, port = await srv.start("127.0.0.1", 0)
    try:
        yield srv, port
    finally:
        await srv.stop()


async def _prepare(port: int) -> None:
    """Stream s: S1 sealed (1000 bytes), S2 partial (500 bytes)."""
    c = await RawClient.connect(port, {"s": SECRET_S})
    await c.ship("s", S1, 0, SEALED)
    await c.seal("s", S1, SEALED)
    await c.ship("s", S2, 0, PARTIAL)
    await c.close()


async def test_every_bad_field_gets_error_and_close(server: tuple[ReceiverServer, int], tmp_path: Path) -> None:
    srv, port = server
    data = tmp_path / "data"
    await _prepare(port)
    # S1 is replayed in the background: let that finish, so that only the hostile frames could change files.
    copy = srv.copies["s"]
    for _ in range(500):
        # step() waits for a step in hand (and its state.json write) to end, or replays S1 itself.
        await copy.replayer.step()
        if copy.replayed_position.segment == S1:
            break
        await asyncio.sleep(0.02)
    assert copy.replayed_position.segment == S1
    before = snapshot(data / "s")
    assert before["log/" + S1] == SEALED
    assert before[f"incoming/{S2}.partial"] == PARTIAL

    other = await RawClient.connect(port, {"o": SECRET_O}, node="bystander")
    other_bytes = b""
    codes: dict[str, str] = {}
    for name, frame, allowed in CASES:
        hostile = await RawClient.connect(port, {"s": SECRET_S})
        assert hostile.resumes["s"].position == Position(S2, 500), name
        hostile.send_raw(frame)
        err = await hostile.expect_error_and_close()
        codes[name] = err.code
        assert err.code in allowed, f"{name}: got {err.code} ({err.text}), expected one of {allowed}"
        await hostile.close()
        assert snapshot(data / "s") == before, f"{name}: stored bytes changed"
        # The bystander is still served, and its bytes land.
        chunk = os.urandom(100)
        await other.ship("o", "E0000000001.log", len(other_bytes), chunk)
        other_bytes += chunk
    assert (data / "o" / "incoming" / "E0000000001.log.partial").read_bytes() == other_bytes
    await other.close()

    # Stream s carries on from exactly where it was: nothing was lost or added.
    final = await RawClient.connect(port, {"s": SECRET_S})
    tail = os.urandom(700)
    await final.ship("s", S2, 500, tail)
    await final.seal("s", S2, PARTIAL + tail)
    await final.close()
    assert (data / "s" / "log" / S1).read_bytes() == SEALED
    assert (data / "s" / "log" / S2).read_bytes() == PARTIAL + tail
    print("\nerror codes:", codes)


async def test_a_stream_secret_writes_only_that_stream(server: tuple[ReceiverServer, int], tmp_path: Path) -> None:
    _, port = server
    data = tmp_path / "data"
    # Claiming stream o with s's secret is refused at the handshake.
    with pytest.raises(PermissionError, match="auth"):
        await RawClient.connect(port, {"o": SECRET_S})
    # So is a stream this receiver does not serve.
    with pytest.raises(PermissionError, match="auth"):
        await RawClient.connect(port, {"x": SECRET_S})
    # One wrong proof refuses the whole HELLO, even next to a right one.
    with pytest.raises(PermissionError, match="auth"):
        await RawClient.connect(port, {"s": SECRET_S, "o": SECRET_S})
    # Proving s, then writing o, is an ERROR and a closed connection.
    c = await RawClient.connect(port, {"s": SECRET_S})
    payload = b"sneaky"
    c.send_raw(encode_data("o", payload))
    err = await c.expect_error_and_close()
    assert err.code == "bad-stream"
    assert not (data / "o").exists() or not any((data / "o").rglob("*.partial"))


async def test_error_with_writes_in_hand_still_closes(server: tuple[ReceiverServer, int]) -> None:
    """A bad frame right behind a pipelined burst: the writes finish, the ERROR goes out, the
    connection closes and the stream is free for the next connection (no lost wake-up)."""
    _, port = server
    offset = 0
    for i in range(10):
        c = await RawClient.connect(port, {"s": SECRET_S})
        # Every chunk accepted before the bad frame was made durable and counts.
        assert c.resumes["s"].position == (Position(S1, offset) if i else Position("", 0))
        for _ in range(8):
            chunk = os.urandom(32 * 1024)
            c.send_raw(raw_frame(data_header("s", S1, offset, chunk), chunk))
            offset += len(chunk)
        c.send_raw(raw_frame(data_header("s", S1, 0, P), P))
        err = await c.expect_error_and_close(timeout=10)
        assert err.code == "bad-position", (i, err)
        await c.close()


def encode_data(stream: str, payload: bytes) -> bytes:
    from protocol.messages import Data

    return encode(Data(stream, S1, 0, chunk_digest(S1, 0, payload), payload))


async def test_handshake_timeout_and_cap_on_unauthenticated(tmp_path: Path) -> None:
    """Silent peers are dropped after the handshake timeout; beyond the cap, new ones are refused at once."""
    import asyncio

    config = ServerConfig(
        data_dir=tmp_path / "data",
        secret_for={"s": SECRET_S}.get,
        handshake_timeout=1.5,
        max_unauthenticated=4,
    )
    srv = ReceiverServer(config)
    _, port = await srv.start("127.0.0.1", 0)
    silent: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(4):
            silent.append(await asyncio.open_connection("127.0.0.1", port))
        await _wait(lambda: srv.unauthenticated == 4)
        # The fifth is told busy in place of a CHALLENGE, and closed.
        r, w = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(5):
            told = await r.read()
        decoder = FrameDecoder()
        decoder.receive_data(told)
        msg = decoder.next_message()
        assert isinstance(msg, Error) and msg.code == "busy", msg
        assert decoder.next_message() is NEED_DATA and not decoder.buffered, "nothing after the ERROR"
        w.close()
        assert srv.refused_busy >= 1
        # The silent four time out and free their slots; then a real shipper gets in.
        async with asyncio.timeout(10):
            for r, _ in silent:
                while True:
                    try:
                        if not await r.read(65536):
                            break
                    except ConnectionResetError:
                        break
        await _wait(lambda: srv.unauthenticated == 0)
        c = await RawClient.connect(port, {"s": SECRET_S})
        c.send_raw(encode(Heartbeat()))
        assert isinstance(await c.recv(), Heartbeat)
        await c.close()
    finally:
        for _, w in silent:
            w.close()
        await srv.stop()


async def _wait(pred: Callable[[], bool], timeout: float = 10) -> None:
    import asyncio

    async with asyncio.timeout(timeout):
        while not pred():  # noqa: ASYNC110 - the server's counters have no event to wait on
            await asyncio.sleep(0.02)


async def test_shipper_never_counts_an_ack_beyond_what_it_sent(tmp_path: Path) -> None:
    """A receiver (here a fake one that knows the secret) acknowledges far more than was sent, with a
    correct ACK digest: the shipper must not take it as durable, and starts over instead."""
    from protocol.aio import ConnectionClosed, FramedConnection
    from protocol.messages import START, Data
    from protocol.session import ReceiverHandshake
    from tests.helpers.procs import Proc, shipper_proc
    from tests.helpers.source import make_secret, segment_name

    secret = make_secret(tmp_path / "secret")
    key = secret.read_text().strip().encode()
    source = tmp_path / "src"
    source.mkdir()
    (source / segment_name(1)).write_bytes(os.urandom(100_000))
    connections: list[str] = []
    beyond = Position(segment_name(1), 1 << 40)

    async def fake_receiver(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = FramedConnection(reader, writer)
        connections.append("open")
        try:
            hs = ReceiverHandshake("fake", os.urandom(32), {"s": key}.get)
            conn.send(hs.challenge())
            for claim in hs.receive_hello(await conn.recv(10)):
                conn.send(hs.welcome([hs.resume(claim.stream, 0, START, True)]))
            conn.authenticate(*hs.frame_auth())  # it knows the secret: its ACKs carry good tags
            while not isinstance(await conn.recv(10), Data):
                pass
            conn.send(Ack("s", beyond, False))
            await conn.drain()
            await conn.recv(10)  # the shipper hangs up; anything else it sends is ignored
            while True:
                await conn.recv(10)
        except (ConnectionClosed, TimeoutError):
            connections.append("closed")
        finally:
            await conn.close()

    server = await asyncio.start_server(fake_receiver, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    shipper: Proc = shipper_proc(tmp_path, "s", source, [port], secret, ["--seal", "immediate", "--log-level", "DEBUG"])
    shipper.start()
    try:
        await _wait(lambda: connections.count("closed") >= 2, timeout=30)
    finally:
        shipper.stop()
        server.close()
    log = shipper.log_text()
    assert "beyond what was sent" in log
    assert f"off={beyond.offset}" not in log, "the shipper counted an ACK for bytes it never sent"
