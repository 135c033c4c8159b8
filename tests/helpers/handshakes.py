"""Handshake state machines of both ends, wired to each other through the frame codec with no socket:
the protocol unit tests' link (tests/unit/test_session.py, test_seed_protocol.py)."""

from __future__ import annotations

from collections.abc import Mapping

from protocol.framing import NEED_DATA, FrameDecoder, encode
from protocol.messages import Hello, Message
from protocol.session import ReceiverHandshake, ShipperHandshake

SECRETS = {"db1": b"secret-one", "db2": b"secret-two"}
EPOCHS = {"db1": 3}
RECEIVER_NONCE = bytes([1]) * 32
SHIPPER_NONCE = bytes([2]) * 32


class Pipe:
    """One direction of a connection: messages go in as frames, come out through a FrameDecoder."""

    def __init__(self) -> None:
        self.decoder = FrameDecoder()
        self.sent: list[bytes] = []

    def carry(self, msg: Message) -> Message:
        """Send ``msg`` byte by byte and return what the far end decodes."""
        frame = encode(msg)
        self.sent.append(frame)
        return self.carry_bytes(frame)

    def carry_bytes(self, frame: bytes) -> Message:
        for i in range(len(frame)):
            self.decoder.receive_data(frame[i : i + 1])
        out = self.decoder.next_message()
        assert out is not NEED_DATA
        assert self.decoder.next_message() is NEED_DATA
        return out  # type: ignore[return-value]


class Link:
    """A pair of pipes: receiver -> shipper and shipper -> receiver."""

    def __init__(self) -> None:
        self.to_shipper = Pipe()
        self.to_receiver = Pipe()


def receiver(secrets: Mapping[str, bytes] = SECRETS, nonce: bytes = RECEIVER_NONCE) -> ReceiverHandshake:
    """A receiver's handshake (node receiver-1) that knows ``secrets``."""
    return ReceiverHandshake("receiver-1", nonce, dict(secrets).get)


def shipper(
    secrets: Mapping[str, bytes] = SECRETS,
    nonce: bytes = SHIPPER_NONCE,
    epochs: Mapping[str, int] = EPOCHS,
    features: tuple[str, ...] = (),
) -> ShipperHandshake:
    """A shipper's handshake (node shipper-1) claiming ``epochs`` with ``secrets``."""
    return ShipperHandshake("shipper-1", nonce, secrets, epochs, features)


def hello_for(r: ReceiverHandshake, s: ShipperHandshake, link: Link) -> Hello:
    """Run CHALLENGE -> HELLO over the link; return the HELLO as the receiver decodes it."""
    hello = s.receive_challenge(link.to_shipper.carry(r.challenge()))
    out = link.to_receiver.carry(hello)
    assert isinstance(out, Hello)
    return out
