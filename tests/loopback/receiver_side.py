"""The receiver side of the in-process loopback layer: a real ``ReceiverServer`` on 127.0.0.1 port 0 in
the test's event loop, and a shipper-side client on a real ``FramedConnection`` (no subprocess)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from protocol.aio import FramedConnection
from protocol.digest import chunk_digest, seal_digest, segment_digest
from protocol.messages import Data, Message, Seal, StreamResume
from protocol.session import ShipperHandshake
from receiver.config import ServerConfig
from receiver.server import ReceiverServer

SECRETS = {"s": b"s" * 32, "o": b"o" * 32}
TIMEOUT = 10.0


@asynccontextmanager
async def running_receiver(data_dir: Path, **settings: Any) -> AsyncIterator[tuple[ReceiverServer, int]]:
    """Run a receiver serving SECRETS on 127.0.0.1 port 0; yield it and the port it bound."""
    srv = ReceiverServer(ServerConfig(data_dir=data_dir, secret_for=SECRETS.get, **settings))
    _, port = await srv.start("127.0.0.1", 0)
    try:
        yield srv, port
    finally:
        await srv.stop()


class Shipper:
    """One authenticated shipper connection, speaking through a real FramedConnection."""

    def __init__(self, conn: FramedConnection, resumes: dict[str, StreamResume]) -> None:
        self.conn = conn
        self.resumes = resumes

    @classmethod
    async def connect(
        cls, port: int, streams: tuple[str, ...] = ("s",), node: str = "loopback", features: tuple[str, ...] = ()
    ) -> Shipper:
        """Connect and prove the secrets of ``streams`` (asking for ``features``); raise on any refusal."""
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            conn = FramedConnection(reader, writer)
            secrets = {name: SECRETS[name] for name in streams}
            hs = ShipperHandshake(node, os.urandom(32), secrets, dict.fromkeys(secrets, 0), features)
            conn.send(hs.receive_challenge(await conn.recv(TIMEOUT)))
            resumes = hs.receive_welcome(await conn.recv(TIMEOUT))
            conn.authenticate(*hs.frame_auth())
        assert all(isinstance(r, StreamResume) for r in resumes.values()), resumes
        return cls(conn, resumes)  # type: ignore[arg-type]

    def data(self, stream: str, segment: str, offset: int, payload: bytes) -> None:
        self.conn.send(Data(stream, segment, offset, chunk_digest(segment, offset, payload), payload))

    def seal(self, stream: str, segment: str, content: bytes) -> None:
        self.conn.send(Seal(stream, segment, len(content), seal_digest(segment, len(content), segment_digest(content))))

    async def recv_until(self, done: Callable[[Message], bool]) -> list[Message]:
        """Return every message received up to and including the first for which ``done`` is true."""
        got: list[Message] = []
        async with asyncio.timeout(TIMEOUT):
            while True:
                got.append(await self.conn.recv(None))
                if done(got[-1]):
                    return got

    async def close(self) -> None:
        await self.conn.close()


async def wait_for(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait until ``predicate()`` holds (a counter of the server: no event to wait on)."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
