"""The seed transfer's protocol core (protocol/seed.py), bytes in, messages out: every message whole, byte
by byte and with trailing bytes; the WELCOME's seed flag bound by the proof; the receiving end's sink and
the sending end's window fed a whole transfer, a resume, and a peer that breaks the rules."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest

from protocol.digest import chunk_digest, segment_digest
from protocol.errors import AuthenticationFailed, RemoteProtocolError
from protocol.framing import NEED_DATA, FrameDecoder, encode
from protocol.messages import Data, Message, Position, StreamResume
from protocol.seed import (
    Held,
    SeedAck,
    SeedOffer,
    SeedSink,
    SeedWant,
    SeedWindow,
    start_offset,
)
from tests.helpers.handshakes import SECRETS, Link, hello_for, receiver, shipper

IMAGE = "0123456789abcdef0123456789abcdef"
BODY = bytes(range(256)) * 40  # 10240 bytes
DIGEST = segment_digest(BODY)
SEG = "E00000000000000C.log"
OFFER = SeedOffer("db1", IMAGE, len(BODY), DIGEST, SEG, "E00000000000000B.log", 4096, 0)

SAMPLES: list[Message] = [
    SeedWant("db1", "", 0),
    SeedWant("db1", IMAGE, 8192),
    OFFER,
    SeedOffer("db1", IMAGE, 0, segment_digest(b""), "", "", 0, 0),
    SeedAck("db1", IMAGE, 4096),
    SeedAck("db1", IMAGE, len(BODY), done=True),
]


def decode_all(data: bytes) -> list[Message]:
    dec = FrameDecoder()
    dec.receive_data(data)
    out = []
    while (msg := dec.next_message()) is not NEED_DATA:
        out.append(msg)  # type: ignore[arg-type]
    return out


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_seed_message_round_trips_whole_byte_by_byte_and_with_trailing_bytes(msg: Message) -> None:
    frame = encode(msg)
    assert decode_all(frame) == [msg]
    dec = FrameDecoder()
    got = []
    for i in range(len(frame)):
        dec.receive_data(frame[i : i + 1])
        if (m := dec.next_message()) is not NEED_DATA:
            got.append(m)
    assert got == [msg]
    assert decode_all(frame + encode(SAMPLES[0]))[:1] == [msg]


def raw(header: dict[str, Any]) -> bytes:
    body = msgpack.packb(header, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


@pytest.mark.parametrize(
    "header",
    [
        {"t": "SEED_WANT", "stream": "db1", "image": "", "off": 5},  # an offset into no image
        {"t": "SEED_WANT", "stream": "db1", "image": "../etc", "off": 0},  # not an image id
        {"t": "SEED_WANT", "stream": "db1", "image": IMAGE, "off": -1},
        {"t": "SEED_ACK", "stream": "db1", "image": IMAGE, "off": 1, "done": 1},  # an int is not a bool
        {**OFFER.to_header(), "start": OFFER.size + 1},  # starts past the end
        {**OFFER.to_header(), "after": SEG},  # after must sort before first
        {**OFFER.to_header(), "first": "", "after": "E0.log"},
        {**OFFER.to_header(), "xxh": b"short"},
        {**OFFER.to_header(), "first": "a/b"},  # a segment name with a slash
        {**OFFER.to_header(), "size": 1 << 60},  # over the largest image believed
    ],
)
def test_malformed_seed_headers_are_refused(header: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_all(raw(header))


def test_welcome_seed_flag_travels_and_is_bound_by_the_proof() -> None:
    link, r, s = Link(), receiver(), shipper(secrets={"db1": SECRETS["db1"]}, features=("seed",))
    r.receive_hello(hello_for(r, s, link))
    assert "seed" in r.features
    resume = r.resume("db1", 3, Position("", 0), True, seed=True)
    welcome = r.welcome([resume])
    got = s.receive_welcome(link.to_shipper.carry(welcome))["db1"]
    assert isinstance(got, StreamResume) and got.seed
    # A relay that drops the flag (or adds it) breaks the receiver's proof.
    link2, r2, s2 = Link(), receiver(), shipper(secrets={"db1": SECRETS["db1"]}, features=("seed",))
    r2.receive_hello(hello_for(r2, s2, link2))
    forged = r2.resume("db1", 3, Position("", 0), True, seed=True)
    stripped = StreamResume(forged.stream, forged.epoch, forged.position, forged.sealed, forged.proof)
    with pytest.raises(AuthenticationFailed):
        s2.receive_welcome(link2.to_shipper.carry(r2.welcome([stripped])))


def test_a_welcome_without_seed_is_what_it_was() -> None:
    resume = StreamResume("db1", 0, Position("", 0), True, bytes(32))
    assert "seed" not in resume.to_map()
    assert StreamResume.from_map(resume.to_map()) == resume


def chunks(start: int, size: int = 4096) -> list[Data]:
    seg = OFFER.segment
    out = []
    for off in range(start, len(BODY), size):
        payload = BODY[off : off + size]
        out.append(Data("db1", seg, off, chunk_digest(seg, off, payload), payload))
    return out


def test_a_whole_transfer_through_sink_and_window() -> None:
    sink = SeedSink("db1", None)
    want = sink.want()
    assert want == SeedWant("db1", "", 0)
    start = start_offset(want, IMAGE, len(BODY))
    assert start == 0
    assert sink.on_offer(OFFER) is True  # a new image: drop whatever was held
    window = SeedWindow(IMAGE, len(BODY), start, window=8192)
    received = bytearray()
    pending = chunks(0)
    while not sink.complete:
        while pending and window.room >= len(pending[0].payload):
            msg = pending.pop(0)
            window.on_sent(len(msg.payload))
            # On the wire and back: bytes in, messages out.
            (decoded,) = decode_all(encode(msg))
            assert sink.on_data(decoded) == len(received)  # type: ignore[arg-type]
            received += decoded.payload  # type: ignore[union-attr]
        window.on_ack(SeedAck("db1", IMAGE, sink.expected))
    window.on_ack(SeedAck("db1", IMAGE, len(BODY), done=True))
    assert window.done and bytes(received) == BODY and segment_digest(received) == OFFER.digest


def test_resume_continues_the_same_image_at_the_durable_offset() -> None:
    held = Held(OFFER, 8192)
    sink = SeedSink("db1", held)
    want = sink.want()
    assert want == SeedWant("db1", IMAGE, 8192)
    assert start_offset(want, IMAGE, len(BODY)) == 8192
    assert start_offset(want, "ffffffffffffffff", 99) == 0  # the shipper made another image: from 0
    resumed = dataclasses.replace(OFFER, start=8192)
    assert sink.on_offer(resumed) is False
    for msg in chunks(8192):
        sink.on_data(msg)
    assert sink.complete


@pytest.mark.parametrize(
    "offer, error",
    [
        (SeedOffer("db1", IMAGE, len(BODY), DIGEST, SEG, "E00000000000000B.log", 4096, 4096), "holds 8192"),
        (SeedOffer("db1", IMAGE, len(BODY) + 1, DIGEST, SEG, "E00000000000000B.log", 4096, 8192), "changes"),
        (SeedOffer("db1", "ffffffffffffffff", 10, DIGEST, SEG, "", 0, 5), "must start at 0"),
        (SeedOffer("db2", IMAGE, len(BODY), DIGEST, SEG, "", 0, 0), "unexpected"),
    ],
)
def test_an_offer_that_does_not_fit_what_the_receiver_holds_is_refused(offer: SeedOffer, error: str) -> None:
    sink = SeedSink("db1", Held(OFFER, 8192))
    with pytest.raises(RemoteProtocolError, match=error):
        sink.on_offer(offer)


def test_chunks_out_of_place_damaged_or_past_the_end_are_refused() -> None:
    sink = SeedSink("db1", None)
    first = chunks(0)[0]
    with pytest.raises(RemoteProtocolError, match="during a seed"):
        sink.on_data(first)  # before any offer
    sink.on_offer(OFFER)
    with pytest.raises(RemoteProtocolError, match="expected 0"):
        sink.on_data(chunks(0)[1])
    with pytest.raises(RemoteProtocolError, match="digest"):
        sink.on_data(Data("db1", first.segment, 0, first.digest ^ 1, first.payload))
    with pytest.raises(RemoteProtocolError, match="during a seed"):
        sink.on_data(Data("db1", SEG, 0, chunk_digest(SEG, 0, b"x"), b"x"))  # a segment's DATA, not the image's
    sink.on_data(first)
    seg = OFFER.segment
    big = BODY + b"!"
    with pytest.raises(RemoteProtocolError, match="past the offered size"):
        sink.on_data(Data("db1", seg, 4096, chunk_digest(seg, 4096, big[4096:]), big[4096:]))


def test_window_refuses_acks_of_another_image_backwards_beyond_what_was_sent_or_done_early() -> None:
    window = SeedWindow(IMAGE, 100, 0, window=64)
    assert window.room == 64
    window.on_sent(64)
    assert window.room == 0
    for ack, error in (
        (SeedAck("db1", "ffffffffffffffff", 10), "another image"),
        (SeedAck("db1", IMAGE, 65), "outside"),
        (SeedAck("db1", IMAGE, 64, done=True), "before the image's end"),
    ):
        with pytest.raises(RemoteProtocolError, match=error):
            window.on_ack(ack)
    window.on_ack(SeedAck("db1", IMAGE, 32))
    assert window.room == 32
    with pytest.raises(RemoteProtocolError, match="outside"):
        window.on_ack(SeedAck("db1", IMAGE, 16))
