"""What a target says back to a sender (ACK, NACK, ERROR, FENCED) and what each does to it: the read
loop of one connection, a mixin of ``TargetSender`` (shipper/sender.py) kept apart for size."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from protocol.aio import FramedConnection
from protocol.messages import Ack, Error, Fenced, Heartbeat, Nack
from protocol.session import ShipperHandshake
from shipper.handshake import Fenced_, Reconnect
from shipper.settings import SenderConfig
from shipper.status import TargetState, TargetStats, newest_copied
from shipper.superseded import SUPERSEDED, Supersessions
from shipper.tailer import Tailer
from shipper.window import ChunkSizer, SendWindow

log = logging.getLogger("shipper")


class Replies:
    """The read side of ``TargetSender``: the attributes it uses are the sender's."""

    stream: str
    name: str
    config: SenderConfig
    state: TargetState
    stats: TargetStats
    tailer: Tailer
    send_window: SendWindow
    on_progress: Callable[[], None] | None
    _chunks: ChunkSizer
    _wake: asyncio.Event
    _supersessions: Supersessions
    _hs: ShipperHandshake | None

    # -- receiving ------------------------------------------------------------------------------

    async def _read_loop(self, conn: FramedConnection) -> None:
        while True:
            msg = await conn.recv(self.config.ack_timeout)
            if isinstance(msg, Ack):
                self._on_ack(msg)
            elif isinstance(msg, Nack):
                if msg.position.segment not in self.tailer.by_name:
                    # Never rewind to a place we cannot read from: start over from the target's disk.
                    raise Reconnect(f"resend requested from {msg.position}, which the source does not hold")
                self.send_window.on_nack(msg.position)
                self.stats.resends += 1
                if msg.reason == "chunk digest mismatch":
                    self._chunks.on_damage()
                    self.state = TargetState.RETRYING
                    self.stats.last_error = f"chunk digest mismatch x{self.stats.resends}, chunks {self._chunks.size}"
                args = (self.name, self.stream, msg.position, msg.reason, self.stats.resends, self._chunks.size)
                log.warning("target %s (stream %s): resend from %s requested: %s (resends: %d, chunk %d)", *args)
                self._wake.set()
            elif isinstance(msg, Heartbeat):
                pass
            elif isinstance(msg, Error):
                if msg.code == SUPERSEDED:
                    raise self._supersessions.note(msg.text, time.monotonic())
                if msg.code == "failed":
                    self.state = TargetState.FAILED
                    log.error("target %s (stream %s): the copy is Failed: %s", self.name, self.stream, msg.text)
                raise Reconnect(f"target reported {msg.code}: {msg.text}")
            elif isinstance(msg, Fenced):
                assert self._hs is not None
                self._hs.check_fenced(msg)  # the frame's tag already vouches for it; the proof must too
                self.state = TargetState.FENCED
                self.stats.last_error = f"fenced: epoch {msg.epoch} there (activated or fenced)"
                log.error("target %s: stream %s is at epoch %d there; fenced", self.name, self.stream, msg.epoch)
                raise Fenced_()
            else:
                raise Reconnect(f"unexpected {type(msg).__name__} from the target")

    def _on_ack(self, ack: Ack) -> None:
        if ack.stream != self.stream:
            raise Reconnect(f"ACK for unknown stream {ack.stream}")
        replay_moved = ack.replayed != self.stats.replayed
        self.stats.replayed = ack.replayed
        key = (ack.position, ack.sealed)
        # An ACK the window refuses (beyond what was sent, or going back) raises ProtocolError: the
        # connection ends and the next one starts over from what the receiver says in its WELCOME.
        if not self.send_window.on_ack(key, time.monotonic()):
            if replay_moved and self.on_progress is not None:
                self.on_progress()
            return
        if ack.sealed:
            self.stats.segments_sealed += 1
        self._chunks.on_clean_ack()
        if self.state is TargetState.RETRYING and not self._chunks.shrunk:
            self.state = TargetState.HEALTHY
        copied = newest_copied(self.tailer.names, key)
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
        self._wake.set()
        if self.on_progress is not None:
            self.on_progress()
