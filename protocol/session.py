"""Handshake state machines for both ends, free of I/O and of the clock.

The receiver speaks first with a CHALLENGE carrying a fresh nonce. The shipper answers with HELLO:
the version it chose, its own nonce, and for each stream an HMAC-SHA256 proof over both nonces made
with that stream's secret. The receiver checks every proof before it accepts a single DATA frame and
answers WELCOME with, per stream, the resume position and a proof of its own, so the shipper knows
it talks to a receiver that holds the secret too (a fake one could otherwise claim a resume
position that makes the shipper skip data).

Rule 1: everything that moves a handshake from one state to the next is in this file, in the two
tables ``RECEIVER_MOVES`` and ``SHIPPER_MOVES``; a method whose event the table does not allow in the
current state raises LocalProtocolError before it looks at its input. A peer's bad message raises a
RemoteProtocolError and leaves the state where it was: the caller closes the connection.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from protocol.auth import (
    PAYLOAD_MAC,
    PAYLOAD_MAC_GMAC,
    TO_RECEIVER,
    TO_SHIPPER,
    DirectionKeys,
    FrameOpener,
    FrameSealer,
)
from protocol.errors import AuthenticationFailed, ErrorCode, LocalProtocolError, RemoteProtocolError, VersionMismatch
from protocol.history import History
from protocol.messages import NONCE_SIZE, Challenge, Fenced, Hello, Position, StreamClaim, StreamResume, Welcome

VERSIONS: tuple[int, ...] = (3,)
"""3: every frame after WELCOME carries a tag under a session key (protocol/auth.py), FENCED carries a
proof, WELCOME answers every claimed stream. 2: SEAL carries the seal digest, ACK and NACK ``xxh``. An
older peer is refused at the handshake with VersionMismatch, never half understood."""
_DOMAIN = b"logship/1"


def make_proof(
    secret: bytes, role: bytes, server_nonce: bytes, client_nonce: bytes, node: str, stream: str, bound: str = ""
) -> bytes:
    """Return HMAC-SHA256 binding the role, both nonces, the shipper's node id, the stream, and ``bound``.

    ``bound`` carries the fields the proof vouches for (the claimed epoch; the resume position), so a
    relay cannot rewrite them without the proof failing.
    """
    msg = b"|".join((_DOMAIN, role, server_nonce, client_nonce, node.encode(), stream.encode(), bound.encode()))
    return hmac.new(secret, msg, hashlib.sha256).digest()


def _claim_fields(epoch: int, history: History) -> str:
    # Without a history the text is what it was before histories existed: older shippers' proofs hold.
    text = history.proof_text()
    return f"epoch={epoch}" + (f";history={text}" if text else "")


def _resume_fields(epoch: int, position: Position, sealed: bool, cut: int = 0, seed: bool = False) -> str:
    fields = f"epoch={epoch};seg={position.segment};off={position.offset};sealed={int(sealed)}"
    return fields + (f";cut={cut}" if cut else "") + (";seed=1" if seed else "")


def _fenced_fields(epoch: int) -> str:
    return f"fenced;epoch={epoch}"


class HandshakeState(enum.Enum):
    START = "start"
    WAIT_HELLO = "wait-hello"
    WAIT_WELCOME = "wait-welcome"
    DONE = "done"


class Event(enum.Enum):
    """What a handshake can be asked to do."""

    SEND_CHALLENGE = "send CHALLENGE"
    ACCEPT_HELLO = "accept HELLO"
    SEND_WELCOME = "send WELCOME"
    ANSWER_CHALLENGE = "answer CHALLENGE"
    ACCEPT_WELCOME = "accept WELCOME"
    ACCEPT_FENCED = "accept FENCED"


Moves = dict[tuple[HandshakeState, Event], HandshakeState]

RECEIVER_MOVES: Moves = {
    (HandshakeState.START, Event.SEND_CHALLENGE): HandshakeState.WAIT_HELLO,
    (HandshakeState.WAIT_HELLO, Event.ACCEPT_HELLO): HandshakeState.DONE,
    (HandshakeState.DONE, Event.SEND_WELCOME): HandshakeState.DONE,
}
"""The receiver's legal moves: (state, event) -> next state."""

SHIPPER_MOVES: Moves = {
    (HandshakeState.START, Event.ANSWER_CHALLENGE): HandshakeState.WAIT_WELCOME,
    (HandshakeState.WAIT_WELCOME, Event.ACCEPT_WELCOME): HandshakeState.DONE,
    # A FENCED for one stream comes before the WELCOME for the others.
    (HandshakeState.WAIT_WELCOME, Event.ACCEPT_FENCED): HandshakeState.WAIT_WELCOME,
}
"""The shipper's legal moves: (state, event) -> next state."""


def next_state(moves: Moves, state: HandshakeState, event: Event, refusal: str) -> HandshakeState:
    """Return the state ``event`` leads to from ``state``.

    Raises LocalProtocolError with ``refusal`` if the table does not allow it.
    """
    try:
        return moves[(state, event)]
    except KeyError:
        raise LocalProtocolError(refusal) from None


@dataclass(frozen=True, slots=True)
class Accepted:
    """One stream whose proof checked out, with the epoch the shipper claimed and its history."""

    stream: str
    epoch: int
    history: History = field(default_factory=History)
    """The forks the shipper sent (proven with the claim); empty from a shipper that sends none."""


class ReceiverHandshake:
    """The receiver's side: issue a challenge, check a HELLO, build the WELCOME.

    ``secret_for(stream)`` returns the stream's secret, or None if the stream is unknown here.
    """

    def __init__(self, node: str, nonce: bytes, secret_for: Callable[[str], bytes | None]) -> None:
        if len(nonce) != NONCE_SIZE:
            raise LocalProtocolError("nonce must be 32 bytes")
        self.node = node
        self.nonce = nonce
        self._secret_for = secret_for
        self.state = HandshakeState.START
        self.version = 0
        self.peer_node = ""
        self.peer_shipper = ""
        """The shipper process's id from its HELLO ("" from an older shipper)."""
        self._peer_nonce = b""
        self._secrets: dict[str, bytes] = {}
        self.features: tuple[str, ...] = ()

    def challenge(self) -> Challenge:
        self.state = next_state(RECEIVER_MOVES, self.state, Event.SEND_CHALLENGE, "challenge already sent")
        return Challenge(VERSIONS, self.nonce, self.node)

    def receive_hello(self, hello: object) -> list[Accepted]:
        """Check a HELLO; return the streams it proved.

        Raises RemoteProtocolError if it is not a HELLO, VersionMismatch, or AuthenticationFailed if
        any stream's proof is wrong or the stream is unknown (one bad proof refuses all: a shipper
        that is wrong about one secret is misconfigured).
        """
        done = next_state(
            RECEIVER_MOVES, self.state, Event.ACCEPT_HELLO, f"not waiting for HELLO (state {self.state.value})"
        )
        if not isinstance(hello, Hello):
            raise RemoteProtocolError(f"expected HELLO, got {type(hello).__name__}", code=ErrorCode.BAD_TYPE)
        if hello.version not in VERSIONS:
            raise VersionMismatch(f"version {hello.version} not among {VERSIONS}")
        if not hello.streams:
            raise RemoteProtocolError("HELLO names no stream", code=ErrorCode.BAD_FRAME)
        if hello.nonce == self.nonce:
            raise AuthenticationFailed("peer echoed our nonce")
        names = [c.stream for c in hello.streams]
        if len(set(names)) != len(names):
            raise RemoteProtocolError("HELLO names a stream twice", code=ErrorCode.BAD_FRAME)
        accepted = []
        for claim in hello.streams:
            secret = self._secret_for(claim.stream)
            if secret is None:
                raise AuthenticationFailed(f"stream {claim.stream!r} is not served here")
            history = History.from_wire(claim.history)
            bound = _claim_fields(claim.epoch, history)
            want = make_proof(secret, b"shipper", self.nonce, hello.nonce, hello.node, claim.stream, bound)
            if not hmac.compare_digest(want, claim.proof):
                raise AuthenticationFailed(f"wrong proof for stream {claim.stream!r}")
            if history.epoch > claim.epoch:
                raise RemoteProtocolError(
                    f"stream {claim.stream!r}: history reaches epoch {history.epoch} beyond the claimed {claim.epoch}",
                    code=ErrorCode.BAD_FRAME,
                )
            accepted.append(Accepted(claim.stream, claim.epoch, history))
            self._secrets[claim.stream] = secret
        self.version = hello.version
        self.peer_node = hello.node
        self.peer_shipper = hello.shipper
        self._peer_nonce = hello.nonce
        self.features = hello.features
        self.state = done
        return accepted

    def resume(
        self, stream: str, epoch: int, position: Position, sealed: bool, cut: int = 0, seed: bool = False
    ) -> StreamResume:
        """Build one stream's WELCOME entry, proving we hold its secret too; ``cut``: bytes rewound;
        ``seed``: the copy is Seeding (protocol/seed.py)."""
        next_state(RECEIVER_MOVES, self.state, Event.SEND_WELCOME, "handshake not complete")
        secret = self._secret_for(stream)
        if secret is None:
            raise LocalProtocolError(f"no secret for {stream!r}")
        proof = make_proof(
            secret,
            b"receiver",
            self.nonce,
            self._peer_nonce,
            self.peer_node,
            stream,
            _resume_fields(epoch, position, sealed, cut, seed),
        )
        return StreamResume(stream, epoch, position, sealed, proof, cut, seed)

    def fenced(self, stream: str, epoch: int) -> Fenced:
        """Build the FENCED that tells the shipper ``stream`` is at ``epoch``, with our proof."""
        next_state(RECEIVER_MOVES, self.state, Event.SEND_WELCOME, "handshake not complete")
        secret = self._secrets.get(stream)
        if secret is None:
            raise LocalProtocolError(f"stream {stream!r} was not accepted in this handshake")
        proof = make_proof(
            secret, b"receiver", self.nonce, self._peer_nonce, self.peer_node, stream, _fenced_fields(epoch)
        )
        return Fenced(stream, epoch, proof)

    def welcome(self, resumes: Iterable[StreamResume], features: tuple[str, ...] = ()) -> Welcome:
        """Build the WELCOME; we always offer the payload MAC (HMAC-SHA256 and GMAC), which the shipper
        uses if it asked for it."""
        self.state = next_state(RECEIVER_MOVES, self.state, Event.SEND_WELCOME, "handshake not complete")
        offered = (*features, *(f for f in (PAYLOAD_MAC, PAYLOAD_MAC_GMAC) if f not in features))
        return Welcome(self.version, self.node, tuple(resumes), offered)

    @property
    def payload_mac(self) -> bool:
        """Whether DATA of this session carries a payload MAC (the shipper asked for it)."""
        return PAYLOAD_MAC in self.features

    @property
    def payload_gmac(self) -> bool:
        """Whether that payload MAC is GMAC (the shipper listed ``pmac-gmac`` too, and we always offer it)."""
        return self.payload_mac and PAYLOAD_MAC_GMAC in self.features

    def frame_auth(self) -> tuple[FrameSealer, FrameOpener]:
        """Return the sealer of what we send and the opener of what we receive, once WELCOME is built.

        Raises LocalProtocolError before the handshake is complete.
        """
        if self.state is not HandshakeState.DONE:
            raise LocalProtocolError("handshake not complete")
        keys = (self._secrets, self.nonce, self._peer_nonce, self.node, self.peer_node)
        send = DirectionKeys.derive(keys[0], TO_SHIPPER, *keys[1:])
        recv = DirectionKeys.derive(keys[0], TO_RECEIVER, *keys[1:])
        return FrameSealer(send, self.payload_mac, self.payload_gmac), FrameOpener(
            recv, self.payload_mac, self.payload_gmac
        )


class ShipperHandshake:
    """The shipper's side: answer a CHALLENGE, check the WELCOME."""

    def __init__(
        self,
        node: str,
        nonce: bytes,
        secrets: Mapping[str, bytes],
        epochs: Mapping[str, int],
        features: tuple[str, ...] = (),
        histories: Mapping[str, History] | None = None,
        shipper: str = "",
    ) -> None:
        if len(nonce) != NONCE_SIZE:
            raise LocalProtocolError("nonce must be 32 bytes")
        self.node = node
        self.shipper = shipper
        """This shipper process's id, sent in HELLO (tells a restart from a second live shipper)."""
        self.nonce = nonce
        self._secrets = dict(secrets)
        self._epochs = dict(epochs)
        self._histories = dict(histories or {})
        self.features = features
        self.state = HandshakeState.START
        self._server_nonce = b""
        self._receiver_node = ""
        self._fenced: set[str] = set()
        self._version = 0
        self.peer_features: tuple[str, ...] = ()
        """What the receiver listed in WELCOME (e.g. the payload encodings it decodes)."""

    def receive_challenge(self, challenge: object) -> Hello:
        """Return the HELLO answering ``challenge``.

        Raises RemoteProtocolError if it is not a CHALLENGE, VersionMismatch if no version fits.
        """
        waiting = next_state(SHIPPER_MOVES, self.state, Event.ANSWER_CHALLENGE, "challenge already answered")
        if not isinstance(challenge, Challenge):
            raise RemoteProtocolError(f"expected CHALLENGE, got {type(challenge).__name__}", code=ErrorCode.BAD_TYPE)
        common = set(challenge.versions) & set(VERSIONS)
        if not common:
            raise VersionMismatch(f"receiver speaks {challenge.versions}, we speak {VERSIONS}")
        if challenge.nonce == self.nonce:
            raise AuthenticationFailed("peer echoed our nonce")
        self._server_nonce = challenge.nonce
        self._receiver_node = challenge.node
        claims = tuple(self._claim(stream, secret, challenge.nonce) for stream, secret in self._secrets.items())
        self.state = waiting
        self._version = max(common)
        return Hello(self._version, self.node, self.nonce, claims, self.features, self.shipper)

    def receive_welcome(self, msg: object) -> dict[str, StreamResume | Fenced]:
        """Check the receiver's answer; return, per stream, where to resume or that it is fenced.

        Raises AuthenticationFailed if a resume proof is wrong, RemoteProtocolError for anything
        else that is not a WELCOME.
        """
        done = next_state(SHIPPER_MOVES, self.state, Event.ACCEPT_WELCOME, "not waiting for WELCOME")
        if isinstance(msg, Fenced):
            self.check_fenced(msg)
            self.state = next_state(SHIPPER_MOVES, self.state, Event.ACCEPT_FENCED, "not waiting for WELCOME")
            self._fenced.add(msg.stream)
            return {msg.stream: msg}
        if not isinstance(msg, Welcome):
            raise RemoteProtocolError(f"expected WELCOME, got {type(msg).__name__}", code=ErrorCode.BAD_TYPE)
        result: dict[str, StreamResume | Fenced] = {}
        for resume in msg.streams:
            secret = self._secrets.get(resume.stream)
            if secret is None:
                raise RemoteProtocolError(f"WELCOME for unknown stream {resume.stream!r}", code=ErrorCode.BAD_FRAME)
            want = make_proof(
                secret,
                b"receiver",
                self._server_nonce,
                self.nonce,
                self.node,
                resume.stream,
                _resume_fields(resume.epoch, resume.position, resume.sealed, resume.cut, resume.seed),
            )
            if not hmac.compare_digest(want, resume.proof):
                raise AuthenticationFailed(f"receiver could not prove the secret of {resume.stream!r}")
            result[resume.stream] = resume
        missing = sorted(set(self._secrets) - self._fenced - set(result))
        if missing:
            raise RemoteProtocolError(f"WELCOME does not answer stream {missing[0]!r}", code=ErrorCode.BAD_FRAME)
        if msg.version != self._version:
            raise VersionMismatch(f"receiver answered with version {msg.version}, we chose {self._version}")
        self.peer_features = msg.features
        self.state = done
        return result

    def _claim(self, stream: str, secret: bytes, server_nonce: bytes) -> StreamClaim:
        epoch = self._epochs.get(stream, 0)
        history = self._histories.get(stream, History())
        bound = _claim_fields(epoch, history)
        proof = make_proof(secret, b"shipper", server_nonce, self.nonce, self.node, stream, bound)
        return StreamClaim(stream, epoch, proof, history.to_wire())

    def check_fenced(self, msg: Fenced) -> None:
        """Believe a FENCED only if the receiver proved it with the stream's secret.

        Raises RemoteProtocolError for a stream we did not claim, AuthenticationFailed for a bad proof.
        """
        secret = self._secrets.get(msg.stream)
        if secret is None:
            raise RemoteProtocolError(f"FENCED for unknown stream {msg.stream!r}", code=ErrorCode.BAD_FRAME)
        want = make_proof(
            secret, b"receiver", self._server_nonce, self.nonce, self.node, msg.stream, _fenced_fields(msg.epoch)
        )
        if not hmac.compare_digest(want, msg.proof):
            raise AuthenticationFailed(f"FENCED for stream {msg.stream!r} without the receiver's proof; ignored")

    @property
    def payload_mac(self) -> bool:
        """Whether DATA of this session carries a payload MAC (we asked and the receiver offered it)."""
        return PAYLOAD_MAC in self.features and PAYLOAD_MAC in self.peer_features

    @property
    def payload_gmac(self) -> bool:
        """Whether that payload MAC is GMAC: both ends listed ``pmac-gmac`` (else HMAC-SHA256)."""
        return self.payload_mac and PAYLOAD_MAC_GMAC in self.features and PAYLOAD_MAC_GMAC in self.peer_features

    def frame_auth(self) -> tuple[FrameSealer, FrameOpener]:
        """Return the sealer of what we send and the opener of what we receive, once WELCOME is accepted.

        Raises LocalProtocolError before then.
        """
        if self.state is not HandshakeState.DONE:
            raise LocalProtocolError("handshake not complete")
        keys = (self._server_nonce, self.nonce, self._receiver_node, self.node)
        send = DirectionKeys.derive(self._secrets, TO_RECEIVER, *keys)
        recv = DirectionKeys.derive(self._secrets, TO_SHIPPER, *keys)
        return FrameSealer(send, self.payload_mac, self.payload_gmac), FrameOpener(
            recv, self.payload_mac, self.payload_gmac
        )
