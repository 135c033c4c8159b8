"""Message types of the logship wire protocol.

Messages are frozen, slotted dataclasses. ``to_header()`` turns one into the msgpack header map that
goes on the wire; ``from_header()`` turns an untrusted header map back into a message and raises
``RemoteProtocolError`` for anything that is not exactly right. Nothing outside this module sees a raw
dict from the network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from protocol import fields
from protocol.digest import fields_digest
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.handshake import MAX_STREAMS_PER_HELLO as MAX_STREAMS_PER_HELLO  # re-exported
from protocol.handshake import NONCE_SIZE as NONCE_SIZE
from protocol.handshake import PROOF_SIZE, Challenge, Hello, Welcome
from protocol.handshake import StreamClaim as StreamClaim
from protocol.handshake import StreamResume as StreamResume
from protocol.position import START as START  # re-exported: callers import it from here
from protocol.position import Position
from protocol.seed import SEED_MESSAGES, SeedAck, SeedOffer, SeedWant

# -- messages ------------------------------------------------------------------------------


REWRITE: str = "rewrite"
"""The HELLO/WELCOME feature of DATA frames flagged ``rw``: both ends must list it before one is sent."""


@dataclass(frozen=True, slots=True)
class Data:
    """A chunk of a segment: ``payload`` belongs at ``offset`` of ``segment``; ``digest`` is xxh3_64.

    With ``rewrite`` (header ``rw``, sent only once both ends listed the ``rewrite`` feature) the chunk
    replaces bytes the receiver already holds of the segment it is writing: the source rewrote them
    after they were shipped (MariaDB's in-use flag at offset 21, cleared at rotation). An end that does
    not know the flag reads a plain DATA at the wrong offset and refuses it.
    """

    TYPE: ClassVar[str] = "DATA"
    stream: str
    segment: str
    offset: int
    digest: int
    payload: bytes = field(repr=False)
    rewrite: bool = False

    def to_header(self) -> dict[str, Any]:
        h = {
            "t": self.TYPE,
            "stream": self.stream,
            "seg": self.segment,
            "off": self.offset,
            "len": len(self.payload),
            "xxh": self.digest,
        }
        if self.rewrite:
            h["rw"] = True
        return h

    @classmethod
    def from_header(cls, h: Mapping[str, Any], payload: bytes = b"") -> Data:
        return cls(
            fields.stream(h),
            fields.segment(h),
            fields.integer(h, "off"),
            fields.integer(h, "xxh", 0, (1 << 64) - 1),
            payload,
            # Only ever True on the wire: a DATA without it is a plain one.
            "rw" in h and fields.boolean(h, "rw"),
        )

    @property
    def end(self) -> Position:
        return Position(self.segment, self.offset + len(self.payload))


@dataclass(frozen=True, slots=True)
class Seal:
    """The segment is complete at ``size`` bytes; ``digest`` is its seal digest (protocol.digest.seal_digest:
    xxh3_128 over its name, size and the xxh3_128 of all its bytes)."""

    TYPE: ClassVar[str] = "SEAL"
    stream: str
    segment: str
    size: int
    digest: bytes

    def to_header(self) -> dict[str, Any]:
        return {"t": self.TYPE, "stream": self.stream, "seg": self.segment, "size": self.size, "xxh": self.digest}

    @classmethod
    def from_header(cls, h: Mapping[str, Any]) -> Seal:
        return cls(fields.stream(h), fields.segment(h), fields.integer(h, "size"), fields.octets(h, "xxh", 16))


@dataclass(frozen=True, slots=True)
class Ack:
    """Receiver -> shipper: everything up to ``position`` is durable (fsynced).

    ``sealed`` means ``position.segment`` is sealed and verified in log/. ``replayed`` is the
    replay position where the receiver knows it (else the empty START position). On the wire an
    ``xxh`` field (``fields_digest`` of all the others) goes with it; a header whose fields do not
    match it is refused, so a damaged ACK never moves what the shipper counts as acknowledged.
    """

    TYPE: ClassVar[str] = "ACK"
    stream: str
    position: Position
    sealed: bool
    replayed: Position = START

    def to_header(self) -> dict[str, Any]:
        return {
            "t": self.TYPE,
            "stream": self.stream,
            "seg": self.position.segment,
            "off": self.position.offset,
            "sealed": self.sealed,
            "rseg": self.replayed.segment,
            "roff": self.replayed.offset,
            "xxh": self._digest(),
        }

    def _digest(self) -> int:
        p, r = self.position, self.replayed
        return fields_digest(self.TYPE, self.stream, p.segment, p.offset, int(self.sealed), r.segment, r.offset)

    @classmethod
    def from_header(cls, h: Mapping[str, Any]) -> Ack:
        ack = cls(
            fields.stream(h),
            Position(fields.segment(h, allow_empty=True), fields.integer(h, "off")),
            fields.boolean(h, "sealed"),
            Position(fields.segment(h, "rseg", allow_empty=True), fields.integer(h, "roff")),
        )
        if fields.integer(h, "xxh", hi=(1 << 64) - 1) != ack._digest():
            raise RemoteProtocolError("ACK digest mismatch", code=ErrorCode.BAD_DIGEST)
        return ack


@dataclass(frozen=True, slots=True)
class Nack:
    """Receiver -> shipper: discard what is in flight and resend from ``position``.

    Carries an ``xxh`` like ACK: a damaged NACK could send the shipper back to the wrong place.
    """

    TYPE: ClassVar[str] = "NACK"
    stream: str
    position: Position
    reason: str

    def to_header(self) -> dict[str, Any]:
        return {
            "t": self.TYPE,
            "stream": self.stream,
            "seg": self.position.segment,
            "off": self.position.offset,
            "reason": self.reason,
            "xxh": self._digest(),
        }

    def _digest(self) -> int:
        return fields_digest(self.TYPE, self.stream, self.position.segment, self.position.offset, self.reason)

    @classmethod
    def from_header(cls, h: Mapping[str, Any]) -> Nack:
        nack = cls(fields.stream(h), Position(fields.segment(h), fields.integer(h, "off")), fields.text(h, "reason"))
        if fields.integer(h, "xxh", hi=(1 << 64) - 1) != nack._digest():
            raise RemoteProtocolError("NACK digest mismatch", code=ErrorCode.BAD_DIGEST)
        return nack


@dataclass(frozen=True, slots=True)
class SourceHead:
    """What a shipper tells the receiver about its source, so the copy's side can show a copy queue."""

    position: Position
    """The source's newest segment and its size."""
    queue_segments: int
    """Segments the source has that this receiver has not acknowledged (the shipper's COPY QUEUE)."""
    queue_bytes: int
    """Bytes of that queue."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Either way: the link is alive. From a shipper it may carry one stream's source head (optional
    fields: old ends ignore them, new ends accept a HEARTBEAT without them) under that stream's key."""

    TYPE: ClassVar[str] = "HEARTBEAT"
    stream: str | None = None
    head: SourceHead | None = None

    def to_header(self) -> dict[str, Any]:
        h: dict[str, Any] = {"t": self.TYPE}
        if self.stream is not None and self.head is not None:
            h["stream"] = self.stream
            h["head"] = self.head.position.segment
            h["hoff"] = self.head.position.offset
            h["qseg"] = self.head.queue_segments
            h["qbytes"] = self.head.queue_bytes
        return h

    @classmethod
    def from_header(cls, h: Mapping[str, Any]) -> Heartbeat:
        if "stream" not in h:
            return cls()
        head = SourceHead(
            Position(fields.segment(h, "head", allow_empty=True), fields.integer(h, "hoff")),
            fields.integer(h, "qseg"),
            fields.integer(h, "qbytes"),
        )
        return cls(fields.stream(h), head)


@dataclass(frozen=True, slots=True)
class Error:
    """Either way: a fatal problem; the sender closes the connection after it."""

    TYPE: ClassVar[str] = "ERROR"
    code: str
    text: str
    holder: str = ""
    """With ``another-shipper``: the ``sid`` (HELLO's, ``PID.RANDOM/N``) of the shipper that holds the
    stream, so that a shipper can tell its own process from another without reading ``text``. On the
    wire only when not empty; older receivers never send it (the shipper then does not tell)."""

    def to_header(self) -> dict[str, Any]:
        h: dict[str, Any] = {"t": self.TYPE, "code": self.code, "text": self.text}
        if self.holder:
            h["holder"] = self.holder
        return h

    @classmethod
    def from_header(cls, h: Mapping[str, Any]) -> Error:
        return cls(fields.text(h, "code", 64), fields.text(h, "text"), fields.sid(h, "holder"))


@dataclass(frozen=True, slots=True)
class Fenced:
    """Receiver -> shipper: the stream was activated at ``epoch``; this shipper may not write it.

    ``proof`` is the receiver's HMAC over the stream, the epoch and both nonces: a FENCED that does not
    carry the stream's secret is never believed (it would stop shipping to that address).
    """

    TYPE: ClassVar[str] = "FENCED"
    stream: str
    epoch: int
    proof: bytes = field(default=b"", repr=False)

    def to_header(self) -> dict[str, Any]:
        return {"t": self.TYPE, "stream": self.stream, "epoch": self.epoch, "proof": self.proof}

    @classmethod
    def from_header(cls, h: Mapping[str, Any]) -> Fenced:
        return cls(fields.stream(h), fields.integer(h, "epoch"), fields.octets(h, "proof", PROOF_SIZE))


Message = Challenge | Hello | Welcome | Data | Seal | Ack | Nack | Heartbeat | Error | Fenced
Message = Message | SeedWant | SeedOffer | SeedAck  # issue 17: protocol/seed.py

M = TypeVar("M")
MESSAGE_TYPES: dict[str, Callable[[Mapping[str, Any]], Message]] = {
    cls.TYPE: cls.from_header  # type: ignore[attr-defined]
    for cls in (Challenge, Hello, Welcome, Seal, Ack, Nack, Heartbeat, Error, Fenced, *SEED_MESSAGES)
}
PAYLOAD_TYPES = frozenset({Data.TYPE})
