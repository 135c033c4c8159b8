"""The send window towards one target: the cursor, what is in flight, and what the target acknowledged.

Pure, like aioquic's ``QuicPacketRecovery``: sends and acknowledgements go in, decisions come out, and
time comes in as ``now``. No socket, no clock, no asyncio. ``TargetSender`` feeds it what it sent and
what the target answered; a unit test feeds it the same with a fake clock.

Positions are ``AckKey`` pairs (position, sealed), which order like the log: all of a segment's bytes,
then its SEAL, then the next segment. An ACK beyond what was sent on this connection, or behind what
the target already acknowledged, breaks the protocol (``ProtocolError``): the sender starts over from
the target's disk. A NACK rewinds the cursor to where the target wants bytes again.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from protocol.errors import ProtocolError
from protocol.messages import Position
from shipper.pacing import AdaptiveWindow
from shipper.settings import SenderConfig

AckKey = tuple[Position, bool]
"""A durable position and whether its segment is sealed in the copy; orders like the log."""

START: AckKey = (Position("", 0), True)


@dataclass(slots=True)
class Cursor:
    """The next byte to send: ``segment`` at ``offset``; ``sealed`` once its SEAL went out."""

    segment: str
    offset: int
    sealed: bool


def adaptive_window(config: SenderConfig) -> AdaptiveWindow:
    """Return the window size ``config`` asks for: adaptive between its bounds, or fixed."""
    if config.adaptive:
        lo = min(config.window_min, config.window)
        return AdaptiveWindow(config.window, lo, max(config.window_max, config.window))
    return AdaptiveWindow(config.window, config.window, config.window)


class SendWindow:
    """Track the bytes and SEALs sent to one target until it acknowledges them."""

    def __init__(self, size: AdaptiveWindow) -> None:
        self.size = size
        """How many bytes may be in flight (it follows the link; see shipper/pacing.py)."""
        self.cursor = Cursor("", 0, True)
        self.acked: AckKey = START
        """The target's durable position, as it last said."""
        self.sent_max: AckKey = START
        """The furthest position sent on this connection (or resumed at): no honest ACK goes beyond it."""
        self.in_flight_bytes = 0
        self._in_flight: collections.deque[tuple[AckKey, int]] = collections.deque()
        self._rewind: Position | None = None

    @property
    def full(self) -> bool:
        """Whether no more bytes may go out before an acknowledgement."""
        return self.in_flight_bytes >= self.size.window

    @property
    def rewind_due(self) -> bool:
        return self._rewind is not None

    def start_at(self, resume: AckKey) -> None:
        """Begin a connection at ``resume``, the target's durable position: nothing is in flight."""
        pos, sealed = resume
        self._in_flight.clear()
        self.in_flight_bytes = 0
        self.sent_max = resume
        self.acked = resume
        self._rewind = None
        self.size.restart()
        self.cursor = Cursor(pos.segment, pos.offset, sealed)

    def open(self, segment: str) -> None:
        """Move the cursor to the start of ``segment``, the one after the sealed one it was at."""
        self.cursor = Cursor(segment, 0, False)

    def on_data_sent(self, nbytes: int, now: float) -> None:
        """``nbytes`` of the cursor's segment went out at ``now``, from the cursor on."""
        self.cursor.offset += nbytes
        self._track((Position(self.cursor.segment, self.cursor.offset), False), nbytes)
        self.size.on_send(nbytes, now)

    def on_seal_sent(self) -> None:
        """The cursor's segment was sealed at the cursor's offset."""
        self.cursor.sealed = True
        self._track((Position(self.cursor.segment, self.cursor.offset), True), 0)

    def _track(self, key: AckKey, nbytes: int) -> None:
        self._in_flight.append((key, nbytes))
        if key > self.sent_max:
            self.sent_max = key
        self.in_flight_bytes += nbytes

    def on_ack(self, key: AckKey, now: float) -> bool:
        """Take the target's durable position ``key``; return whether it moved.

        Raises ProtocolError if ``key`` is beyond what was sent or behind what was acknowledged.
        """
        if key > self.sent_max:
            # The ACK frame's digest matched, so this is no line noise: still, never count as durable
            # what we did not send.
            raise ProtocolError(f"ACK at {key[0]} is beyond what was sent ({self.sent_max[0]})")
        if key < self.acked:
            raise ProtocolError(f"ACK at {key[0]} is behind the acknowledged {self.acked[0]}")
        if key == self.acked:
            # The same durable position again: the ACK only carries news of replay.
            return False
        self.acked = key
        acked = 0
        while self._in_flight and self._in_flight[0][0] <= key:
            _, n = self._in_flight.popleft()
            acked += n
        self.in_flight_bytes -= acked
        self.size.on_ack(acked, now)
        return True

    def on_nack(self, position: Position) -> None:
        """Note that the target wants everything from ``position`` again; ``take_rewind()`` carries it out.

        Raises ProtocolError if ``position`` is beyond what was sent.
        """
        if (position, False) > self.sent_max:
            raise ProtocolError(f"resend requested from {position}, beyond what was sent ({self.sent_max[0]})")
        if (position, False) < self.acked:
            # The target dropped bytes it had acknowledged (a segment that failed its SEAL digest went to
            # quarantine): they are acknowledged again as they are resent.
            self.acked = (position, False)
        self._rewind = position

    def take_rewind(self) -> Position | None:
        """Rewind to the position the last NACK asked for, if one is due, and return it.

        What was sent before it stays in flight (the target holds it); what was sent after it is
        forgotten, to be sent again.
        """
        pos, self._rewind = self._rewind, None
        if pos is None:
            return None
        key = (pos, False)
        self._in_flight = collections.deque(item for item in self._in_flight if item[0] <= key)
        self.in_flight_bytes = sum(n for _, n in self._in_flight)
        self.size.restart(in_flight=self.in_flight_bytes)
        self.cursor = Cursor(pos.segment, pos.offset, False)
        return pos


MIN_CHUNK = 64 * 1024


class ChunkSizer:
    """How large the next DATA chunk may be: halved after each chunk-digest NACK, down to 64 KiB, and
    doubled back after ``clean`` ACKs in a row, so a link that damages a byte per MiB still gets through.
    """

    def __init__(self, full: int, clean: int = 8) -> None:
        self.full = full
        self.size = full
        self.clean = clean
        self._clean_acks = 0

    @property
    def shrunk(self) -> bool:
        return self.size < self.full

    def on_damage(self) -> None:
        self.size = max(min(MIN_CHUNK, self.full), self.size // 2)
        self._clean_acks = 0

    def on_clean_ack(self) -> None:
        if not self.shrunk:
            return
        self._clean_acks += 1
        if self._clean_acks >= self.clean:
            self.size = min(self.full, self.size * 2)
            self._clean_acks = 0
