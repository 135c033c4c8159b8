"""The handshake messages of the logship wire protocol: CHALLENGE, HELLO (with a claim per stream) and
WELCOME (with where each stream resumes). Same rules as protocol/messages.py, which re-exports them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from protocol import fields
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.position import Position

NONCE_SIZE = 32
PROOF_SIZE = 32
MAX_STREAMS_PER_HELLO = 4096


@dataclass(frozen=True, slots=True)
class Challenge:
    """Receiver -> shipper, first frame on a connection: versions spoken and a fresh nonce."""

    TYPE: ClassVar[str] = "CHALLENGE"
    versions: tuple[int, ...]
    nonce: bytes
    node: str

    def to_header(self) -> dict[str, Any]:
        return {"t": self.TYPE, "versions": list(self.versions), "nonce": self.nonce, "node": self.node}

    @classmethod
    def from_header(cls, h: Mapping[str, Any]) -> Challenge:
        versions = fields.items(h, "versions", 16)
        if not versions or not all(type(v) is int and 0 < v < 1 << 16 for v in versions):
            raise RemoteProtocolError("versions must be small positive integers", code=ErrorCode.BAD_FRAME)
        return cls(tuple(versions), fields.octets(h, "nonce", NONCE_SIZE), fields.text(h, "node", 255))


@dataclass(frozen=True, slots=True)
class StreamClaim:
    """One stream a shipper wants to write: the epoch it believes in and its HMAC proof.

    ``history`` lists the forks of the shipper's epochs (protocol/history.py), each as
    (epoch, fork segment or None when unknown, fork offset, digest); the proof binds it. Absent on the
    wire when empty, as older shippers send it.
    """

    stream: str
    epoch: int
    proof: bytes
    history: tuple[fields.WireFork, ...] = ()

    def to_map(self) -> dict[str, Any]:
        m: dict[str, Any] = {"stream": self.stream, "epoch": self.epoch, "proof": self.proof}
        if self.history:
            m["history"] = [list(f) for f in self.history]
        return m

    @classmethod
    def from_map(cls, v: Any) -> StreamClaim:
        m = fields.mapping(v, "stream claim")
        return cls(fields.stream(m), fields.integer(m, "epoch"), fields.octets(m, "proof", PROOF_SIZE), fields.forks(m))


MAX_SHIPPER_ID = 64


def sender_id(process: str, n: int) -> str:
    """Return HELLO's ``sid`` of the ``n``th sender of shipper process ``process`` (``PID.RANDOM/N``)."""
    return f"{process}/{n}"


def same_process(a: str, b: str) -> bool:
    """Return whether two ``sid`` values (``PID.RANDOM/N``: one per sender) are of one shipper process."""
    return "/" in a and "/" in b and a.split("/", 1)[0] == b.split("/", 1)[0]


@dataclass(frozen=True, slots=True)
class Hello:
    """Shipper -> receiver: the chosen version, who it is, and a proof per stream.

    ``shipper`` is the shipper process's own id (new at every start), which tells a restarted shipper
    from a second live one of the same node. Optional and additive: absent on the wire when empty (as
    older shippers send it), ignored by older receivers, and not bound by the proofs (they bind the
    node; an older receiver's proof check must still pass). A relay that rewrites it can only make
    the receiver refuse or take over a connection, which cutting the connection does as well.
    """

    TYPE: ClassVar[str] = "HELLO"
    version: int
    node: str
    nonce: bytes
    streams: tuple[StreamClaim, ...]
    features: tuple[str, ...] = ()
    shipper: str = ""

    def to_header(self) -> dict[str, Any]:
        h = {
            "t": self.TYPE,
            "version": self.version,
            "node": self.node,
            "nonce": self.nonce,
            "streams": [s.to_map() for s in self.streams],
            "features": list(self.features),
        }
        if self.shipper:
            h["sid"] = self.shipper
        return h

    @classmethod
    def from_header(cls, h: Mapping[str, Any]) -> Hello:
        streams = tuple(StreamClaim.from_map(s) for s in fields.items(h, "streams", MAX_STREAMS_PER_HELLO))
        return cls(
            fields.integer(h, "version", 1, (1 << 16) - 1),
            fields.text(h, "node", 255),
            fields.octets(h, "nonce", NONCE_SIZE),
            streams,
            fields.features(h),
            fields.text(h, "sid", MAX_SHIPPER_ID) if "sid" in h else "",
        )


@dataclass(frozen=True, slots=True)
class StreamResume:
    """Where a shipper resumes one stream: the receiver's durable position and its own proof.

    ``sealed`` says whether ``position.segment`` is already sealed in the copy (then the shipper
    continues with the next segment); otherwise ``position.offset`` bytes of it are durable.
    """

    stream: str
    epoch: int
    position: Position
    sealed: bool
    proof: bytes
    cut: int = 0
    """Bytes the receiver rewound (moved to quarantine/) past the fork of the shipper's epoch; on the
    wire only when not 0, bound by the proof."""
    seed: bool = False
    """The copy is Seeding: this connection carries its base image (protocol/seed.py) instead of
    segments. On the wire only when true (only to a shipper that listed the ``seed`` feature), bound by
    the proof."""

    def to_map(self) -> dict[str, Any]:
        m = {
            "stream": self.stream,
            "epoch": self.epoch,
            "seg": self.position.segment,
            "off": self.position.offset,
            "sealed": self.sealed,
            "proof": self.proof,
        }
        if self.cut:
            m["cut"] = self.cut
        if self.seed:
            m["seed"] = True
        return m

    @classmethod
    def from_map(cls, v: Any) -> StreamResume:
        m = fields.mapping(v, "stream resume")
        return cls(
            fields.stream(m),
            fields.integer(m, "epoch"),
            Position(fields.segment(m, allow_empty=True), fields.integer(m, "off")),
            fields.boolean(m, "sealed"),
            fields.octets(m, "proof", PROOF_SIZE),
            fields.integer(m, "cut") if "cut" in m else 0,
            fields.boolean(m, "seed") if "seed" in m else False,
        )


@dataclass(frozen=True, slots=True)
class Welcome:
    """Receiver -> shipper: authentication accepted; where each stream resumes."""

    TYPE: ClassVar[str] = "WELCOME"
    version: int
    node: str
    streams: tuple[StreamResume, ...]
    features: tuple[str, ...] = ()

    def to_header(self) -> dict[str, Any]:
        return {
            "t": self.TYPE,
            "version": self.version,
            "node": self.node,
            "streams": [s.to_map() for s in self.streams],
            "features": list(self.features),
        }

    @classmethod
    def from_header(cls, h: Mapping[str, Any]) -> Welcome:
        streams = tuple(StreamResume.from_map(s) for s in fields.items(h, "streams", MAX_STREAMS_PER_HELLO))
        return cls(
            fields.integer(h, "version", 1, (1 << 16) - 1), fields.text(h, "node", 255), streams, fields.features(h)
        )
