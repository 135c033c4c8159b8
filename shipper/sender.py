"""One sender per target: connect, authenticate, resume at the target's durable position, and keep a
window of unacknowledged bytes in flight.

``TargetSender.run()`` is the loop: it reconnects with back-off after any cut and stops for good only
when the target fences the stream. Each connection runs two loops: the send loop asks
``shipper.source.next_step()`` what comes next at the window's cursor and reads it with a
``SegmentReader``; the read loop hands ACKs and NACKs to the pure ``SendWindow`` (shipper/window.py),
which checks them and says when the window opened or where to rewind.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from logship.admin.wording import resume_text, shipper_failure
from logship.tasks import first_to_end
from protocol.aio import ConnectionClosed, FramedConnection
from protocol.compression import PayloadCompressor, agreed
from protocol.digest import seal_digest
from protocol.errors import ProtocolError
from protocol.handshake import same_process
from protocol.messages import Fenced, Position, Seal, StreamResume
from protocol.session import ShipperHandshake
from shipper.chunks import DataSender
from shipper.handshake import (
    BACK_OFF_CODES,
    TOLD_TO_WAIT,
    Fenced_,
    Reconnect,
    Refused,
    beyond_source,
    handshake,
    sender_id,
)
from shipper.pacing import AdaptiveWindow, TokenBucket, rate_limited_chunk
from shipper.replies import Replies
from shipper.rewrite import TrackingReader, rewrite_agreed, seal_content
from shipper.seed import send_seed
from shipper.settings import SenderConfig
from shipper.source import Open, SegmentReader, SendData, SendSeal, SourceError, Stuck, next_step
from shipper.status import TargetState, TargetStats, heartbeat
from shipper.tailer import Tailer, on_grid
from shipper.window import ChunkSizer, SendWindow, adaptive_window

log = logging.getLogger("shipper")

TIMER_SLACK = 0.01
"""Seconds a timer may fire before its monotonic deadline and still count as due (uvloop's timers run in
whole milliseconds from the loop's cached clock): else an early wake-up waits a second time for the rest."""


class TargetSender(Replies):
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
        self.send_window = SendWindow(adaptive_window(self.config))
        cfg = self.config
        self._bucket = (
            TokenBucket(cfg.rate_limit, max(64 * 1024, cfg.rate_limit * 0.02)) if cfg.rate_limit is not None else None
        )
        self._chunks = ChunkSizer(rate_limited_chunk(cfg.chunk_size, cfg.rate_limit))
        # --seal closed: remember what was sent, to rewrite at sealing what the writer changed since.
        closed = tailer.policy.mode == "closed"
        self._reader = (TrackingReader if closed else SegmentReader)(Path(tailer.source))
        self._stuck_reported = ""
        self._was_healthy = False
        self._hs: ShipperHandshake | None = None
        self._refusals = 0
        """Permanent-looking refusals in a row (reset by a proven WELCOME): they lengthen the pause."""
        self._told_code = ""
        self._told_to_wait = 0
        """"Not now" answers (disk full, another shipper) since the last ACK that moved: the pause grows."""
        self.on_progress: Callable[[], None] | None = None
        """Called whenever the target's durable or replayed position moves (retention listens)."""
        self.shipper_id = sender_id()
        """This sender's id in HELLO (the process's, then /N): kept across its reconnects."""

    @property
    def window(self) -> AdaptiveWindow:
        """The window's size, as it follows the link."""
        return self.send_window.size

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Ship until fenced or cancelled, reconnecting after every failure."""
        pause = 0.1
        while True:
            try:
                await self._connect_and_ship()
            except asyncio.CancelledError:
                raise
            except Fenced_:
                return
            except Refused as e:
                if e.code in BACK_OFF_CODES:
                    await self._told_to_back_off(e.code, str(e), e.holder)
                    pause = 0.1
                    continue
                if e.permanent:
                    await self._pause_refused(str(e))
                    pause = 0.1
                    continue
                self._failed_attempt(str(e))
            except (OSError, ConnectionClosed, ProtocolError, TimeoutError, SourceError, Reconnect) as e:
                text = shipper_failure(e, self.tls is not None)  # TLS errors in the words of their fix
                if isinstance(e, TimeoutError) and not str(e):
                    # Say what went quiet: status shows this text as the target's failure reason.
                    text = "no answer from the target in time (connect, handshake or ACK timeout)"
                self._failed_attempt(text)
            finally:
                self._reader.close()
            if self.state not in (TargetState.FAILED, TargetState.REFUSED):
                self.state = TargetState.DISCONNECTED
            if self._was_healthy:
                pause = 0.1
            await asyncio.sleep(pause * random.uniform(0.8, 1.2))
            pause = min(pause * 2, self.config.backoff_max if self.state is not TargetState.FAILED else 30.0)

    def _failed_attempt(self, text: str) -> None:
        if text != self.stats.last_error or self.state is TargetState.HEALTHY:
            log.warning("target %s (stream %s): %s; reconnecting", self.name, self.stream, text)
        self.stats.last_error = text

    async def _pause_refused(self, text: str) -> None:
        """Show the refusal as the target's state (logged once per change) and wait before retrying.

        The pause starts at 5 s and doubles with every refusal in a row up to ``refused_backoff``: the
        refusal is unproven (a damaged HELLO also reads as a wrong secret), so the first retry comes
        soon, and a refusal that stays costs one attempt every few minutes.
        """
        if self.state is not TargetState.REFUSED or text != self.stats.last_error:
            log.error(
                "target %s (stream %s): refused: %s; retrying after a growing pause (up to %gs)",
                self.name,
                self.stream,
                text,
                self.config.refused_backoff,
            )
        self.state = TargetState.REFUSED
        self.stats.last_error = text
        self._reader.close()
        self._refusals += 1
        pause = min(self.config.refused_backoff, 5.0 * 2 ** (self._refusals - 1))
        await asyncio.sleep(pause * random.uniform(0.9, 1.1))

    async def _told_to_back_off(self, code: str, text: str, holder: str = "") -> None:
        """The target said "not now" (its disk is full, another shipper has the stream): show Retrying
        with the reason and a count, and wait a pause that doubles up to its cap (jittered,
        so that many shippers of one full receiver do not come back together)."""
        self._told_to_wait += 1
        n = self._told_to_wait
        first, cap, told_at = TOLD_TO_WAIT.get(code, (1.0, 10.0, 1))
        pause = min(cap, first * 2 ** (n - 1)) * random.uniform(0.8, 1.2)
        if n == told_at or (told_at == 1 and code != self._told_code):
            args = (self.name, self.stream, text, cap)
            if code == "another-shipper" and same_process(holder, self.shipper_id):
                # Not a shipper left running: this very process, through another of its targets.
                log.error(
                    "target %s (stream %s): %s; that is this shipper, through another target: the config "
                    "ships one stream twice to one receiver (two addresses of it); remove one of the two "
                    "targets (this one waits, pauses up to %gs)",
                    *args,
                )
            else:
                log.warning("target %s (stream %s): %s; backing off (pauses up to %gs)", *args)
        else:
            log.debug("target %s (stream %s): %s x%d; next try in %.1fs", self.name, self.stream, text, n, pause)
        self._told_code = code
        self.state = TargetState.RETRYING
        self.stats.last_error = f"{text} x{n}, next try in {pause:.0f}s"
        self._reader.close()
        await asyncio.sleep(pause)

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
            self._refusals = 0
            self.stats.connects += 1
            if resume.seed:  # issue 17: the target is Seeding; this connection carries its base image
                self.state = TargetState.SEEDING
                await send_seed(self, conn)
                return
            self._start_at(resume)
            self.state = TargetState.HEALTHY
            self._was_healthy = True
            log.info(
                "target %s (stream %s): connected, %s",
                self.name,
                self.stream,
                resume_text(resume.position.segment, resume.position.offset, resume.sealed),
            )
            await first_to_end(
                asyncio.create_task(self._read_loop(conn), name=f"acks-{self.name}"),
                asyncio.create_task(self._send_loop(conn), name=f"send-{self.name}"),
            )
        finally:
            await conn.close()

    async def _handshake(self, conn: FramedConnection) -> StreamResume:
        cfg = self.config
        try:
            hs, result = await handshake(conn, self.node, self.stream, self.secret, self.epoch, cfg, self.shipper_id)
        except Refused as e:
            if e.code == "failed":
                self.state = TargetState.FAILED
            raise
        self._hs = hs
        conn.compressor = None
        if cfg.compression is not None:
            if agreed((cfg.compression.encoding,), hs.peer_features):
                conn.compressor = PayloadCompressor(cfg.compression)
            elif self.stats.connects == 0:
                log.warning(
                    "target %s does not decode %s payloads; shipping uncompressed", self.name, cfg.compression.encoding
                )
        if isinstance(result, Fenced):
            self.state = TargetState.FENCED
            self.stats.last_error = f"fenced: epoch {result.epoch} there (activated or fenced)"
            log.error(
                "target %s: stream %s is at epoch %d there (activated or fenced); "
                "this shipper is fenced and stops shipping to it",
                self.name,
                self.stream,
                result.epoch,
            )
            raise Fenced_()
        if result.epoch > self.epoch:
            self.epoch = result.epoch
        beyond = beyond_source(result.position, self.tailer.names, self.tailer.by_name)
        if beyond:
            raise Reconnect(f"the target's WELCOME names {result.position}, {beyond}")
        return result

    def _start_at(self, resume: StreamResume) -> None:
        pos = resume.position
        self.stats.stuck = ""
        self.send_window.start_at((pos, resume.sealed))
        self.stats.acked, self.stats.acked_sealed = pos, resume.sealed
        self.stats.acked_at = time.time()
        self.stats.known = True
        self.stats.replayed = None
        if resume.sealed and pos.segment and pos.segment != self.stats.last_copied:
            self.stats.last_copied, self.stats.last_copied_at = pos.segment, None
        if self.on_progress is not None:
            self.on_progress()
        if not resume.sealed:
            self._reader.seek(pos)
            return
        info = self.tailer.by_name.get(pos.segment) if pos.segment else None
        if info is not None and info.sealed and info.size != pos.offset:
            log.error(
                "target %s: sealed segment %s has %d bytes in the copy but %d on the source; the "
                "source changed after it was shipped; the copy keeps its version",
                self.name,
                pos.segment,
                pos.offset,
                info.size,
            )

    # -- sending --------------------------------------------------------------------------------

    async def _send_loop(self, conn: FramedConnection) -> None:
        cfg = self.config
        window = self.send_window
        chunks = DataSender(conn, self._reader, self.stream)
        loop = asyncio.get_running_loop()
        last_sent = last_head = time.monotonic()
        while True:
            # The source head goes to the receiver every heartbeat interval, busy or not, so the copy's
            # side shows its copy queue during a catch-up too.
            if time.monotonic() - last_head >= cfg.heartbeat:
                conn.send(heartbeat(self.stream, self.tailer.segments, self.tailer.names, self.stats))
                # It also serves as the idle heartbeat: an idle stream sent two back to back, each answered.
                last_sent = last_head = time.monotonic()
            rewound = window.take_rewind()
            if rewound is not None:
                self._reader.seek(rewound)
            if window.full:
                self._wake.clear()
                await conn.drain()
                await self._wait_woken(loop, cfg.heartbeat)
                continue
            step = next_step(self.tailer, window.cursor, self._chunks.size)
            if isinstance(step, SendData):
                if await self._send_data(conn, chunks, step):
                    last_sent = time.monotonic()
            elif isinstance(step, SendSeal):
                content = self._reader.digest()
                if self.tailer.policy.mode == "closed":
                    agreed = rewrite_agreed(self._hs)
                    content = await seal_content(self._reader, conn, self.stream, step, agreed, self.stats)
                digest = seal_digest(step.segment, step.size, content)
                conn.send(Seal(self.stream, step.segment, step.size, digest))
                window.on_seal_sent()
                self._reader.close()
                last_sent = time.monotonic()
                await conn.drain()
            elif isinstance(step, Open):
                window.open(step.segment)
                self._reader.seek(Position(step.segment, 0))
            else:
                self.stats.stuck = step.reason if isinstance(step, Stuck) else ""
                if isinstance(step, Stuck) and step.reason != self._stuck_reported:
                    self._stuck_reported = step.reason
                    log.error("target %s (stream %s): stuck: %s", self.name, self.stream, step.reason)
                # Cleared before the drain, the only await since next_step() looked: a change or an ACK
                # that comes while the drain waits is not lost.
                self._wake.clear()
                await conn.drain()
                # Due on the shared wake grid: idle streams whose heartbeats fall due close together send them in one
                # wake-up of the loop (see shipper/tailer.py WAKE_GRID), each at most 1/8 interval early.
                due = on_grid(last_sent + cfg.heartbeat, cfg.heartbeat)
                now = time.monotonic()
                if now >= due - TIMER_SLACK:
                    conn.send(heartbeat(self.stream, self.tailer.segments, self.tailer.names, self.stats))
                    last_sent = last_head = now
                    continue
                await self._wait_woken(loop, due - now)

    async def _wait_woken(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        """Wait until the wake event is set or ``seconds`` passed: a timer that sets the event, not
        asyncio.timeout, whose expiry cancels the task and unwinds a TimeoutError through it (on
        uvloop 11 us against 4 us a wait; every idle heartbeat interval ended that way)."""
        timer = loop.call_later(seconds, self._wake.set)
        try:
            await self._wake.wait()
        finally:
            timer.cancel()

    async def _send_data(self, conn: FramedConnection, chunks: DataSender, step: SendData) -> bool:
        """Send one DATA frame; return False if the source had fewer bytes than the tailer saw."""
        wire = await chunks.send(step)
        if wire is None:
            # The file got shorter than the tailer saw; look again.
            await asyncio.sleep(self.tailer.poll_interval)
            return False
        self.stats.bytes_wire += wire
        self.send_window.on_data_sent(step.length, time.monotonic())
        self.stats.bytes_sent += step.length
        if conn.writer.transport.get_write_buffer_size() > self.config.chunk_size * 2:
            await conn.drain()
        if self._bucket is not None:
            # Sent first, then paid for: the average never exceeds the limit, and a chunk is
            # never held back once read and hashed.
            pause = self._bucket.reserve(wire, time.monotonic())
            if pause > 0:
                await asyncio.sleep(pause)
        return True
