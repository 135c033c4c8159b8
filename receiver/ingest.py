"""Decide what to do with each DATA and SEAL frame of one stream. No I/O.

``Ingest`` holds the expected next position of a stream's copy and turns frames into ordered storage
operations (``Write``, ``Install``, ``Restart``) or into a resend request. The caller applies the
operations in order, fsyncs, and only then acknowledges.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import xxhash

from protocol.digest import EMPTY_DIGEST, chunk_digest, seal_digest, segment_hasher
from protocol.errors import RemoteProtocolError
from protocol.failures import Kind, classify
from protocol.messages import Data, Position, Seal
from receiver.ops import Install, Op, Restart, Write

MAX_TRIES = 3


class Verdict(enum.Enum):
    ACCEPT = "accept"
    DROP = "drop"
    RESEND = "resend"
    FAIL = "fail"


@dataclass(slots=True)
class Outcome:
    """What one frame led to: the verdict, storage ops to queue, and for RESEND/FAIL the details."""

    verdict: Verdict
    ops: list[Op] = field(default_factory=list)
    resend_from: Position | None = None
    reason: str = ""


class Ingest:
    """Per-stream receive state: where the next byte belongs and how often a segment failed.

    ``last_sealed`` is the newest segment in log/; ``active``/``offset`` the partial segment and its
    size including accepted-but-not-yet-durable bytes; ``hasher`` covers those ``offset`` bytes.
    """

    def __init__(
        self,
        last_sealed: str,
        active: str | None,
        offset: int,
        hasher: xxhash.xxh3_128 | None = None,
        max_tries: int = MAX_TRIES,
    ) -> None:
        self.last_sealed = last_sealed
        self.active = active
        self.offset = offset
        self.hasher = hasher if hasher is not None else segment_hasher()
        self.max_tries = max_tries
        self.awaiting_resend = False
        self._resend_pos = Position("", 0)
        self.failures: dict[str, int] = {}
        self.resends = 0

    @property
    def expected(self) -> Position:
        if self.active is None:
            return Position(self.last_sealed, 0)
        return Position(self.active, self.offset)

    def _resend(self, segment: str, offset: int, reason: str) -> Outcome:
        self.resends += 1
        if classify(reason) is Kind.TRANSIENT:
            # A damaged chunk says nothing about the source: resend it as often as the link needs,
            # never Fail the copy for it (the shipper shrinks its chunks to get through).
            self.awaiting_resend = True
            self._resend_pos = Position(segment, offset)
            return Outcome(Verdict.RESEND, resend_from=Position(segment, offset), reason=reason)
        tries = self.failures.get(segment, 0) + 1
        self.failures[segment] = tries
        if tries >= self.max_tries:
            return Outcome(Verdict.FAIL, reason=f"{segment}: {reason} ({tries} times)")
        self.awaiting_resend = True
        self._resend_pos = Position(segment, offset)
        return Outcome(Verdict.RESEND, resend_from=Position(segment, offset), reason=reason)

    def on_data(self, msg: Data) -> Outcome:
        """Judge one DATA frame.

        Raises RemoteProtocolError if it is out of order in a way no resend explains.
        """
        if self.awaiting_resend:
            if Position(msg.segment, msg.offset) != self._resend_pos:
                return Outcome(Verdict.DROP)
            self.awaiting_resend = False
        if self.active is None:
            if msg.segment <= self.last_sealed:
                raise RemoteProtocolError(
                    f"DATA for {msg.segment}, which is not after the last sealed segment {self.last_sealed}",
                    code="bad-position",
                )
            if msg.offset != 0:
                raise RemoteProtocolError(
                    f"DATA for new segment {msg.segment} starts at offset {msg.offset}, not 0", code="bad-position"
                )
        elif msg.segment != self.active:
            raise RemoteProtocolError(f"DATA for {msg.segment} while {self.active} is not sealed", code="bad-position")
        elif msg.offset != self.offset:
            raise RemoteProtocolError(
                f"DATA for {msg.segment} at offset {msg.offset}, expected {self.offset}", code="bad-position"
            )
        if chunk_digest(msg.segment, msg.offset, msg.payload) != msg.digest:
            if self.active is None:
                # The frame's own segment name may be the damaged part: a resend request naming it
                # could point the shipper at a segment it does not have. Start over from disk instead.
                raise RemoteProtocolError(
                    f"chunk digest mismatch at the start of {msg.segment!r}; reconnect", code="bad-digest"
                )
            return self._resend(msg.segment, msg.offset, "chunk digest mismatch")
        if self.active is None:
            self.active = msg.segment
            self.offset = 0
            self.hasher = segment_hasher()
        self.hasher.update(msg.payload)
        self.offset += len(msg.payload)
        return Outcome(Verdict.ACCEPT, [Write(msg.segment, msg.offset, msg.payload, msg.digest)])

    def on_seal(self, msg: Seal) -> Outcome:
        """Judge one SEAL frame.

        Raises RemoteProtocolError for a SEAL of the wrong segment or at the wrong size.
        """
        if self.awaiting_resend:
            # An empty segment has no DATA to resend: its resent SEAL is what ends the wait.
            if msg.size != 0 or Position(msg.segment, 0) != self._resend_pos:
                return Outcome(Verdict.DROP)
            self.awaiting_resend = False
        fresh = self.active is None
        if fresh:
            if msg.segment <= self.last_sealed:
                raise RemoteProtocolError(
                    f"SEAL for {msg.segment}, which is not after the last sealed segment {self.last_sealed}",
                    code="bad-position",
                )
            if msg.size != 0:
                raise RemoteProtocolError(
                    f"SEAL of {msg.segment} at {msg.size} bytes but none were received", code="bad-size"
                )
        elif msg.segment != self.active:
            raise RemoteProtocolError(f"SEAL for {msg.segment} while {self.active} is open", code="bad-position")
        elif msg.size != self.offset:
            raise RemoteProtocolError(
                f"SEAL of {msg.segment} at {msg.size} bytes but {self.offset} were received", code="bad-size"
            )
        content = EMPTY_DIGEST if fresh else self.hasher.digest()
        if seal_digest(msg.segment, msg.size, content) != msg.digest:
            if fresh:
                # Nothing but this frame names the segment, and the name may be the damaged part: a
                # resend request naming it could point the shipper at a segment it does not have.
                raise RemoteProtocolError(
                    f"seal digest mismatch for empty segment {msg.segment!r}; reconnect", code="bad-digest"
                )
            outcome = self._resend(msg.segment, 0, "segment digest mismatch")
            if outcome.verdict is Verdict.RESEND:
                outcome.ops = [Restart(msg.segment, outcome.reason)]
                self.offset = 0
                self.hasher = segment_hasher()
            return outcome
        ops: list[Op] = []
        if fresh:
            ops.append(Write(msg.segment, 0, b"", chunk_digest(msg.segment, 0, b"")))
        # The manifest keeps the content digest (what replay re-checks from disk), not the seal digest.
        ops.append(Install(msg.segment, msg.size, content, self.last_sealed))
        self.last_sealed = msg.segment
        self.active = None
        self.offset = 0
        self.hasher = segment_hasher()
        self.failures.pop(msg.segment, None)
        return Outcome(Verdict.ACCEPT, ops)
