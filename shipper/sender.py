"""One sender per target: connect, authenticate, resume at the target's durable position, and keep a
window of unacknowledged bytes in flight.

``next_step()`` is the pure decision of what to send next. ``TargetSender.run()`` is the loop around
it: it reconnects with back-off after any cut, rewinds on a NACK, and stops for good only when the
target fences the stream.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import enum
import logging
import os
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from logship.tasks import cancel_and_wait
from protocol.aio import ConnectionClosed, FramedConnection
from protocol.compression import PayloadCompressor, agreed
from protocol.digest import chunk_digest, seal_digest, segment_hasher
from protocol.errors import ProtocolError
from protocol.messages import Ack, Data, Error, Fenced, Heartbeat, Nack, Position, Seal, StreamResume
from protocol.session import ShipperHandshake
from shipper.pacing import AdaptiveWindow, TokenBucket, rate_limited_chunk
from shipper.settings import SenderConfig
from shipper.tailer import SegmentInfo, Tailer

log = logging.getLogger("shipper")


class TargetState(enum.Enum):
    INITIALIZING = "Initializing"
    HEALTHY = "Healthy"
    DISCONNECTED = "Disconnected"
    SUSPENDED = "Suspended"
    FENCED = "Fenced"
    FAILED = "Failed"


@dataclass(slots=True)
class Cursor:
    """The next byte to send: ``segment`` at ``offset``; ``sealed`` once its SEAL went out."""

    segment: str
    offset: int
    sealed: bool


@dataclass(frozen=True, slots=True)
class SendData:
    segment: str
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class SendSeal:
    segment: str
    size: int


@dataclass(frozen=True, slots=True)
class Open:
    segment: str


@dataclass(frozen=True, slots=True)
class Wait:
    pass


@dataclass(frozen=True, slots=True)
class Stuck:
    reason: str


Step = SendData | SendSeal | Open | Wait | Stuck


def next_step(tailer: Tailer, cursor: Cursor, chunk_size: int) -> Step:
    """Decide what to send next from ``cursor`` given the tailer's view of the source."""
    if cursor.sealed:
        nxt: SegmentInfo | None = tailer.first_after(cursor.segment)
        return Wait() if nxt is None else Open(nxt.name)
    info = tailer.by_name.get(cursor.segment)
    if info is None:
        return Stuck(f"segment {cursor.segment} is gone from the source before it was fully shipped")
    if cursor.offset < info.size:
        return SendData(cursor.segment, cursor.offset, min(chunk_size, info.size - cursor.offset))
    if cursor.offset > info.size:
        return Stuck(f"segment {cursor.segment} shrank on the source to {info.size} bytes below {cursor.offset} sent")
    if info.sealed:
        return SendSeal(cursor.segment, info.size)
    return Wait()


@dataclass(slots=True)
class TargetStats:
    """Counters a sender keeps for status and tests."""

    connects: int = 0
    resends: int = 0
    bytes_sent: int = 0
    """Payload bytes sent (uncompressed)."""
    bytes_wire: int = 0
    """Bytes those DATA frames took on the wire (headers included, after compression)."""
    segments_sealed: int = 0
    last_error: str = ""
    acked: Position = field(default_factory=lambda: Position("", 0))
    acked_sealed: bool = True
    acked_at: float = 0.0
    known: bool = False
    """Whether ``acked`` was learnt from this target since the shipper started."""
    replayed: Position | None = None
    """The target's replayed position from its last ACK on this connection; None before one."""
    last_copied: str = ""
    """The newest segment the target acknowledged sealed."""
    last_copied_at: float | None = None
    stuck: str = ""
    """Why shipping to this target cannot go on (e.g. the segment it needs is gone); empty if it can."""


class _Reconnect(Exception):
    """End this connection and try again after a pause."""


class TargetSender:
    """Ship one stream to one target."""

    def __init__(
        self,
        stream: str,
        target: tuple[str, int],
        secret: bytes,
        tailer: Tailer,
        node: str,
        epoch: int = 0,
        config: SenderConfig | None = None,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.stream = stream
        self.tls = tls
        self.target = target
        self.name = f"{target[0]}:{target[1]}"
        self.secret = secret
        self.tailer = tailer
        self.node = node
        self.epoch = epoch
        self.config = config or SenderConfig()
        self.state = TargetState.INITIALIZING
        self.stats = TargetStats()
        # One event wakes the send loop: the tailer sets it when the source changed, ACKs and NACKs when
        # the window opened or a resend is due. (Waiting on two events took two tasks per wake-up, at
        # every append of a trickle.) Whatever woke it, the loop looks at the tailer and the window again.
        self._wake = tailer.subscribe()
        self._in_flight: collections.deque[tuple[tuple[Position, bool], int]] = collections.deque()
        self._sent_max: tuple[Position, bool] = (Position("", 0), True)
        """The furthest position sent on this connection (or resumed at): no honest ACK goes beyond it."""
        self._in_flight_bytes = 0
        cfg = self.config
        if cfg.adaptive:
            lo = min(cfg.window_min, cfg.window)
            self.window = AdaptiveWindow(cfg.window, lo, max(cfg.window_max, cfg.window))
        else:
            self.window = AdaptiveWindow(cfg.window, cfg.window, cfg.window)
        self._bucket = (
            TokenBucket(cfg.rate_limit, max(64 * 1024, cfg.rate_limit * 0.02)) if cfg.rate_limit is not None else None
        )
        self._chunk_size = rate_limited_chunk(cfg.chunk_size, cfg.rate_limit)
        self._rewind: Position | None = None
        self._cursor = Cursor("", 0, True)
        self._hasher: xxhash.xxh3_128 = segment_hasher()
        self._fd = -1
        self._fd_name = ""
        self._stuck_reported = ""
        self._was_healthy = False
        self.on_progress: Callable[[], None] | None = None
        """Called whenever the target's durable or replayed position moves (retention listens)."""

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Ship until fenced or cancelled, reconnecting after every failure."""
        pause = 0.1
        while True:
            try:
                await self._connect_and_ship()
            except asyncio.CancelledError:
                raise
            except _Fenced:
                return
            except (OSError, ConnectionClosed, ProtocolError, TimeoutError, _Reconnect) as e:
                text = str(e) or type(e).__name__
                if isinstance(e, TimeoutError) and not str(e):
                    # Say what went quiet: status shows this text as the target's failure reason.
                    text = "no answer from the target in time (connect, handshake or ACK timeout)"
                if text != self.stats.last_error or self.state is TargetState.HEALTHY:
                    log.warning("target %s (stream %s): %s; reconnecting", self.name, self.stream, text)
                self.stats.last_error = text
            finally:
                self._close_file()
            if self.state is not TargetState.FAILED:
                self.state = TargetState.DISCONNECTED
            if self._was_healthy:
                pause = 0.1
            await asyncio.sleep(pause * random.uniform(0.8, 1.2))
            pause = min(pause * 2, self.config.backoff_max if self.state is not TargetState.FAILED else 30.0)

    async def _connect_and_ship(self) -> None:
        self._was_healthy = False
        cfg = self.config
        async with asyncio.timeout(cfg.connect_timeout):
            reader, writer = await asyncio.open_connection(
                self.target[0],
                self.target[1],
                limit=1 << 20,
                ssl=self.tls,
                # The receiver's certificate must name the host we dialled.
                server_hostname=self.target[0] if self.tls is not None else None,
            )
        conn = FramedConnection(reader, writer)
        try:
            resume = await self._handshake(conn)
            self.stats.connects += 1
            self._start_at(resume)
            self.state = TargetState.HEALTHY
            self._was_healthy = True
            log.info(
                "target %s (stream %s): connected, resuming at %s%s",
                self.name,
                self.stream,
                resume.position,
                " (sealed)" if resume.sealed else "",
            )
            reader_task = asyncio.create_task(self._read_loop(conn), name=f"acks-{self.name}")
            try:
                send_task = asyncio.create_task(self._send_loop(conn), name=f"send-{self.name}")
                done, _ = await asyncio.wait({reader_task, send_task}, return_when=asyncio.FIRST_COMPLETED)
                await cancel_and_wait(*(t for t in (reader_task, send_task) if t not in done))
                for t in done:
                    t.result()
            finally:
                reader_task.cancel()
        finally:
            await conn.close()

    async def _handshake(self, conn: FramedConnection) -> StreamResume:
        cfg = self.config
        wanted = (cfg.compression.encoding,) if cfg.compression else ()
        hs = ShipperHandshake(
            self.node, os.urandom(32), {self.stream: self.secret}, {self.stream: self.epoch}, features=wanted
        )
        challenge = await conn.recv(cfg.connect_timeout)
        if isinstance(challenge, Error):
            raise _Reconnect(f"refused: {challenge.code}: {challenge.text}")
        conn.send(hs.receive_challenge(challenge))
        await conn.drain()
        answer = await conn.recv(cfg.connect_timeout)
        if isinstance(answer, Error):
            if answer.code == "failed":
                self.state = TargetState.FAILED
            raise _Reconnect(f"refused: {answer.code}: {answer.text}")
        result = hs.receive_welcome(answer)[self.stream]
        conn.compressor = None
        if cfg.compression is not None:
            if agreed(wanted, hs.peer_features):
                conn.compressor = PayloadCompressor(cfg.compression)
            elif self.stats.connects == 0:
                log.warning(
                    "target %s does not decode %s payloads; shipping uncompressed", self.name, cfg.compression.encoding
                )
        if isinstance(result, Fenced):
            self.state = TargetState.FENCED
            log.error(
                "target %s: stream %s was activated there at epoch %d; this shipper is fenced and stops shipping to it",
                self.name,
                self.stream,
                result.epoch,
            )
            raise _Fenced()
        if result.epoch > self.epoch:
            self.epoch = result.epoch
        return result

    def _start_at(self, resume: StreamResume) -> None:
        pos = resume.position
        self.stats.stuck = ""
        self._in_flight.clear()
        self._sent_max = (pos, resume.sealed)
        self._in_flight_bytes = 0
        self.window.restart()
        self._rewind = None
        self.stats.acked, self.stats.acked_sealed = pos, resume.sealed
        self.stats.acked_at = time.time()
        self.stats.known = True
        self.stats.replayed = None
        if resume.sealed and pos.segment and pos.segment != self.stats.last_copied:
            self.stats.last_copied, self.stats.last_copied_at = pos.segment, None
        if self.on_progress is not None:
            self.on_progress()
        if resume.sealed:
            self._cursor = Cursor(pos.segment, pos.offset, True)
            if pos.segment:
                info = self.tailer.by_name.get(pos.segment)
                if info is not None and info.sealed and info.size != pos.offset:
                    log.error(
                        "target %s: sealed segment %s has %d bytes in the copy but %d on the source; the "
                        "source changed after it was shipped; the copy keeps its version",
                        self.name,
                        pos.segment,
                        pos.offset,
                        info.size,
                    )
        else:
            self._position_at(pos)

    def _position_at(self, pos: Position) -> None:
        """Put the cursor at ``pos`` inside an unsealed segment, hashing the bytes before it."""
        self._cursor = Cursor(pos.segment, pos.offset, False)
        self._hasher = segment_hasher()
        if pos.offset:
            fd = self._open_file(pos.segment)
            done = 0
            while done < pos.offset:
                block = os.pread(fd, min(4 << 20, pos.offset - done), done)
                if not block:
                    raise _Reconnect(f"segment {pos.segment} on the source is shorter than the copy ({pos.offset})")
                self._hasher.update(block)
                done += len(block)

    # -- files ----------------------------------------------------------------------------------

    def _open_file(self, segment: str) -> int:
        if self._fd_name != segment:
            self._close_file()
            try:
                self._fd = os.open(Path(self.tailer.source) / segment, os.O_RDONLY)
            except FileNotFoundError:
                raise _Reconnect(f"segment {segment} is missing from the source") from None
            self._fd_name = segment
        return self._fd

    def _close_file(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._fd_name = -1, ""

    # -- sending --------------------------------------------------------------------------------

    async def _send_loop(self, conn: FramedConnection) -> None:
        cfg = self.config
        last_sent = time.monotonic()
        while True:
            if self._rewind is not None:
                pos, self._rewind = self._rewind, None
                self._drop_in_flight_after(pos)
                self._position_at(pos)
            if self._in_flight_bytes >= self.window.window:
                self._wake.clear()
                await conn.drain()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(cfg.heartbeat):
                        await self._wake.wait()
                continue
            step = next_step(self.tailer, self._cursor, self._chunk_size)
            if isinstance(step, SendData):
                fd = self._open_file(step.segment)
                payload = os.pread(fd, step.length, step.offset)
                if len(payload) != step.length:
                    # The file got shorter than the tailer saw; look again.
                    await asyncio.sleep(self.tailer.poll_interval)
                    continue
                self._hasher.update(payload)
                digest = chunk_digest(step.segment, step.offset, payload)
                msg = Data(self.stream, step.segment, step.offset, digest, payload)
                if conn.compressor is not None:
                    # zstd releases the GIL: compressing in a worker thread keeps this loop (and every
                    # other stream and target in the process) responsive even at slow, high levels.
                    packed = await asyncio.get_running_loop().run_in_executor(None, conn.compressor.compress, payload)
                    wire = conn.send_packed(msg, packed)
                else:
                    wire = conn.send(msg)
                self.stats.bytes_wire += wire
                self._cursor.offset += step.length
                self._track((Position(step.segment, self._cursor.offset), False), step.length)
                self.stats.bytes_sent += step.length
                last_sent = time.monotonic()
                if conn.writer.transport.get_write_buffer_size() > cfg.chunk_size * 2:
                    await conn.drain()
                if self._bucket is not None:
                    # Sent first, then paid for: the average never exceeds the limit, and a chunk is
                    # never held back once read and hashed.
                    pause = self._bucket.reserve(wire, time.monotonic())
                    if pause > 0:
                        await asyncio.sleep(pause)
            elif isinstance(step, SendSeal):
                conn.send(
                    Seal(
                        self.stream,
                        step.segment,
                        step.size,
                        seal_digest(step.segment, step.size, self._hasher.digest()),
                    )
                )
                self._cursor.sealed = True
                self._track((Position(step.segment, step.size), True), 0)
                self._close_file()
                last_sent = time.monotonic()
                await conn.drain()
            elif isinstance(step, Open):
                self._cursor = Cursor(step.segment, 0, False)
                self._hasher = segment_hasher()
            else:
                self.stats.stuck = step.reason if isinstance(step, Stuck) else ""
                if isinstance(step, Stuck) and step.reason != self._stuck_reported:
                    self._stuck_reported = step.reason
                    log.error("target %s (stream %s): stuck: %s", self.name, self.stream, step.reason)
                # Cleared before the drain, the only await since next_step() looked: a change or an ACK
                # that comes while the drain waits is not lost.
                self._wake.clear()
                await conn.drain()
                idle = cfg.heartbeat - (time.monotonic() - last_sent)
                if idle <= 0:
                    conn.send(Heartbeat())
                    last_sent = time.monotonic()
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(idle):
                        await self._wake.wait()

    def _track(self, key: tuple[Position, bool], nbytes: int) -> None:
        self._in_flight.append((key, nbytes))
        if key > self._sent_max:
            self._sent_max = key
        self._in_flight_bytes += nbytes
        if nbytes:
            self.window.on_send(nbytes, time.monotonic())

    def _drop_in_flight_after(self, pos: Position) -> None:
        key = (pos, False)
        kept = collections.deque(item for item in self._in_flight if item[0] <= key)
        self._in_flight = kept
        self._in_flight_bytes = sum(n for _, n in kept)
        self.window.restart(in_flight=self._in_flight_bytes)

    # -- receiving ------------------------------------------------------------------------------

    async def _read_loop(self, conn: FramedConnection) -> None:
        while True:
            msg = await conn.recv(self.config.ack_timeout)
            if isinstance(msg, Ack):
                self._on_ack(msg)
            elif isinstance(msg, Nack):
                if msg.position.segment not in self.tailer.by_name:
                    # Never rewind to a place we cannot read from: start over from the target's disk.
                    raise _Reconnect(f"resend requested from {msg.position}, which the source does not hold")
                self.stats.resends += 1
                log.warning(
                    "target %s (stream %s): resend from %s requested: %s (resends: %d)",
                    self.name,
                    self.stream,
                    msg.position,
                    msg.reason,
                    self.stats.resends,
                )
                self._rewind = msg.position
                self._wake.set()
            elif isinstance(msg, Heartbeat):
                pass
            elif isinstance(msg, Error):
                if msg.code == "failed":
                    self.state = TargetState.FAILED
                    log.error("target %s (stream %s): the copy is Failed: %s", self.name, self.stream, msg.text)
                raise _Reconnect(f"target reported {msg.code}: {msg.text}")
            elif isinstance(msg, Fenced):
                self.state = TargetState.FENCED
                log.error("target %s: stream %s activated there at epoch %d; fenced", self.name, self.stream, msg.epoch)
                raise _Fenced()
            else:
                raise _Reconnect(f"unexpected {type(msg).__name__} from the target")

    def _on_ack(self, ack: Ack) -> None:
        if ack.stream != self.stream:
            raise _Reconnect(f"ACK for unknown stream {ack.stream}")
        replay_moved = ack.replayed != self.stats.replayed
        self.stats.replayed = ack.replayed
        key = (ack.position, ack.sealed)
        if key > self._sent_max:
            # The ACK frame's digest matched, so this is no line noise: still, never count as durable
            # what we did not send. Start over from what the receiver says in its WELCOME.
            raise _Reconnect(f"ACK at {ack.position} is beyond what was sent ({self._sent_max[0]})")
        if key <= (self.stats.acked, self.stats.acked_sealed):
            if replay_moved and self.on_progress is not None:
                self.on_progress()
            return
        if ack.sealed:
            self.stats.segments_sealed += 1
        # The newest segment sealed in the copy: this one if sealed, else the one before it (one ACK
        # can cover a SEAL and data of the next segment).
        if ack.sealed:
            copied = ack.position.segment
        else:
            i = bisect.bisect_left(self.tailer.names, ack.position.segment)
            copied = self.tailer.names[i - 1] if i > 0 else ""
        if copied > self.stats.last_copied:
            self.stats.last_copied, self.stats.last_copied_at = copied, time.time()
        self.stats.acked, self.stats.acked_sealed = key
        self.stats.acked_at = time.time()
        if log.isEnabledFor(logging.DEBUG):
            # One line per acknowledgement, so a fault test can hold the receiver's disk to every
            # position it ever acknowledged (see tests/faults).
            log.debug(
                "acked stream=%s target=%s seg=%s off=%d sealed=%d",
                self.stream,
                self.name,
                ack.position.segment or "-",
                ack.position.offset,
                int(ack.sealed),
            )
        acked = 0
        while self._in_flight and self._in_flight[0][0] <= key:
            _, n = self._in_flight.popleft()
            acked += n
        self._in_flight_bytes -= acked
        self.window.on_ack(acked, time.monotonic())
        self._wake.set()
        if self.on_progress is not None:
            self.on_progress()


class _Fenced(Exception):
    """The target fenced this stream; stop for good."""
