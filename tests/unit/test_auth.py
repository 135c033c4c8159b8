"""Frames after the handshake: a SessionPair drives both ends with no socket (h11's ConnectionPair).

Every authenticated frame type, flipped in any bit of its header or tag, replayed, swapped with its
neighbour, dropped or injected, is refused with a RemoteProtocolError and changes no state of the
receiving end (its sequence number stays where it was).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.auth import TAG_SIZE, TO_RECEIVER, TO_SHIPPER, DirectionKeys, FrameAuthFailed, FrameSealer, session_key
from protocol.errors import RemoteProtocolError
from protocol.framing import NEED_DATA, FrameDecoder, encode
from protocol.messages import START, Ack, Data, Error, Fenced, Heartbeat, Message, Nack, Position, Seal, SourceHead
from protocol.session import ReceiverHandshake, ShipperHandshake
from tests.helpers.frames import drain, refused

SECRETS = {"db1": b"secret-one-0123456789", "db2": b"secret-two-0123456789"}
SEG = "000000010000000000000003"
R_NONCE, S_NONCE = bytes([1]) * 32, bytes([2]) * 32


class SessionPair:
    """A receiver and a shipper that finished their handshake, each with a decoder for what it gets."""

    def __init__(
        self, payload_mac: bool = False, secrets: dict[str, bytes] = SECRETS, receiver_nonce: bytes = R_NONCE
    ) -> None:
        self.r = ReceiverHandshake("receiver-1", receiver_nonce, secrets.get)
        features = ("pmac",) if payload_mac else ()
        self.s = ShipperHandshake("shipper-1", S_NONCE, secrets, {}, features)
        hello = self.s.receive_challenge(self.r.challenge())
        self.r.receive_hello(hello)
        welcome = self.r.welcome([self.r.resume(name, 0, START, True) for name in secrets])
        self.s.receive_welcome(welcome)
        self.r_seal, self.r_open = self.r.frame_auth()
        self.s_seal, self.s_open = self.s.frame_auth()
        self.at_receiver = FrameDecoder()
        self.at_receiver.opener = self.r_open
        self.at_shipper = FrameDecoder()
        self.at_shipper.opener = self.s_open

    def to_receiver(self, msg: Message) -> bytes:
        return encode(msg, sealer=self.s_seal)

    def to_shipper(self, msg: Message) -> bytes:
        return encode(msg, sealer=self.r_seal)


SHIPPER_FRAMES: list[Message] = [
    Data("db1", SEG, 0, 7, b"payload bytes"),
    Seal("db1", SEG, 13, bytes(16)),
    Heartbeat(),
    Heartbeat("db1", SourceHead(Position(SEG, 13), 1, 13)),
    Error("protocol", "bye"),
]
RECEIVER_FRAMES: list[Message] = [
    Ack("db1", Position(SEG, 13), False, START),
    Nack("db2", Position(SEG, 0), "chunk digest mismatch"),
    Heartbeat(),
    Error("failed", "stream db1 is Failed"),
    Fenced("db1", 4, bytes(32)),
]


def test_both_ends_derive_the_same_keys_and_directions_differ() -> None:
    p = SessionPair()
    assert p.s_seal.keys == p.r_open.keys
    assert p.r_seal.keys == p.s_open.keys
    assert p.s_seal.keys.streams["db1"] != p.r_seal.keys.streams["db1"]
    assert p.s_seal.keys.streams["db1"] != p.s_seal.keys.streams["db2"]


def test_session_key_binds_every_input() -> None:
    base = (b"secret", TO_RECEIVER, R_NONCE, S_NONCE, "r", "s", "db1")
    key = session_key(*base)
    for i in range(len(base)):
        changed = list(base)
        changed[i] = TO_SHIPPER if i == 1 else (b"x" if isinstance(base[i], bytes) else "x")
        assert session_key(*changed) != key, f"input {i} not bound"


@pytest.mark.parametrize("msg", SHIPPER_FRAMES, ids=lambda m: type(m).__name__)
def test_shipper_frames_pass_in_order(msg: Message) -> None:
    p = SessionPair()
    assert drain(p.at_receiver, p.to_receiver(msg) + p.to_receiver(msg)) == [msg, msg]
    assert p.r_open.sequence == 2


@pytest.mark.parametrize("msg", RECEIVER_FRAMES, ids=lambda m: type(m).__name__)
def test_receiver_frames_pass_in_order(msg: Message) -> None:
    p = SessionPair()
    assert drain(p.at_shipper, p.to_shipper(msg)) == [msg]


@pytest.mark.parametrize("msg", SHIPPER_FRAMES + RECEIVER_FRAMES, ids=lambda m: type(m).__name__)
def test_any_flipped_bit_in_header_or_tag_is_refused(msg: Message) -> None:
    probe = SessionPair()
    frame = probe.to_receiver(msg) if msg in SHIPPER_FRAMES else probe.to_shipper(msg)
    payload = len(msg.payload) if isinstance(msg, Data) else 0
    head_len = len(frame) - payload
    for index in range(4, head_len):  # the length prefix is covered too, but a flip there is a length error
        for bit in (0, 7):
            p = SessionPair()
            good = p.to_receiver(msg) if msg in SHIPPER_FRAMES else p.to_shipper(msg)
            bad = bytearray(good)
            bad[index] ^= 1 << bit
            decoder, opener = (p.at_receiver, p.r_open) if msg in SHIPPER_FRAMES else (p.at_shipper, p.s_open)
            err = refused(decoder, bytes(bad))
            assert opener.sequence == 0, f"byte {index} bit {bit}: state changed"
            assert err.code in ("bad-mac", "bad-frame", "bad-stream", "bad-type", "too-large"), err


def test_replayed_frame_is_refused() -> None:
    p = SessionPair()
    ack = p.to_shipper(Ack("db1", Position(SEG, 13), False, START))
    assert len(drain(p.at_shipper, ack)) == 1
    err = refused(p.at_shipper, ack)
    assert isinstance(err, FrameAuthFailed)
    assert p.s_open.sequence == 1 and p.s_open.refused == 1


def test_swapped_pair_is_refused() -> None:
    p = SessionPair()
    first = p.to_shipper(Ack("db1", Position(SEG, 10), False, START))
    second = p.to_shipper(Ack("db1", Position(SEG, 13), False, START))
    assert isinstance(refused(p.at_shipper, second + first), FrameAuthFailed)
    assert p.s_open.sequence == 0


def test_dropped_frame_makes_the_next_one_fail() -> None:
    p = SessionPair()
    p.to_receiver(Data("db1", SEG, 0, 1, b"a"))  # lost on the way
    assert isinstance(refused(p.at_receiver, p.to_receiver(Data("db1", SEG, 1, 1, b"b"))), FrameAuthFailed)


def test_injected_frame_without_the_key_is_refused() -> None:
    p = SessionPair()
    forged_keys = DirectionKeys.derive({"db1": b"guess", "db2": b"guess"}, TO_SHIPPER, R_NONCE, S_NONCE, "r", "s")
    ack = encode(Ack("db1", Position(SEG, 1 << 20), True, START), sealer=FrameSealer(forged_keys))
    assert isinstance(refused(p.at_shipper, ack), FrameAuthFailed)
    # An untagged frame (what a relay that never saw the keys sends) is refused too.
    untagged = encode(Ack("db1", Position(SEG, 1 << 20), True, START)) + bytes(TAG_SIZE)
    assert isinstance(refused(SessionPair().at_shipper, untagged), FrameAuthFailed)


def test_frame_replayed_from_another_connection_is_refused() -> None:
    old, new = SessionPair(), SessionPair(receiver_nonce=bytes([7]) * 32)  # a fresh nonce: a new connection
    recorded = old.to_shipper(Ack("db1", Position(SEG, 1 << 20), True, START))
    assert isinstance(refused(new.at_shipper, recorded), FrameAuthFailed)


def test_frame_for_a_stream_outside_the_session_is_refused() -> None:
    p = SessionPair(secrets={"db1": SECRETS["db1"]})
    other = SessionPair()
    err = refused(p.at_receiver, other.to_receiver(Data("db2", SEG, 0, 1, b"x")))
    assert err.code == "bad-stream"


def test_payload_mac_catches_a_payload_crafted_to_keep_its_xxh() -> None:
    # xxh3 is not a MAC: an attacker can change the payload and recompute xxh. With the payload MAC the
    # header's pmac no longer fits (and the header cannot be rewritten without the session key).
    p = SessionPair(payload_mac=True)
    assert p.s_seal.payload_mac and p.r_open.payload_mac
    good = p.to_receiver(Data("db1", SEG, 0, 7, b"payload"))
    bad = good[:-7] + b"PAYLOAD"
    assert isinstance(refused(p.at_receiver, bad), FrameAuthFailed)
    q = SessionPair(payload_mac=True)
    assert drain(q.at_receiver, q.to_receiver(Data("db1", SEG, 0, 7, b"payload"))) == [
        Data("db1", SEG, 0, 7, b"payload")
    ]


def test_payload_mac_is_used_only_when_the_shipper_asked() -> None:
    p = SessionPair(payload_mac=False)
    assert "pmac" in p.s.peer_features  # the receiver always offers it
    assert not p.s_seal.payload_mac and not p.r_open.payload_mac
    frame = p.to_receiver(Data("db1", SEG, 0, 7, b"payload"))
    assert b"pmac" not in frame


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["send", "drop", "dup", "swap", "flip"]), st.integers(0, 3), st.integers(0, 10_000)),
        min_size=1,
        max_size=12,
    )
)
def test_random_sequences_yield_progress_or_an_error(ops: list[tuple[str, int, int]]) -> None:
    p = SessionPair(payload_mac=True)  # with it, a flipped payload byte is refused too
    sent: list[tuple[Message, bytes]] = []
    wire = bytearray()
    for op, which, where in ops:
        msg = SHIPPER_FRAMES[which]
        frame = p.to_receiver(msg)
        if op == "drop":
            continue
        if op == "dup":
            frame = frame + frame
        elif op == "swap" and sent:
            wire[-len(sent[-1][1]) :] = b""
            frame = frame + sent[-1][1]
        elif op == "flip":
            flipped = bytearray(frame)
            flipped[4 + where % (len(frame) - 4)] ^= 0x10
            frame = bytes(flipped)
        sent.append((msg, frame))
        wire += frame
    decoder = FrameDecoder()
    decoder.opener = p.r_open
    decoder.receive_data(bytes(wire))
    got: list[Message] = []
    try:
        while (msg := decoder.next_message()) is not NEED_DATA:
            got.append(msg)  # type: ignore[arg-type]
    except RemoteProtocolError:
        pass
    # What came out is exactly a prefix of what was sent, in order, before any fault.
    assert got == [m for m in SHIPPER_FRAMES_SENT(ops)][: len(got)]
    assert p.r_open.sequence == len(got)


def SHIPPER_FRAMES_SENT(ops: list[tuple[str, int, int]]) -> list[Message]:
    """The messages the shipper meant to send, in order (its sealer numbered each one)."""
    return [SHIPPER_FRAMES[which] for _, which, _ in ops]


def test_tags_are_the_documented_hmac_frame_after_frame() -> None:
    # Each key's HMAC is set up once and copied per frame: every tag must still be HMAC-SHA256 over
    # the sequence number and the head, however streams and frames interleave.
    import hashlib
    import hmac

    from protocol.auth import frame_tag

    p = SessionPair()
    frames = [Data("db1", SEG, 0, 7, b"a"), Seal("db2", SEG, 0, bytes(16)), Heartbeat(), Data("db1", SEG, 1, 8, b"b")]
    wires = [p.to_receiver(msg) for msg in frames]
    for sequence, (msg, wire) in enumerate(zip(frames, wires, strict=True)):
        hlen = int.from_bytes(wire[:4], "big")
        head, tag = wire[: 4 + hlen], wire[4 + hlen : 4 + hlen + TAG_SIZE]
        stream = getattr(msg, "stream", None)
        key = p.s_seal.keys.key_for(stream)
        want = hmac.new(key, sequence.to_bytes(8, "big") + head, hashlib.sha256).digest()[:TAG_SIZE]
        assert tag == want == frame_tag(key, sequence, head)
        p.at_receiver.receive_data(wire)
        assert p.at_receiver.next_message() == msg


@pytest.mark.parametrize("size", [0, 1, 32, 63, 64, 65, 200])
def test_prepared_tag_states_are_hmac_for_any_key_length(size: int) -> None:
    import hashlib
    import hmac

    from protocol.auth import _pads

    key = bytes(range(size % 256)) * (size // 256) + bytes(range(size % 256))
    inner, outer = _pads(key)
    for msg in (b"", b"frame", bytes(1000)):
        i = inner.copy()
        i.update(msg)
        o = outer.copy()
        o.update(i.digest())
        assert o.digest() == hmac.new(key, msg, hashlib.sha256).digest()
