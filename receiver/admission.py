"""Accept connections and admit at most ``max_unauthenticated`` of them into their handshake at a time.

A connection takes a ``Slot`` before a byte of it is read (with TLS: at accept, through its TLS
handshake) and gives it back exactly once, when it authenticated, failed or closed. Over the cap a
connection is closed at once, so that a flood of silent or hostile peers cannot exhaust memory or file
descriptors while the peers already in their handshake, and every attached shipper, keep being served.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from logship.admin.wording import Throttle, receiver_tls_failure
from protocol.aio import FramedConnection, FrameReceiver
from protocol.errors import ErrorCode
from protocol.messages import Error
from receiver.config import ServerConfig

log = logging.getLogger("receiver")

# Connections taken from a listening socket per wake-up (TLS: we accept them ourselves).
ACCEPTS_PER_WAKEUP = 128
LISTEN_BACKLOG = 4096
"""listen() backlog (the kernel caps it at net.core.somaxconn). A thousand streams start with a
thousand connects at once: past a full accept queue the kernel drops the handshake's last ACK, the
shipper believes itself connected and waits its connect timeout (10 s) for a CHALLENGE that cannot
come. scripts/bench scale, 1000 streams: converged in 15.9 s with asyncio's default of 100, 8.2 s with
this (scripts/benchmarks/fixes.md, ninth round)."""

OnConnect = Callable[..., Awaitable[None]]
"""``on_connect(conn)`` for a plain connection (it takes its slot with ``take_slot()``), or
``on_connect(conn, slot=slot)`` for one that holds its slot since accept (TLS)."""


class Slot:
    """One connection's place among the max_unauthenticated: taken at accept, given back exactly once
    (authenticated, failed, or closed), whichever of the TLS step or the session gets there first."""

    __slots__ = ("admission", "held")

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.held = True
        admission.unauthenticated += 1

    def release(self) -> None:
        if self.held:
            self.held = False
            self.admission.unauthenticated -= 1


class Admission:
    """The listening side of a receiver: accept, count, refuse over the cap, do TLS, start sessions."""

    def __init__(self, config: ServerConfig, on_connect: OnConnect, tasks: set[asyncio.Task[None]]) -> None:
        self.config = config
        self.on_connect = on_connect
        self.tasks = tasks
        """Where TLS handshakes in progress are kept (the server cancels them with its sessions)."""
        self.connections_total = 0
        self.unauthenticated = 0
        """Connections holding a Slot: accepted, not yet authenticated (nor closed)."""
        self.refused_busy = 0
        self.frames_refused = 0
        """Frames refused for a failed tag or payload MAC (forged, replayed, reordered, damaged)."""
        self.server: asyncio.Server | None = None
        self.listeners: list[socket.socket] = []
        """The listening sockets we accept from ourselves (with TLS)."""
        self._tls_throttle = Throttle()

    def take_slot(self, conn: FramedConnection) -> Slot | None:
        """Admit a plain TCP connection before a byte of it is read; None: refused and aborted."""
        self.connections_total += 1
        if self.unauthenticated >= self.config.max_unauthenticated:
            self._refuse(functools.partial(self._tell_busy, conn))
            return None
        return Slot(self)

    def _tell_busy(self, conn: FramedConnection) -> None:
        # Say why, in place of the CHALLENGE, then close: a shipper told "busy" backs off and comes back,
        # where a bare reset reads as a wrong address and sends it probing the port (a TLS ClientHello, an
        # HTTP HEAD: each one more connection over the cap and one more warning here). Nothing of the
        # peer's is read; one small frame into a new socket's empty buffer never waits.
        cap = self.config.max_unauthenticated
        text = f"{self.unauthenticated} connections in their handshake already (max_unauthenticated {cap})"
        conn.send(Error(ErrorCode.BUSY, text))
        conn.writer.transport.close()

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        """Start listening; return the address bound (port 0 picks one). Raises OSError."""
        loop = asyncio.get_running_loop()
        max_payload = self.config.max_payload
        if self.config.tls is None:
            # A FrameReceiver per connection: the socket writes into the frame decoder's buffers. Its
            # session counts against max_unauthenticated before the first byte is read.
            self.server = await loop.create_server(
                lambda: FrameReceiver(self.on_connect, max_payload), host, port, backlog=LISTEN_BACKLOG
            )
            sock = self.server.sockets[0].getsockname()
            return sock[0], sock[1]
        # With TLS we accept the sockets ourselves, so that a peer holds a slot of max_unauthenticated
        # from accept() on, through its TLS handshake, until it proved a stream secret. Given to
        # create_server(ssl=...), the loop would do TLS before any code of ours hears of the
        # connection (and tell us nothing of one that fails or stalls in it). Upgrading a plain
        # connection with start_tls instead loses a ClientHello that arrives first: uvloop starts
        # reading right after connection_made, whatever the protocol paused. connect_accepted_socket
        # hands over a socket nobody has read from.
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        seen: set[tuple[int, Any]] = set()
        for family, _, proto, _, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            lsock = socket.socket(family, socket.SOCK_STREAM, proto)
            try:
                lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    lsock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                lsock.bind(addr)
                lsock.listen(LISTEN_BACKLOG)
                lsock.setblocking(False)
            except OSError:
                lsock.close()
                self._close_listeners()
                raise
            self.listeners.append(lsock)
            loop.add_reader(lsock.fileno(), self._accept_ready, lsock)
        if not self.listeners:
            raise OSError(f"no address to listen on for {host!r}")
        sock = self.listeners[0].getsockname()
        return sock[0], sock[1]

    def close(self) -> None:
        """Stop accepting."""
        if self.server is not None:
            self.server.close()
        self._close_listeners()

    async def wait_closed(self) -> None:
        if self.server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):  # not wait_for: see FramedConnection.close
                    await self.server.wait_closed()

    def _accept_ready(self, lsock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                sock, _addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                # Out of file descriptors (or the like): stop accepting for a second instead of
                # spinning on a listening socket that stays readable.
                log.error("accept failed: %s; pausing accepts for a second", e)
                loop.remove_reader(lsock.fileno())
                loop.call_later(1.0, self._resume_accepting, lsock)
                return
            self.connections_total += 1
            if self.unauthenticated >= self.config.max_unauthenticated:
                self._refuse(sock.close)
                continue
            slot = Slot(self)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = loop.create_task(self._tls_accept(sock, slot), name="tls-accept")
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def _resume_accepting(self, lsock: socket.socket) -> None:
        if lsock in self.listeners:
            asyncio.get_running_loop().add_reader(lsock.fileno(), self._accept_ready, lsock)

    async def _tls_accept(self, sock: socket.socket, slot: Slot) -> None:
        """Do the TLS handshake of an accepted socket; the session starts when it succeeds."""
        tls = self.config.tls
        assert tls is not None
        max_payload = self.config.max_payload
        try:
            host, port = sock.getpeername()[:2]
            peer = f"{host}:{port}"
        except OSError:
            peer = "?"
        admitted = False
        try:
            # connection_made of the FrameReceiver, once TLS is up, starts the session: the slot goes
            # with it and is freed when the peer authenticated (or failed to).
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: FrameReceiver(functools.partial(self.on_connect, slot=slot), max_payload),
                sock,
                ssl=tls,
                ssl_handshake_timeout=self.config.handshake_timeout,
            )
            admitted = True
        except (OSError, ssl.SSLError, TimeoutError) as e:
            # WARNING with the fix, once a minute per peer host and reason (a wrong shipper retries often).
            text = receiver_tls_failure(e, self.config.handshake_timeout, tls.verify_mode == ssl.CERT_REQUIRED)
            held = self._tls_throttle.allow((peer.rsplit(":", 1)[0], text), time.monotonic())
            if held is not None:
                log.warning("%s: TLS handshake failed: %s%s", peer, text, f" ({held} more since)" if held else "")
        finally:
            if not admitted:
                slot.release()

    def _refuse(self, close: Callable[[], object]) -> None:
        # Refuse before reading a byte: the peers already in their handshake keep their slots.
        self.refused_busy += 1
        if self.refused_busy & (self.refused_busy - 1) == 0:
            log.warning(
                "%s unauthenticated connections already; refused %d so far",
                self.unauthenticated,
                self.refused_busy,
            )
        close()

    def _close_listeners(self) -> None:
        loop = asyncio.get_running_loop()
        for lsock in self.listeners:
            loop.remove_reader(lsock.fileno())
            lsock.close()
        self.listeners.clear()
