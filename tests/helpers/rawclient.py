"""A raw protocol client for hostile-input tests: it completes the real handshake, then sends any bytes.

It speaks through plain asyncio streams; with the frames of tests.helpers.frames built by hand, a test
can put exactly the malformed header or length prefix it wants on the wire after a genuine authentication.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from protocol.auth import FrameSealer
from protocol.digest import chunk_digest, seal_digest, segment_hasher
from protocol.framing import NEED_DATA, FrameDecoder, encode
from protocol.messages import Ack, Data, Error, Message, Position, Seal, StreamResume
from protocol.session import ShipperHandshake
from tests.helpers.frames import seal_raw


@dataclass
class RawClient:
    """One authenticated connection to a receiver."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    resumes: dict[str, StreamResume]
    decoder: FrameDecoder
    sealer: FrameSealer | None = None
    """Tags what we send once the handshake is over (protocol v3)."""

    @classmethod
    async def connect(
        cls,
        port: int,
        secrets: dict[str, bytes],
        node: str = "hostile",
        timeout: float = 10,
    ) -> RawClient:
        """Connect to 127.0.0.1:``port`` and prove ``secrets``; raise on any refusal."""
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            client = cls(reader, writer, {}, FrameDecoder())
            hs = ShipperHandshake(node, os.urandom(32), secrets, dict.fromkeys(secrets, 0))
            writer.write(encode(hs.receive_challenge(await client.recv())))
            answer = await client.recv()
            if isinstance(answer, Error):
                raise PermissionError(f"{answer.code}: {answer.text}")
            result = hs.receive_welcome(answer)
            for name, r in result.items():
                assert isinstance(r, StreamResume), r
                client.resumes[name] = r
            client.sealer, client.decoder.opener = hs.frame_auth()
            return client

    async def recv(self, timeout: float = 10) -> Message:
        async with asyncio.timeout(timeout):
            while True:
                msg = self.decoder.next_message()
                if msg is not NEED_DATA:
                    return msg  # type: ignore[return-value]
                data = await self.reader.read(65536)
                if not data:
                    raise EOFError("closed by the receiver")
                self.decoder.receive_data(data)

    def send_raw(self, data: bytes, tagged: bool = True) -> None:
        """Send hand-built frames; ``tagged``: tag each whole frame as our authenticated session would."""
        self.writer.write(seal_raw(data, self.sealer) if tagged else data)

    def send(self, msg: Message) -> None:
        self.writer.write(encode(msg, sealer=self.sealer))

    async def expect_error_and_close(self, timeout: float = 10) -> Error:
        """Read until an ERROR arrives, then assert the receiver closes the connection."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.recv(timeout)
                if isinstance(msg, Error):
                    break
            try:
                while await self.reader.read(65536):
                    pass
            except ConnectionError:
                pass
        return msg

    async def ship(self, stream: str, segment: str, offset: int, payload: bytes) -> Ack:
        """Send one correct DATA frame and wait for the ACK that covers it."""
        self.send(Data(stream, segment, offset, chunk_digest(segment, offset, payload), payload))
        want = Position(segment, offset + len(payload))
        while True:
            msg = await self.recv()
            if isinstance(msg, Ack) and msg.position >= want:
                return msg
            if isinstance(msg, Error):
                raise AssertionError(f"receiver refused a correct DATA: {msg.code}: {msg.text}")

    async def seal(self, stream: str, segment: str, content: bytes) -> Ack:
        h = segment_hasher()
        h.update(content)
        self.send(Seal(stream, segment, len(content), seal_digest(segment, len(content), h.digest())))
        while True:
            msg = await self.recv()
            if isinstance(msg, Ack) and msg.sealed and msg.position.segment == segment:
                return msg
            if isinstance(msg, Error):
                raise AssertionError(f"receiver refused a correct SEAL: {msg.code}: {msg.text}")

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except (TimeoutError, ConnectionError):
            pass


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (but the lock) by relative path, with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock" and not p.name.startswith(".state")
    }
