"""The local control channel: one JSON request line in, one JSON reply line out, over a unix socket.

A daemon serves it beside its state (the receiver in its data dir, the shipper in its state dir), so
the command-line tools (`status`, `suspend`, `activate`, ...) reach the running process without a
network port. Only the owner of the socket file (mode 0600) can talk to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("admin")

MAX_LINE = 1 << 20
"""The longest request a daemon reads: anyone who can reach the socket can send one."""
MAX_REPLY = 256 << 20
"""The longest reply call() reads. It comes from our own daemon, and a status of thousands of streams
and targets is several MiB; the cap only stops a runaway."""

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlUnavailable(Exception):
    """No running daemon answers on the control socket."""


class ControlError(Exception):
    """The daemon answered, but with an error (its text is the message)."""


class ControlServer:
    """Serve ``handler`` on a unix socket at ``path``."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Listen on ``path``, replacing a stale socket left by a process that died.

        Raises OSError if the path cannot be bound.
        """
        with contextlib.suppress(FileNotFoundError):
            if self.path.is_socket():
                self.path.unlink()
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_LINE)
        finally:
            os.umask(old_umask)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):  # not wait_for: see protocol.aio.FramedConnection.close
                    await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                line = await reader.readline()
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("request must be a JSON object")
            except ValueError as e:
                reply: dict[str, Any] = {"ok": False, "error": f"bad request: {e}"}
            else:
                try:
                    reply = await self.handler(request)
                except Exception as e:
                    log.exception("control request %r failed", request.get("op"))
                    reply = {"ok": False, "error": str(e) or type(e).__name__}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (OSError, TimeoutError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def call(path: Path, request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send ``request`` to the daemon listening on ``path`` and return its reply.

    Raises ControlUnavailable when nothing listens there, ControlError when the reply says
    ``ok: false``.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise ControlUnavailable(f"no daemon answers on {path}") from e
        sock.sendall(json.dumps(request).encode() + b"\n")
        buf = bytearray()
        while not buf.endswith(b"\n"):
            block = sock.recv(65536)
            if not block:
                break
            buf += block
            if len(buf) > MAX_REPLY:
                raise ControlError(f"reply longer than {MAX_REPLY >> 20} MiB")
    if not buf:
        raise ControlUnavailable(f"the daemon on {path} closed without answering")
    reply = json.loads(buf)
    if not isinstance(reply, dict):
        raise ControlError("reply is not a JSON object")
    if reply.get("ok") is False:
        raise ControlError(str(reply.get("error", "failed")))
    return reply
