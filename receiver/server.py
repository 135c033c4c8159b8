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
import logging
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from protocol.aio import ConnectionClosed, FramedConnection
from protocol.compression import ENCODINGS, agreed
from protocol.errors import ProtocolError, RemoteProtocolError
from protocol.framing import DEFAULT_MAX_PAYLOAD
from protocol.messages import Ack, Data, Error, Fenced, Heartbeat, Message, Nack, Position, Seal, StreamResume
from protocol.names import check_stream_name
from protocol.session import ReceiverHandshake
from receiver.ingest import Ingest, Install, Op, Restart, Verdict, Write
from receiver.store import SegmentStore

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
    max_unauthenticated: int = 64
    """Connections still in their handshake, at most; more are closed at once, so that a flood of
    silent or hostile peers cannot exhaust memory or file descriptors while real shippers wait."""
    tls: ssl.SSLContext | None = None
    """TLS for every connection (client certificates required if it has a CA); None: plain TCP."""


class StreamCopy:
    """One stream's copy at this receiver: its store, persisted state, and current writer."""

    def __init__(self, name: str, store: SegmentStore) -> None:
        self.name = name
        self.store = store
        self.state = store.load_state()
        self.lock = asyncio.Lock()
        self.owner: Attachment | None = None
        self.resends = 0
        self.bytes_received = 0

    @property
    def epoch(self) -> int:
        return int(self.state.get("epoch", 0))

    @property
    def failed(self) -> str | None:
        return self.state.get("failed")

    async def save_state(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.store.save_state, dict(self.state))


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
    ) -> None:
        self.copy = copy
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
        loop = asyncio.get_running_loop()
        while True:
            if not self.pending:
                # Checked before every wait, not only after a wake-up: detach() may have set `closing`
                # (and its wake-up been consumed) while the previous batch was being written.
                if self.closing:
                    return
                await self.wake.wait()
                self.wake.clear()
                continue
            ops, self.pending = self.pending, []
            nbytes = sum(len(op.payload) for op in ops if isinstance(op, Write))
            try:
                await loop.run_in_executor(None, self.copy.store.apply, ops)
            except OSError as e:
                self.error = e
                log.error("stream %s: storage failed, acknowledging nothing more: %s", self.copy.name, e)
                self.copy.store.close()
                self.conn.writer.close()
                self.room.set()
                return
            self.pending_bytes -= nbytes
            if self.pending_bytes < self.max_pending:
                self.room.set()
            self._ack_after(ops)

    def _ack_after(self, ops: list[Op]) -> None:
        position, sealed = self.acked, self.acked_sealed
        for op in ops:
            if isinstance(op, Write):
                position, sealed = Position(op.segment, op.offset + len(op.payload)), False
            elif isinstance(op, Install):
                position, sealed = Position(op.segment, op.size), True
                log.info("stream %s: sealed %s (%d bytes)", self.copy.name, op.segment, op.size)
            elif isinstance(op, Restart):
                log.warning("stream %s: %s quarantined: %s", self.copy.name, op.segment, op.reason)
        if (position, sealed) > (self.acked, self.acked_sealed):
            self.acked, self.acked_sealed = position, sealed
            if not self.conn.closing:
                self.conn.send(Ack(self.copy.name, position, sealed))

    async def detach(self) -> None:
        """Finish the writes in hand, make them durable, and stop."""
        self.closing = True
        self.wake.set()
        with contextlib.suppress(Exception):
            await self.task
        self.copy.store.close()


class ReceiverServer:
    """The receiver: a TCP server plus the copies of every stream it has seen."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.copies: dict[str, StreamCopy] = {}
        self.server: asyncio.Server | None = None
        self.sessions: set[asyncio.Task[None]] = set()
        self.connections_total = 0
        self.unauthenticated = 0
        self.refused_busy = 0

    def copy(self, name: str) -> StreamCopy:
        check_stream_name(name)
        copy = self.copies.get(name)
        if copy is None:
            copy = StreamCopy(name, SegmentStore(self.config.data_dir / name))
            self.copies[name] = copy
        return copy

    async def start(self, host: str, port: int) -> tuple[str, int]:
        tls = self.config.tls
        self.server = await asyncio.start_server(
            self._on_connect,
            host,
            port,
            limit=1 << 20,
            ssl=tls,
            ssl_handshake_timeout=self.config.handshake_timeout if tls is not None else None,
        )
        sock = self.server.sockets[0].getsockname()
        return sock[0], sock[1]

    async def stop(self) -> None:
        """Stop accepting, then let every connection finish its write in hand."""
        if self.server is not None:
            self.server.close()
        for task in list(self.sessions):
            task.cancel()
        if self.sessions:
            await asyncio.gather(*self.sessions, return_exceptions=True)
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections_total += 1
        if self.unauthenticated >= self.config.max_unauthenticated:
            # Refuse before reading a byte: the peers already in their handshake keep their slots.
            self.refused_busy += 1
            if self.refused_busy & (self.refused_busy - 1) == 0:
                log.warning(
                    "%s unauthenticated connections already; refused %d so far",
                    self.unauthenticated,
                    self.refused_busy,
                )
            writer.transport.abort()
            return
        self.sessions.add(task)
        conn = FramedConnection(reader, writer, self.config.max_payload)
        try:
            await self._session(conn)
        except asyncio.CancelledError:
            pass
        finally:
            self.sessions.discard(task)
            await conn.close()

    async def _session(self, conn: FramedConnection) -> None:
        attachments: dict[str, Attachment] = {}
        try:
            self.unauthenticated += 1
            try:
                attachments = await self._handshake(conn)
            finally:
                self.unauthenticated -= 1
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
                await asyncio.wait_for(conn.drain(), 1)

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
                att = Attachment(copy, conn, ingest, durable, sealed, self.config.max_pending)
                copy.owner = att
                attachments[copy.name] = att
                resumes.append(hs.resume(copy.name, copy.epoch, durable, sealed))
                log.info(
                    "stream %s: %s attached, resuming at %s%s",
                    copy.name,
                    conn.peer,
                    durable,
                    " (sealed)" if sealed else "",
                )
        except BaseException:
            for att in attachments.values():
                await att.detach()
                att.copy.owner = None
                att.copy.lock.release()
            raise
        # Announce every payload encoding we decode; accept compressed DATA only in one both listed.
        conn.decoder.encodings = agreed(hs.features, ENCODINGS)
        conn.send(hs.welcome(resumes, ENCODINGS))
        await conn.drain()
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
