"""A hostile relay between a shipper and its receiver: it holds no secret, and tries every way a relay
(or a listener that is not a receiver) could make the shipper skip data or stop shipping.

``mode`` is read at each new connection:

  pass          copy bytes both ways unchanged
  forge_acks    pass the real handshake through, then drop every DATA and SEAL and answer each with an
                ACK of exactly what was sent (what made retention delete data before protocol v3)
  replay_acks   pass everything through, and send every ACK from the receiver twice
  inject        pass everything through, and put a forged DATA and SEAL before the shipper's frames
  fenced        act as the receiver: CHALLENGE, then a FENCED whose proof the relay cannot make
  error         act as the receiver: CHALLENGE, then ERROR "failed" (a permanent-looking refusal)
  welcome_empty act as the receiver: CHALLENGE, then a WELCOME that answers no stream
  welcome_past  act as the receiver: CHALLENGE, then a WELCOME resuming far past the source
  garbage       send random bytes, then close
"""

from __future__ import annotations

import asyncio
import collections
import os
import random

from protocol.digest import chunk_digest, seal_digest
from protocol.framing import encode
from protocol.messages import START, Ack, Challenge, Data, Error, Fenced, Position, Seal, StreamResume, Welcome
from protocol.session import VERSIONS
from tests.helpers.frames import TagTracker, read_frame
from tests.helpers.procs import Listener

MODES = ("forge_acks", "replay_acks", "inject", "fenced", "welcome_empty", "welcome_past", "garbage", "error")
"""In the order the test tries them: "error" last, since a Failed answer lengthens the back-off to 30 s."""


class HostileRelay:
    """The relay; run it in a ProxyThread and set ``mode`` between connections."""

    def __init__(self, upstream: Listener, stream: str) -> None:
        self.upstream = upstream
        self.stream = stream
        self.mode = "pass"
        self.port = 0
        self.connections: collections.Counter[str] = collections.Counter()
        self.forged: collections.Counter[str] = collections.Counter()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._rnd = random.Random(7)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connect, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in self._writers:
            w.close()

    async def _on_connect(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        mode = self.mode
        self.connections[mode] += 1
        self._writers.append(cw)
        try:
            if mode in ("fenced", "error", "welcome_empty", "welcome_past", "garbage"):
                await self._impostor(mode, cr, cw)
                return
            ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream.port)
            self._writers.append(uw)
            back = asyncio.create_task(self._backward(mode, ur, cw))
            try:
                await self._forward(mode, cr, uw, cw)
            finally:
                back.cancel()
                uw.close()
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            cw.close()

    async def _impostor(self, mode: str, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        if mode == "garbage":
            cw.write(self._rnd.randbytes(self._rnd.randint(1, 300)))
            await cw.drain()
            return
        cw.write(encode(Challenge(VERSIONS, os.urandom(32), "impostor")))
        await cw.drain()
        await read_frame(cr)  # the shipper's HELLO, with proofs the impostor cannot check
        answer: object
        if mode == "fenced":
            answer = Fenced(self.stream, 99, os.urandom(32))
        elif mode == "error":
            answer = Error("failed", f"stream {self.stream} is Failed: says the impostor")
        elif mode == "welcome_empty":
            answer = Welcome(max(VERSIONS), "impostor", ())
        else:
            far = StreamResume(self.stream, 0, Position("Z" * 40, 1 << 40), True, os.urandom(32))
            answer = Welcome(max(VERSIONS), "impostor", (far,))
        self.forged[mode] += 1
        cw.write(encode(answer))  # type: ignore[arg-type]
        await cw.drain()
        await asyncio.sleep(0.5)

    async def _forward(
        self, mode: str, r: asyncio.StreamReader, w: asyncio.StreamWriter, to_shipper: asyncio.StreamWriter
    ) -> None:
        tracker = TagTracker(to_receiver=True)
        while True:
            frame = await read_frame(r, tracker)
            kind = frame.header.get("t") if isinstance(frame.header, dict) else None
            if mode == "forge_acks" and kind in ("DATA", "SEAL"):
                h = frame.header
                if kind == "DATA":
                    ack = Ack(self.stream, Position(h["seg"], h["off"] + h["len"]), False, START)
                else:
                    ack = Ack(self.stream, Position(h["seg"], h["size"]), True, Position(h["seg"], h["size"]))
                # Tagged like a real one would be, with bytes the relay had to guess.
                to_shipper.write(encode(ack) + os.urandom(16))
                await to_shipper.drain()
                self.forged[mode] += 1
                continue
            if mode == "inject" and kind == "DATA" and tracker.tagged:
                payload = b"injected by the relay"
                seg = frame.header["seg"]
                forged = Data(
                    self.stream, seg, frame.header["off"], chunk_digest(seg, frame.header["off"], payload), payload
                )
                w.write(encode(forged)[: -len(payload)] + os.urandom(16) + payload)
                w.write(encode(Seal(self.stream, seg, 1, seal_digest(seg, 1, bytes(16)))) + os.urandom(16))
                self.forged[mode] += 1
            w.write(frame.wire)
            await w.drain()

    async def _backward(self, mode: str, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        tracker = TagTracker(to_receiver=False)
        while True:
            frame = await read_frame(r, tracker)
            w.write(frame.wire)
            if mode == "replay_acks" and isinstance(frame.header, dict) and frame.header.get("t") == "ACK":
                w.write(frame.wire)
                self.forged[mode] += 1
            await w.drain()


def drop_connections(relay: HostileRelay) -> None:
    """Close every connection through the relay (on its loop), so the next one meets its new mode."""
    for w in relay._writers:
        w.close()
    relay._writers.clear()
