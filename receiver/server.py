"""Accept shippers, authenticate them, and hand each stream's frames to its copy.

One ``StreamCopy`` per stream owns the store; at most one connection writes a stream at a time (a
newer connection for the same stream takes over after the older one finished its write in hand).
Per attached stream a committer applies queued storage operations in a worker thread, fsyncs, and
only then acknowledges: everything that piled up while the previous batch was being written goes
into the next one (group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.aio import ConnectionClosed, FramedConnection, FrameReceiver
from protocol.buffers import BufferPool
from protocol.compression import ENCODINGS, agreed
from protocol.errors import ProtocolError, RemoteProtocolError
from protocol.framing import DEFAULT_MAX_PAYLOAD
from protocol.messages import (
    START,
    Ack,
    Data,
    Error,
    Fenced,
    Heartbeat,
    Message,
    Nack,
    Position,
    Seal,
    StreamResume,
)
from protocol.names import STREAM_NAME, check_stream_name
from protocol.session import ReceiverHandshake
from receiver.activation import activate
from receiver.ingest import Ingest, Install, Op, Restart, Verdict, Write
from receiver.replayer import Replayer, ReplaySettings
from receiver.status import copy_row
from receiver.store import Installed, SegmentStore

log = logging.getLogger("receiver")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Settings of one receiver process."""

    data_dir: Path
    """Root of the copies: DIR/<stream>/log, incoming, quarantine, state.json."""
    secret_for: Callable[[str], bytes | None]
    """The shared secret of a stream, or None if this receiver does not serve it."""
    node: str = socket.gethostname()
    """Our name in the handshake and in logs."""
    max_payload: int = DEFAULT_MAX_PAYLOAD
    """Largest DATA payload accepted, in bytes."""
    handshake_timeout: float = 10.0
    """Seconds a new connection has to prove itself."""
    idle_timeout: float = 60.0
    """Seconds of silence after which a shipper is dropped (shippers heartbeat every few seconds)."""
    max_pending: int = 32 * 1024 * 1024
    """Bytes accepted but not yet durable per stream before we stop reading from its connection."""
    replay_for: Callable[[str], ReplaySettings] = lambda stream: ReplaySettings()
    """How each stream is replayed into its standby replica."""
    max_unauthenticated: int = 64
    """Connections still in their handshake, at most; more are closed at once, so that a flood of
    silent or hostile peers cannot exhaust memory or file descriptors while real shippers wait."""
    tls: ssl.SSLContext | None = None
    """TLS for every connection (client certificates required if it has a CA); None: plain TCP."""


class StreamCopy:
    """One stream's copy at this receiver: its store, persisted state, replayer, and current writer."""

    def __init__(self, name: str, store: SegmentStore, replay: ReplaySettings | None = None) -> None:
        self.name = name
        self.store = store
        self.state = store.load_state()
        self.installed: list[Installed] = store.read_manifest()
        self.installed_at = time.time()
        self.lock = asyncio.Lock()
        self.owner: Attachment | None = None
        self.resends = 0
        self.bytes_received = 0
        self.attached_once = False
        self.activating = False
        """Set while an activation runs: new shippers are fenced from that moment on."""
        self._save_lock = asyncio.Lock()
        self.replayer = Replayer(self, replay or ReplaySettings(), on_replayed=self._on_replayed)

    @property
    def epoch(self) -> int:
        return int(self.state.get("epoch", 0))

    @property
    def failed(self) -> str | None:
        return self.state.get("failed")

    @property
    def activated(self) -> bool:
        return self.activating or bool(self.state.get("activated"))

    @property
    def replayed_position(self) -> Position:
        name = self.state.get("replayed") or ""
        return Position(name, int(self.state.get("replayed_size") or 0)) if name else START

    async def save_state(self) -> None:
        # The replayer and the sessions both write state.json: one write at a time, newest state last.
        async with self._save_lock:
            await asyncio.get_running_loop().run_in_executor(None, self.store.save_state, dict(self.state))

    def on_installed(self, records: list[Installed]) -> None:
        """Take the manifest records of fresh installs and wake the replayer."""
        if not records:
            return
        for record in records:
            if self.installed and record.name <= self.installed[-1].name:
                # A segment installed again (after a quarantine): the newest record wins.
                self.installed = [r for r in self.installed if r.name != record.name]
                self.installed.append(record)
                self.installed.sort(key=lambda r: r.name)
            else:
                self.installed.append(record)
        self.replayer.wake.set()

    async def suspend(self, comment: str | None) -> None:
        """Stop replaying this stream (persisted); copying goes on."""
        self.state.update(suspended=True, suspended_at=time.time(), comment=comment)
        await self.save_state()
        log.warning("stream %s: replay suspended%s", self.name, f": {comment}" if comment else "")

    async def resume(self, comment: str | None) -> None:
        """Replay again from where it stopped; clears a replay failure (persisted)."""
        self.state.update(suspended=False, replay_failed=None, replay_failed_at=None, comment=comment)
        self.replayer.failures = 0
        await self.save_state()
        self.replayer.wake.set()
        log.warning("stream %s: replay resumed%s", self.name, f": {comment}" if comment else "")

    def row(self, now: float, running: bool = True) -> dict[str, Any]:
        return copy_row(
            self.name,
            self.state,
            self.installed,
            now,
            (self.owner is not None) if running else None,
            self.attached_once,
            self.replayer.settings.lag,
        )

    def _on_replayed(self) -> None:
        # Tell the attached shipper at once, so its retention need not wait for the next data ACK.
        att = self.owner
        if att is not None and not att.conn.closing:
            att.conn.send(Ack(self.name, att.acked, att.acked_sealed, self.replayed_position))


class _Batch:
    """One batch of storage ops from its write to its ACK. A single trip to a worker thread writes it
    (``written`` resolves then, with what was installed) and then syncs it (``synced``). Holds no
    payload: the buffers go back to the pool as soon as the write copied them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, store: SegmentStore, ops: list[Op]) -> None:
        self.nbytes = 0
        self.events: list[Install | Restart] = []
        ack: tuple[Position, bool] | None = None
        for op in ops:
            if isinstance(op, Write):
                self.nbytes += len(op.payload)
                ack = Position(op.segment, op.offset + len(op.payload)), False
            else:
                self.events.append(op)
                if isinstance(op, Install):
                    ack = Position(op.segment, op.size), True
        self.ack = ack if ack is not None else (START, False)
        self.written: asyncio.Future[list[Installed]] = loop.create_future()
        self.synced = loop.run_in_executor(None, self._run, loop, store, ops)
        # Its failure is the written future's, reported there; do not warn about it a second time.
        self.synced.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _run(self, loop: asyncio.AbstractEventLoop, store: SegmentStore, ops: list[Op]) -> None:
        try:
            pending, installed = store.write(ops)
        except BaseException as e:
            loop.call_soon_threadsafe(_settle, self.written, None, e)
            raise
        loop.call_soon_threadsafe(_settle, self.written, installed, None)
        store.sync(pending)


def _settle(fut: asyncio.Future[list[Installed]], result: list[Installed] | None, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        assert result is not None
        fut.set_result(result)


class Attachment:
    """A stream attached to one connection: its ingest state and its committer task."""

    def __init__(
        self,
        copy: StreamCopy,
        conn: FramedConnection,
        ingest: Ingest,
        durable: Position,
        sealed: bool,
        max_pending: int,
        pool: BufferPool | None = None,
    ) -> None:
        self.copy = copy
        self.pool = pool
        self.conn = conn
        self.ingest = ingest
        self.acked = durable
        self.acked_sealed = sealed
        self.max_pending = max_pending
        self.pending: list[Op] = []
        self.pending_bytes = 0
        self.wake = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.closing = False
        self.error: BaseException | None = None
        self.task = asyncio.create_task(self._commit_loop(), name=f"commit-{copy.name}")

    def submit(self, ops: list[Op]) -> None:
        self.pending.extend(ops)
        for op in ops:
            if isinstance(op, Write):
                self.pending_bytes += len(op.payload)
        if self.pending_bytes >= self.max_pending:
            self.room.clear()
        self.wake.set()

    async def _commit_loop(self) -> None:
        # Two batches in the pipe: while one is being fdatasynced the next is already written (the
        # sync makes durable at least what was written before it began). A batch is acknowledged only
        # once its own sync and every earlier one returned. Each batch is one trip to a worker thread
        # (write, then sync): a trickle of appends pays one thread hand-off each way, no more.
        loop = asyncio.get_running_loop()
        store = self.copy.store
        syncing: _Batch | None = None
        try:
            while True:
                self.wake.clear()
                if self.pending:
                    ops, self.pending = self.pending, []
                    batch = _Batch(loop, store, ops)
                    # Its sync ending wakes us like new work does: one event to wait on, no helper task.
                    batch.synced.add_done_callback(lambda _: self.wake.set())
                    try:
                        installed = await batch.written
                    except Exception:
                        await asyncio.wait({batch.synced})
                        raise
                    # Only one write at a time: the store's open segment is the writer's state.
                    self.copy.on_installed(installed)
                    self._recycle(ops)
                    if syncing is not None:
                        await self._finish(syncing)
                    syncing = batch
                elif syncing is not None:
                    if syncing.synced.done():
                        batch, syncing = syncing, None
                        await self._finish(batch)
                    else:
                        await self.wake.wait()
                elif self.closing:
                    # Once closing, never wait again: a detach() that came while a batch was being
                    # written set the event only once.
                    return
                else:
                    await self.wake.wait()
        except Exception as e:
            # Storage failed (or, never seen, a bug here): acknowledge nothing more and close, so the
            # shipper reconnects and the copy is recovered from disk, instead of a silent stall.
            self.error = e
            log.error(
                "stream %s: storage failed, acknowledging nothing more: %s",
                self.copy.name,
                e,
                exc_info=not isinstance(e, OSError),
            )
            if syncing is not None:
                # Let its descriptors be closed before anyone recovers the copy from disk.
                await asyncio.wait({syncing.synced})
            self.copy.store.close()
            self.conn.writer.close()
            self.room.set()

    async def _finish(self, batch: _Batch) -> None:
        await batch.synced
        self.pending_bytes -= batch.nbytes
        if self.pending_bytes < self.max_pending:
            self.room.set()
        for op in batch.events:
            if isinstance(op, Install):
                log.info("stream %s: sealed %s (%d bytes)", self.copy.name, op.segment, op.size)
            else:
                log.warning("stream %s: %s quarantined: %s", self.copy.name, op.segment, op.reason)
        position, sealed = batch.ack
        if (position, sealed) > (self.acked, self.acked_sealed):
            self.acked, self.acked_sealed = position, sealed
            if not self.conn.closing:
                self.conn.send(Ack(self.copy.name, position, sealed, self.copy.replayed_position))

    def _recycle(self, ops: list[Op]) -> None:
        # The payloads are in the page cache (write() copied them) and the ops were their last holders
        # (the frames that carried them were consumed by the ingest): the buffers can take new payloads.
        if self.pool is None:
            return
        for op in ops:
            if isinstance(op, Write) and isinstance(op.payload, bytearray):
                self.pool.give(op.payload)

    async def detach(self) -> None:
        """Finish the writes in hand, make them durable, and stop."""
        self.closing = True
        self.wake.set()
        with contextlib.suppress(Exception):
            await self.task
        self.copy.store.close()


# Connections taken from a listening socket per wake-up, and its listen() backlog.
LISTEN_BACKLOG = 128


class Slot:
    """One connection's place among the max_unauthenticated: taken at accept, given back exactly once
    (authenticated, failed, or closed), whichever of the TLS step or the session gets there first."""

    __slots__ = ("held", "server")

    def __init__(self, server: ReceiverServer) -> None:
        self.server = server
        self.held = True
        server.unauthenticated += 1

    def release(self) -> None:
        if self.held:
            self.held = False
            self.server.unauthenticated -= 1


class ReceiverServer:
    """The receiver: a TCP server plus the copies of every stream it has seen."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.copies: dict[str, StreamCopy] = {}
        self.server: asyncio.Server | None = None
        self.sessions: set[asyncio.Task[None]] = set()
        self.connections_total = 0
        self.unauthenticated = 0
        """Connections holding a Slot: accepted, not yet authenticated (nor closed)."""
        self.refused_busy = 0
        self.listeners: list[socket.socket] = []
        """The listening sockets we accept from ourselves (with TLS)."""
        # One pool for all connections: it runs on the event loop alone (taken by the decoders, given
        # back by the committers once apply() returned), and bounds the free memory once.
        self.payload_pool = BufferPool()

    def copy(self, name: str) -> StreamCopy:
        check_stream_name(name)
        copy = self.copies.get(name)
        if copy is None:
            copy = StreamCopy(name, SegmentStore(self.config.data_dir / name), self.config.replay_for(name))
            self.copies[name] = copy
            copy.replayer.start()
        return copy

    def status(self) -> dict[str, Any]:
        """Return the status snapshot: one row per stream copy."""
        now = time.time()
        return {
            "role": "receiver",
            "node": self.config.node,
            "pid": os.getpid(),
            "copies": [self.copies[name].row(now) for name in sorted(self.copies)],
            # How close the receiver is to refusing new connections (the --max-unauthenticated cap).
            "connections": {
                "total": self.connections_total,
                "unauthenticated": self.unauthenticated,
                "max_unauthenticated": self.config.max_unauthenticated,
                "refused_busy": self.refused_busy,
            },
        }

    async def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one control-channel request: status, suspend, resume, activate."""
        op = request.get("op")
        if op == "status":
            return {"ok": True, **self.status()}
        stream = request.get("stream")
        if not isinstance(stream, str) or (stream not in self.known_streams() and stream not in self.copies):
            return {"ok": False, "error": f"no copy of stream {stream!r} in {self.config.data_dir}"}
        copy = self.copy(stream)
        comment = request.get("comment")
        if op == "suspend":
            await copy.suspend(comment)
            return {"ok": True, "row": copy.row(time.time())}
        if op == "resume":
            await copy.resume(comment)
            return {"ok": True, "row": copy.row(time.time())}
        if op == "activate":
            return {"ok": True, "report": await self.activate(copy, request.get("on_activate"))}
        return {"ok": False, "error": f"unknown op {op!r}"}

    async def activate(self, copy: StreamCopy, on_activate: str | None) -> dict[str, Any]:
        """Stop accepting the stream, wait for its writer to finish the writes in hand, and activate it."""
        copy.activating = True
        owner = copy.owner
        if owner is not None:
            log.warning("stream %s: activation: closing the connection from %s", copy.name, owner.conn.peer)
            owner.conn.writer.close()
        async with copy.lock:
            # The session let go only after its writes in hand were durable: its last ACK is final now.
            acked, acked_sealed = (owner.acked, owner.acked_sealed) if owner is not None else (None, False)
            try:
                return await activate(copy, on_activate, acked, acked_sealed)
            finally:
                copy.activating = False

    def known_streams(self) -> list[str]:
        """Return the streams that have a copy in the data dir, in name order."""
        return existing_streams(self.config.data_dir)

    async def start(self, host: str, port: int) -> tuple[str, int]:
        # Copies already on disk replay from the start, whether or not their shipper comes back.
        for name in self.known_streams():
            self.copy(name)
        loop = asyncio.get_running_loop()
        max_payload = self.config.max_payload
        if self.config.tls is None:
            # A FrameReceiver per connection: the socket writes into the frame decoder's buffers. Its
            # session counts against max_unauthenticated before the first byte is read.
            self.server = await loop.create_server(lambda: FrameReceiver(self._on_connect, max_payload), host, port)
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

    def _accept_ready(self, lsock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(LISTEN_BACKLOG):
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
            self.sessions.add(task)
            task.add_done_callback(self.sessions.discard)

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
                lambda: FrameReceiver(functools.partial(self._on_connect, slot=slot), max_payload),
                sock,
                ssl=tls,
                ssl_handshake_timeout=self.config.handshake_timeout,
            )
            admitted = True
        except (OSError, ssl.SSLError, TimeoutError) as e:
            log.info("%s: TLS handshake failed: %s", peer, e or type(e).__name__)
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

    async def stop(self) -> None:
        """Stop accepting, then let every connection finish its write in hand."""
        if self.server is not None:
            self.server.close()
        self._close_listeners()
        for task in list(self.sessions):
            task.cancel()
        if self.sessions:
            await asyncio.gather(*self.sessions, return_exceptions=True)
        if self.server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):  # not wait_for: see FramedConnection.close
                    await self.server.wait_closed()
        for copy in self.copies.values():
            await copy.replayer.stop()
            copy.store.close_manifest()

    async def _on_connect(self, conn: FramedConnection, slot: Slot | None = None) -> None:
        task = asyncio.current_task()
        assert task is not None
        if slot is None:
            # A plain TCP connection: it takes its slot now, before a byte is read.
            self.connections_total += 1
            if self.unauthenticated >= self.config.max_unauthenticated:
                self._refuse(conn.writer.transport.abort)
                return
            slot = Slot(self)
        self.sessions.add(task)
        try:
            await self._session(conn, slot)
        except asyncio.CancelledError:
            pass
        finally:
            slot.release()
            self.sessions.discard(task)
            await conn.close()

    async def _session(self, conn: FramedConnection, slot: Slot) -> None:
        attachments: dict[str, Attachment] = {}
        try:
            try:
                attachments = await self._handshake(conn)
            finally:
                slot.release()
            if attachments:
                await self._serve(conn, attachments)
        except ProtocolError as e:
            log.warning("%s: %s (%s); closing", conn.peer, e, e.code)
            with contextlib.suppress(Exception):
                conn.send(Error(e.code, str(e)))
        except TimeoutError:
            log.warning("%s: timed out; closing", conn.peer)
        except ConnectionClosed as e:
            log.info("%s: connection closed: %s", conn.peer, e)
        finally:
            for att in attachments.values():
                await att.detach()
                if att.copy.owner is att:
                    att.copy.owner = None
                att.copy.lock.release()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):  # not wait_for: see FramedConnection.close
                    await conn.drain()

    async def _handshake(self, conn: FramedConnection) -> dict[str, Attachment]:
        hs = ReceiverHandshake(self.config.node, os.urandom(32), self.config.secret_for)
        conn.send(hs.challenge())
        await conn.drain()
        hello = await conn.recv(self.config.handshake_timeout)
        accepted = hs.receive_hello(hello)
        attachments: dict[str, Attachment] = {}
        resumes: list[StreamResume] = []
        try:
            for claim in accepted:
                copy = self.copy(claim.stream)
                if copy.failed:
                    raise RemoteProtocolError(f"stream {copy.name} is Failed: {copy.failed}", code="failed")
                if copy.activated:
                    # The copy is a primary now: no shipper writes into it any more, whatever epoch it claims.
                    log.error(
                        "%s: refused stream %s: activated at epoch %d (fenced; epoch claimed %d)",
                        conn.peer,
                        copy.name,
                        copy.epoch,
                        claim.epoch,
                    )
                    conn.send(Fenced(copy.name, copy.epoch))
                    return attachments
                if claim.epoch < copy.epoch:
                    log.error(
                        "%s: refused stream %s: epoch %d is older than %d (fenced)",
                        conn.peer,
                        copy.name,
                        claim.epoch,
                        copy.epoch,
                    )
                    conn.send(Fenced(copy.name, copy.epoch))
                    return attachments
                if copy.owner is not None:
                    log.info(
                        "stream %s: new connection from %s takes over from %s",
                        copy.name,
                        conn.peer,
                        copy.owner.conn.peer,
                    )
                    copy.owner.conn.writer.close()
                async with asyncio.timeout(self.config.handshake_timeout):
                    await copy.lock.acquire()
                try:
                    if copy.activated:
                        # Activated while we waited for the lock.
                        copy.lock.release()
                        conn.send(Fenced(copy.name, copy.epoch))
                        return attachments
                    if claim.epoch > copy.epoch:
                        copy.state["epoch"] = claim.epoch
                        await copy.save_state()
                    rec = await asyncio.get_running_loop().run_in_executor(None, copy.store.recover)
                except BaseException:
                    copy.lock.release()
                    raise
                if rec.discarded:
                    log.warning(
                        "stream %s: cut %d unverified bytes from the tail of %s", copy.name, rec.discarded, rec.active
                    )
                if rec.active is not None:
                    durable, sealed = Position(rec.active, rec.offset), False
                else:
                    durable, sealed = Position(rec.last_sealed, rec.last_sealed_size), True
                ingest = Ingest(rec.last_sealed, rec.active, rec.offset, rec.hasher)
                att = Attachment(copy, conn, ingest, durable, sealed, self.config.max_pending, self.payload_pool)
                copy.owner = att
                copy.attached_once = True
                attachments[copy.name] = att
                resumes.append(hs.resume(copy.name, copy.epoch, durable, sealed))
                log.info(
                    "stream %s: %s attached, resuming at %s%s",
                    copy.name,
                    conn.peer,
                    durable,
                    " (sealed)" if sealed else "",
                )
            # Announce every payload encoding we decode; accept compressed DATA only in one both listed.
            conn.decoder.encodings = agreed(hs.features, ENCODINGS)
            conn.decoder.pool = self.payload_pool
            conn.send(hs.welcome(resumes, ENCODINGS))
            for att in attachments.values():
                # Tell the shipper at once what is already replayed: its retention waits for that, and
                # an idle stream would otherwise send no ACK to carry it (e.g. replay caught up while
                # detached).
                if att.copy.replayed_position != START:
                    conn.send(Ack(att.copy.name, att.acked, att.acked_sealed, att.copy.replayed_position))
            await conn.drain()
        except BaseException:
            # Also when the peer vanished while we answered: the streams must not stay locked to a
            # connection that is gone (every later shipper would time out waiting for the lock).
            for att in attachments.values():
                await att.detach()
                att.copy.owner = None
                att.copy.lock.release()
            raise
        return attachments

    async def _serve(self, conn: FramedConnection, attachments: dict[str, Attachment]) -> None:
        while True:
            for att in attachments.values():
                if att.error is not None:
                    return
                if not att.room.is_set():
                    await att.room.wait()
            msg = await conn.recv(self.config.idle_timeout)
            if isinstance(msg, Data | Seal):
                att = attachments.get(msg.stream)
                if att is None:
                    raise RemoteProtocolError(f"stream {msg.stream} was not named in HELLO", code="bad-stream")
                if not await self._ingest(conn, att, msg):
                    return
            elif isinstance(msg, Heartbeat):
                conn.send(Heartbeat())
            elif isinstance(msg, Error):
                log.warning("%s: peer reported %s: %s", conn.peer, msg.code, msg.text)
                return
            else:
                raise RemoteProtocolError(f"unexpected {type(msg).__name__} after handshake", code="bad-type")
            if conn.writer.transport.get_write_buffer_size() > 1 << 20:
                await conn.drain()

    async def _ingest(self, conn: FramedConnection, att: Attachment, msg: Message) -> bool:
        copy = att.copy
        if isinstance(msg, Data):
            copy.bytes_received += len(msg.payload)
            outcome = att.ingest.on_data(msg)
        else:
            assert isinstance(msg, Seal)
            outcome = att.ingest.on_seal(msg)
        if outcome.verdict is Verdict.ACCEPT:
            att.submit(outcome.ops)
        elif outcome.verdict is Verdict.RESEND:
            copy.resends += 1
            log.warning(
                "stream %s: %s at %s; asking for a resend (resends so far: %d)",
                copy.name,
                outcome.reason,
                outcome.resend_from,
                copy.resends,
            )
            if outcome.ops:
                att.submit(outcome.ops)
            assert outcome.resend_from is not None
            conn.send(Nack(copy.name, outcome.resend_from, outcome.reason))
        elif outcome.verdict is Verdict.FAIL:
            log.error("stream %s: Failed: %s; keeping everything received so far", copy.name, outcome.reason)
            copy.state["failed"] = outcome.reason
            await copy.save_state()
            conn.send(Error("failed", f"stream {copy.name} Failed: {outcome.reason}"))
            return False
        return True


def existing_streams(data_dir: Path) -> list[str]:
    """Return the names of the stream copies under ``data_dir`` (directories with a log/), in name order."""
    try:
        entries = list(os.scandir(data_dir))
    except FileNotFoundError:
        return []
    return sorted(
        e.name for e in entries if e.is_dir() and STREAM_NAME.fullmatch(e.name) and os.path.isdir(Path(e.path) / "log")
    )
