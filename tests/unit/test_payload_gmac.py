"""The GMAC payload MAC (feature ``pmac-gmac``): negotiation, tags recomputed here from the key and the
nonce the protocol names, refusals, and the guard that keeps one nonce from serving two payloads."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac

import msgpack
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from protocol.auth import TAG_SIZE, FrameAuthFailed, FrameOpener, FrameSealer, payload_mac
from protocol.errors import LocalProtocolError
from protocol.framing import FrameDecoder, encode, encode_packed
from protocol.messages import START, Data, Heartbeat
from protocol.session import ReceiverHandshake, ShipperHandshake
from tests.helpers.frames import drain, refused

SECRETS = {"db1": b"secret-one-0123456789", "db2": b"secret-two-0123456789"}
SEG = "000000010000000000000003"
R_NONCE, S_NONCE = bytes([1]) * 32, bytes([2]) * 32


class Pair:
    """A finished handshake; ``old_receiver`` strips ``pmac-gmac`` from the WELCOME as a receiver
    predating it would not list it."""

    def __init__(self, features: tuple[str, ...], old_receiver: bool = False) -> None:
        self.r = ReceiverHandshake("receiver-1", R_NONCE, SECRETS.get)
        self.s = ShipperHandshake("shipper-1", S_NONCE, SECRETS, {}, features)
        self.r.receive_hello(self.s.receive_challenge(self.r.challenge()))
        welcome = self.r.welcome([self.r.resume(name, 0, START, True) for name in SECRETS])
        if old_receiver:
            welcome = dataclasses.replace(welcome, features=tuple(f for f in welcome.features if f != "pmac-gmac"))
        self.s.receive_welcome(welcome)
        self.s_seal, self.s_open = self.s.frame_auth()
        self.r_seal, self.r_open = self.r.frame_auth()
        self.at_receiver = FrameDecoder()
        self.at_receiver.opener = self.r_open


def header_of(frame: bytes) -> dict[str, object]:
    size = int.from_bytes(frame[:4], "big")
    return msgpack.unpackb(frame[4 : 4 + size], raw=False)  # type: ignore[no-any-return]


def expected_gmac(direction_key: bytes, sequence: int, payload: bytes) -> bytes:
    """GMAC as docs/protocol.md specifies it, made here without protocol.auth's helpers."""
    key = hmac.new(direction_key, b"logship/3|pmac-gmac", hashlib.sha256).digest()
    nonce = sequence.to_bytes(8, "big") + b"\0\0\0\0"
    return AESGCM(key).encrypt(nonce, b"", payload)


def crafted(p: Pair, msg: Data, pmac: bytes) -> bytes:
    """A DATA frame with ``pmac`` and a header tag that verifies: what the payload MAC alone must catch."""
    fields = msg.to_header()
    fields["pmac"] = pmac
    header = msgpack.packb(fields, use_bin_type=True)
    head = len(header).to_bytes(4, "big") + header
    return head + p.s_seal.tag(msg.stream, head) + msg.payload


@pytest.mark.parametrize(
    ("features", "old_receiver", "mac", "gmac"),
    [
        (("pmac", "pmac-gmac"), False, True, True),  # both new
        (("pmac",), False, True, False),  # old shipper: HMAC-SHA256
        (("pmac", "pmac-gmac"), True, True, False),  # old receiver: HMAC-SHA256
        ((), False, False, False),  # payload MAC off
        (("pmac-gmac",), False, False, False),  # pmac-gmac alone does not turn the MAC on
    ],
)
def test_negotiation(features: tuple[str, ...], old_receiver: bool, mac: bool, gmac: bool) -> None:
    p = Pair(features, old_receiver)
    assert "pmac" in p.s.peer_features and ("pmac-gmac" in p.s.peer_features) is not old_receiver
    assert (p.s_seal.payload_mac, p.s_seal.gmac, p.s_open.payload_mac, p.s_open.gmac) == (mac, gmac, mac, gmac)
    if not old_receiver:  # (an old receiver would run its own, HMAC-only code)
        assert (p.r_open.payload_mac, p.r_open.gmac, p.r_seal.gmac) == (mac, gmac, gmac)
    frame = encode(Data("db1", SEG, 0, 7, b"payload"), sealer=p.s_seal)
    field = header_of(frame).get("pmac")
    if not mac:
        assert field is None
        return
    key = p.s_seal.keys.key_for("db1")
    want = expected_gmac(key, 0, b"payload") if gmac else payload_mac(key, b"payload")
    assert field == want and len(want) == TAG_SIZE
    opener = p.r_open if not old_receiver else FrameOpener(p.r_open.keys, payload_mac=True)
    decoder = FrameDecoder()
    decoder.opener = opener
    assert drain(decoder, frame) == [Data("db1", SEG, 0, 7, b"payload")]


def test_gmac_tags_match_an_independent_computation_and_follow_the_sequence() -> None:
    p = Pair(("pmac", "pmac-gmac"))
    key = p.s_seal.keys.key_for("db1")
    frames = b""
    for seq in range(4):
        payload = bytes([seq]) * (100 + seq)
        frame = encode(Data("db1", SEG, 0, 7, payload), sealer=p.s_seal)
        assert header_of(frame)["pmac"] == expected_gmac(key, 2 * seq, payload)
        frames += frame + encode(Heartbeat(), sealer=p.s_seal)  # frames without a payload count too
    got = drain(p.at_receiver, frames)
    assert [m.payload for m in got if isinstance(m, Data)] == [bytes([s]) * (100 + s) for s in range(4)]
    assert p.r_open.sequence == 8 and p.r_open.refused == 0


def test_a_flipped_payload_byte_is_refused() -> None:
    p = Pair(("pmac", "pmac-gmac"))
    frame = bytearray(encode(Data("db1", SEG, 0, 7, b"payload bytes"), sealer=p.s_seal))
    frame[-3] ^= 0x01
    assert isinstance(refused(p.at_receiver, bytes(frame)), FrameAuthFailed)
    assert p.r_open.sequence == 0 and p.r_open.refused == 1


@pytest.mark.parametrize("which", ["sequence", "stream", "direction", "frame-tag key"])
def test_a_pmac_under_another_nonce_or_key_is_refused(which: str) -> None:
    p = Pair(("pmac", "pmac-gmac"))
    msg = Data("db1", SEG, 0, 7, b"payload bytes")
    key, seq = p.s_seal.keys.key_for("db1"), 0
    if which == "sequence":
        seq = 1  # the MAC of this payload as the next frame: a reordered payload
    elif which == "stream":
        key = p.s_seal.keys.key_for("db2")
    elif which == "direction":
        key = p.r_seal.keys.key_for("db1")
    pmac = expected_gmac(key, seq, msg.payload)
    if which == "frame-tag key":  # GMAC straight under the direction key, not the derived one
        pmac = AESGCM(key).encrypt(bytes(12), b"", msg.payload)
    assert isinstance(refused(p.at_receiver, crafted(p, msg, pmac)), FrameAuthFailed)
    # The same construction with the right key and nonce passes: the refusal was the pmac's.
    q = Pair(("pmac", "pmac-gmac"))
    good = crafted(q, msg, expected_gmac(q.s_seal.keys.key_for("db1"), 0, msg.payload))
    assert drain(q.at_receiver, good) == [msg]


def test_a_replayed_or_reordered_frame_is_refused() -> None:
    p = Pair(("pmac", "pmac-gmac"))
    first = encode(Data("db1", SEG, 0, 7, b"first"), sealer=p.s_seal)
    second = encode(Data("db1", SEG, 5, 7, b"second"), sealer=p.s_seal)
    assert isinstance(refused(p.at_receiver, second), FrameAuthFailed)
    q = Pair(("pmac", "pmac-gmac"))
    first = encode(Data("db1", SEG, 0, 7, b"first"), sealer=q.s_seal)
    drain(q.at_receiver, first)
    assert isinstance(refused(q.at_receiver, first), FrameAuthFailed)


def test_one_sequence_number_never_macs_two_payloads() -> None:
    # encode_packed computes pmac before it finds the header too large; the connection may go on. Had
    # the next DATA been given a GMAC under the same nonce, two tags under one nonce would give the
    # authentication key away: the sealer refuses instead, until a frame was tagged.
    p = Pair(("pmac", "pmac-gmac"))
    seal = p.s_seal
    with pytest.raises(LocalProtocolError, match="exceeds"):
        encode_packed(Data("db1", "x" * 70_000, 0, 7, b"first payload"), "", None, seal)
    assert seal.sequence == 0
    with pytest.raises(LocalProtocolError, match="nonce"):
        encode_packed(Data("db1", SEG, 0, 7, b"other payload"), "", None, seal)
    with pytest.raises(LocalProtocolError, match="nonce"):
        seal.payload_mac_for("db1", b"other payload")
    # A frame without a payload MAC takes the number; the next DATA gets a fresh nonce and verifies.
    hb = encode(Heartbeat(), sealer=seal)
    frame = encode(Data("db1", SEG, 0, 7, b"other payload"), sealer=seal)
    assert header_of(frame)["pmac"] == expected_gmac(seal.keys.key_for("db1"), 1, b"other payload")
    assert drain(p.at_receiver, hb + frame)[1] == Data("db1", SEG, 0, 7, b"other payload")


def test_the_guard_holds_for_hmac_too_and_a_sealer_without_pmac_is_untouched() -> None:
    seal = Pair(("pmac",)).s_seal
    seal.payload_mac_for("db1", b"a")
    with pytest.raises(LocalProtocolError):
        seal.payload_mac_for("db1", b"b")
    plain = FrameSealer(seal.keys)
    assert not plain.payload_mac and not plain.gmac
    assert FrameSealer(seal.keys, payload_mac=False, gmac=True).gmac is False


def test_a_mac_made_ahead_is_the_one_the_frame_carries() -> None:
    # The shipper makes a mapped chunk's pmac before its digests (premac); the frame must be the very
    # frame made without it, and the MAC must not be made twice under one nonce.
    p, q = Pair(("pmac", "pmac-gmac")), Pair(("pmac", "pmac-gmac"))
    payload = b"mapped chunk bytes" * 100
    p.s_seal.premac("db1", payload)
    ahead = encode(Data("db1", SEG, 0, 7, payload), sealer=p.s_seal)
    assert ahead == encode(Data("db1", SEG, 0, 7, payload), sealer=q.s_seal)
    assert header_of(ahead)["pmac"] == expected_gmac(p.s_seal.keys.key_for("db1"), 0, payload)
    assert drain(p.at_receiver, ahead) == [Data("db1", SEG, 0, 7, payload)]
    # Used once: the next frame's MAC is made afresh under its own sequence number.
    nxt = encode(Data("db1", SEG, len(payload), 7, payload), sealer=p.s_seal)
    assert header_of(nxt)["pmac"] == expected_gmac(p.s_seal.keys.key_for("db1"), 1, payload)


def test_a_mac_made_ahead_never_serves_another_payload_or_stream() -> None:
    p = Pair(("pmac", "pmac-gmac"))
    p.s_seal.premac("db1", b"first payload")
    # Another payload (an equal copy is another object too) or stream under that nonce: refused.
    with pytest.raises(LocalProtocolError, match="nonce"):
        encode(Data("db1", SEG, 0, 7, bytearray(b"first payload")), sealer=p.s_seal)
    q = Pair(("pmac", "pmac-gmac"))
    payload = b"first payload"
    q.s_seal.premac("db1", payload)
    with pytest.raises(LocalProtocolError, match="nonce"):
        encode(Data("db2", SEG, 0, 7, payload), sealer=q.s_seal)


def test_a_frame_tagged_between_premac_and_encode_moves_the_mac_to_the_new_nonce() -> None:
    p = Pair(("pmac", "pmac-gmac"))
    payload = b"chunk"
    p.s_seal.premac("db1", payload)
    hb = encode(Heartbeat(), sealer=p.s_seal)  # took sequence 0, the nonce made ahead
    frame = encode(Data("db1", SEG, 0, 7, payload), sealer=p.s_seal)
    assert header_of(frame)["pmac"] == expected_gmac(p.s_seal.keys.key_for("db1"), 1, payload)
    assert drain(p.at_receiver, hb + frame)[1] == Data("db1", SEG, 0, 7, payload)
