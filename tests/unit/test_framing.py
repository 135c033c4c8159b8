"""Frame codec: every message whole, byte by byte, concatenated and with trailing bytes; limits; bad input."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest

from protocol.digest import chunk_digest, segment_digest
from protocol.errors import FrameTooLarge, LocalProtocolError, ProtocolError, RemoteProtocolError
from protocol.fields import MAX_OFFSET
from protocol.framing import MAX_HEADER, NEED_DATA, FrameDecoder, encode, encode_parts
from protocol.messages import (
    START,
    Ack,
    Challenge,
    Data,
    Error,
    Fenced,
    Heartbeat,
    Hello,
    Message,
    Nack,
    Position,
    Seal,
    SourceHead,
    StreamClaim,
    StreamResume,
    Welcome,
)
from protocol.names import check_segment_name, check_stream_name
from tests.helpers.frames import length_prefixed, raw_frame

NONCE = bytes(range(32))
PROOF = bytes(range(32, 64))
SEG = "E00000001.log"
PAYLOAD = b"0123456789abcdef" * 64

SAMPLES: list[Message] = [
    Challenge((1, 2), NONCE, "receiver-1"),
    Hello(1, "shipper-1", NONCE, (StreamClaim("db1", 3, PROOF), StreamClaim("wal.main-2", 0, PROOF)), ("zstd",)),
    Hello(1, "shipper-\u00e9", NONCE, ()),
    Welcome(
        1,
        "receiver-1",
        (
            StreamResume("db1", 3, Position(SEG, 4096), False, PROOF),
            StreamResume("db2", 0, START, True, PROOF),
        ),
        ("zstd",),
    ),
    Welcome(1, "receiver-1", ()),
    Data("db1", SEG, 4096, chunk_digest(SEG, 4096, PAYLOAD), PAYLOAD),
    Data("db1", SEG, 0, chunk_digest(SEG, 0, b""), b""),
    Data("db1", "000000010000000000000003", MAX_OFFSET, (1 << 64) - 1, b"\x00"),
    Seal("db1", SEG, 1 << 20, segment_digest(PAYLOAD)),
    Ack("db1", Position(SEG, 10), False),
    Ack("db1", Position(SEG, 1 << 20), True, Position("E00000000.log", 77)),
    Ack("db1", START, False, START),
    Nack("db1", Position(SEG, 0), "chunk digest mismatch"),
    Heartbeat(),
    Heartbeat("db1", SourceHead(Position(SEG, 1 << 20), 3, 5 << 20)),
    Heartbeat("db1", SourceHead(Position("", 0), 0, 0)),
    Error("auth", "wrong proof for stream 'db1'"),
    Error("", ""),
    Fenced("db1", 7, bytes(range(32))),
]
IDS = [f"{i}-{type(m).__name__}" for i, m in enumerate(SAMPLES)]


def drain(decoder: FrameDecoder) -> list[Message]:
    """Return every complete message the decoder holds."""
    out: list[Message] = []
    while (msg := decoder.next_message()) is not NEED_DATA:
        out.append(msg)  # type: ignore[arg-type]
    return out


def decode(data: bytes, max_payload: int | None = None) -> list[Message]:
    """Decode ``data`` fed in one piece; raise whatever the decoder raises."""
    decoder = FrameDecoder() if max_payload is None else FrameDecoder(max_payload)
    decoder.receive_data(data)
    return drain(decoder)


def data_header(**changes: Any) -> dict[str, Any]:
    header: dict[str, Any] = {"t": "DATA", "stream": "db1", "seg": SEG, "off": 0, "len": 4, "xxh": 1}
    header.update(changes)
    return header


def expect_remote_error(data: bytes, code: str, max_payload: int | None = None) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        decode(data, max_payload)
    assert info.value.code == code, info.value
    return info.value


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("msg", SAMPLES, ids=IDS)
def test_round_trip_whole(msg: Message) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(encode(msg))
    assert decoder.next_message() == msg
    assert decoder.next_message() is NEED_DATA
    assert decoder.buffered == 0


@pytest.mark.parametrize("msg", SAMPLES, ids=IDS)
def test_round_trip_byte_by_byte(msg: Message) -> None:
    frame = encode(msg)
    decoder = FrameDecoder()
    for i in range(len(frame) - 1):
        decoder.receive_data(frame[i : i + 1])
        assert decoder.next_message() is NEED_DATA
    decoder.receive_data(frame[-1:])
    assert decoder.next_message() == msg
    assert decoder.next_message() is NEED_DATA


@pytest.mark.parametrize("msg", SAMPLES, ids=IDS)
def test_round_trip_from_memoryview_and_bytearray(msg: Message) -> None:
    frame = encode(msg)
    decoder = FrameDecoder()
    decoder.receive_data(memoryview(frame)[:5])
    decoder.receive_data(bytearray(frame[5:]))
    assert drain(decoder) == [msg]


def test_concatenated_frames_whole() -> None:
    assert decode(b"".join(encode(m) for m in SAMPLES)) == SAMPLES


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1000])
def test_concatenated_frames_in_chunks(chunk: int) -> None:
    stream = b"".join(encode(m) for m in SAMPLES)
    decoder = FrameDecoder()
    out: list[Message] = []
    for i in range(0, len(stream), chunk):
        decoder.receive_data(stream[i : i + chunk])
        out.extend(drain(decoder))
    assert out == SAMPLES
    assert decoder.buffered == 0


@pytest.mark.parametrize("msg", SAMPLES, ids=IDS)
def test_trailing_partial_frame_needs_data_until_complete(msg: Message) -> None:
    nxt = encode(Data("db1", SEG, 8, chunk_digest(SEG, 8, b"tail"), b"tail"))
    for cut in (1, 3, 4, 5, len(nxt) - 4, len(nxt) - 1):
        decoder = FrameDecoder()
        decoder.receive_data(encode(msg) + nxt[:cut])
        assert decoder.next_message() == msg
        assert decoder.next_message() is NEED_DATA
        assert decoder.next_message() is NEED_DATA
        decoder.receive_data(nxt[cut:])
        assert decoder.next_message() == Data("db1", SEG, 8, chunk_digest(SEG, 8, b"tail"), b"tail")
        assert decoder.next_message() is NEED_DATA


def test_empty_input_needs_data() -> None:
    decoder = FrameDecoder()
    assert decoder.next_message() is NEED_DATA
    decoder.receive_data(b"")
    assert decoder.next_message() is NEED_DATA
    assert repr(NEED_DATA) == "NEED_DATA"


def test_data_payload_is_not_parsed_as_frames() -> None:
    # A payload that is itself a valid frame must come back as payload, not as a message.
    inner = encode(Heartbeat())
    msg = Data("db1", SEG, 0, chunk_digest(SEG, 0, inner), inner)
    assert decode(encode(msg) + encode(Heartbeat())) == [msg, Heartbeat()]


def test_data_end_position() -> None:
    assert Data("db1", SEG, 100, 0, b"abc").end == Position(SEG, 103)


# -- encode_parts ----------------------------------------------------------------------------


def test_encode_parts_keeps_payload_out_of_msgpack() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    msg = Data("db1", SEG, 0, chunk_digest(SEG, 0, payload), payload)
    head, body = encode_parts(msg)
    assert body is payload  # handed through, not copied
    assert len(head) < 200
    (hlen,) = struct.unpack(">I", head[:4])
    assert hlen == len(head) - 4
    header = msgpack.unpackb(head[4:], raw=False)
    assert header == {"t": "DATA", "stream": "db1", "seg": SEG, "off": 0, "len": len(payload), "xxh": msg.digest}
    assert head + body == encode(msg)


@pytest.mark.parametrize("msg", [m for m in SAMPLES if not isinstance(m, Data)], ids=lambda m: type(m).__name__)
def test_encode_parts_without_payload(msg: Message) -> None:
    head, body = encode_parts(msg)
    assert body == b""
    assert head == encode(msg)


def test_encode_refuses_header_over_limit() -> None:
    with pytest.raises(LocalProtocolError):
        encode(Error("x", "y" * (MAX_HEADER + 1)))


# -- limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("hlen", [MAX_HEADER + 1, 1 << 24, 0xFFFFFFFF])
def test_header_length_over_limit_raises_before_buffering(hlen: int) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(struct.pack(">I", hlen))  # only the prefix: nothing of the header yet
    with pytest.raises(FrameTooLarge) as info:
        decoder.next_message()
    assert info.value.code == "too-large"
    assert isinstance(info.value, RemoteProtocolError)


def test_header_length_at_limit_is_accepted() -> None:
    # Unknown fields are ignored, so a padding field can bring the header to exactly the limit.
    size = MAX_HEADER
    while len(packed := msgpack.packb({"t": "HEARTBEAT", "pad": b"x" * size}, use_bin_type=True)) > MAX_HEADER:
        size -= 1
    assert len(packed) == MAX_HEADER
    assert decode(length_prefixed(packed)) == [Heartbeat()]


def test_zero_length_header_is_rejected() -> None:
    expect_remote_error(struct.pack(">I", 0), "bad-frame")


def test_data_payload_over_limit_raises_without_waiting_for_payload() -> None:
    frame = raw_frame(data_header(len=17))  # header only, no payload bytes follow
    err = expect_remote_error(frame, "too-large", max_payload=16)
    assert isinstance(err, FrameTooLarge)


def test_data_payload_over_default_limit() -> None:
    expect_remote_error(raw_frame(data_header(len=4 * 1024 * 1024 + 1)), "too-large")


def test_data_payload_at_limit_is_accepted() -> None:
    payload = b"p" * 16
    msg = Data("db1", SEG, 0, chunk_digest(SEG, 0, payload), payload)
    assert decode(encode(msg), max_payload=16) == [msg]


def test_data_header_checked_before_payload_arrives() -> None:
    # A bad DATA header is refused on the header alone, without waiting for its payload.
    expect_remote_error(raw_frame(data_header(seg="../etc/passwd", len=1 << 20)), "bad-name")
    expect_remote_error(raw_frame(data_header(off=-1, len=1 << 20)), "bad-frame")


def test_data_waits_for_whole_payload() -> None:
    msg = Data("db1", SEG, 0, chunk_digest(SEG, 0, PAYLOAD), PAYLOAD)
    frame = encode(msg)
    decoder = FrameDecoder()
    decoder.receive_data(frame[:-1])
    assert decoder.next_message() is NEED_DATA
    decoder.receive_data(frame[-1:])
    assert decoder.next_message() == msg


@pytest.mark.parametrize("plen", [-1, True, "4", None, 1.5], ids=repr)
def test_data_bad_payload_length(plen: object) -> None:
    expect_remote_error(raw_frame(data_header(len=plen)), "bad-frame")


def test_data_missing_payload_length() -> None:
    header = data_header()
    del header["len"]
    expect_remote_error(raw_frame(header), "bad-frame")


# -- bad frames ------------------------------------------------------------------------------

CLAIM = {"stream": "db1", "epoch": 0, "proof": PROOF}
RESUME = {"stream": "db1", "epoch": 0, "seg": SEG, "off": 0, "sealed": False, "proof": PROOF}
HELLO = {"t": "HELLO", "version": 1, "node": "s", "nonce": NONCE, "streams": [CLAIM], "features": []}
WELCOME = {"t": "WELCOME", "version": 1, "node": "r", "streams": [RESUME], "features": []}
CHALLENGE = {"t": "CHALLENGE", "versions": [1], "nonce": NONCE, "node": "r"}
SEAL = {"t": "SEAL", "stream": "db1", "seg": SEG, "size": 10, "xxh": bytes(16)}
ACK = Ack("db1", Position(SEG, 0), False, START).to_header()
NACK = Nack("db1", Position(SEG, 0), "r").to_header()
ERROR = {"t": "ERROR", "code": "c", "text": "t"}
FENCED = {"t": "FENCED", "stream": "db1", "epoch": 1, "proof": bytes(32)}
VALID_HEADERS = [HELLO, WELCOME, CHALLENGE, SEAL, ACK, NACK, ERROR, FENCED, {"t": "HEARTBEAT"}]


def changed(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """Return a copy of ``base`` with fields replaced; a value of ... removes the field."""
    out = dict(base)
    for key, value in changes.items():
        if value is ...:
            out.pop(key, None)
        else:
            out[key] = value
    return out


@pytest.mark.parametrize("header", VALID_HEADERS, ids=lambda h: h["t"])
def test_valid_headers_decode(header: dict[str, Any]) -> None:
    # The fixtures the bad cases below are derived from are themselves valid.
    assert len(decode(raw_frame(header))) == 1


BAD_HEADERS: list[tuple[str, Any, str]] = [
    # unknown or malformed type
    ("unknown-type", {"t": "NOPE"}, "bad-type"),
    ("no-type", {"stream": "db1"}, "bad-type"),
    ("empty-map", {}, "bad-type"),
    ("type-as-bytes", {"t": b"HEARTBEAT"}, "bad-type"),
    ("type-lowercase", {"t": "heartbeat"}, "bad-type"),
    ("type-as-int", {"t": 1}, "bad-type"),
    ("type-as-list", {"t": ["DATA"]}, "bad-type"),
    ("type-as-map", {"t": {"DATA": 1}}, "bad-type"),
    ("type-as-ext", {"t": msgpack.ExtType(1, b"DATA")}, "bad-type"),
    ("type-as-nil", {"t": None}, "bad-type"),
    # missing fields
    ("fenced-no-epoch", changed(FENCED, epoch=...), "bad-frame"),
    ("fenced-no-proof", changed(FENCED, proof=...), "bad-frame"),
    ("fenced-short-proof", changed(FENCED, proof=bytes(31)), "bad-frame"),
    ("seal-no-digest", changed(SEAL, xxh=...), "bad-frame"),
    ("challenge-no-nonce", changed(CHALLENGE, nonce=...), "bad-frame"),
    ("hello-no-streams", changed(HELLO, streams=...), "bad-frame"),
    ("hello-no-features", changed(HELLO, features=...), "bad-frame"),
    ("ack-no-roff", changed(ACK, roff=...), "bad-frame"),
    ("error-no-text", changed(ERROR, text=...), "bad-frame"),
    ("nack-no-reason", changed(NACK, reason=...), "bad-frame"),
    ("welcome-resume-no-sealed", changed(WELCOME, streams=[changed(RESUME, sealed=...)]), "bad-frame"),
    ("data-no-off", changed(data_header(), off=...), "bad-frame"),
    ("data-no-xxh", changed(data_header(), xxh=...), "bad-frame"),
    ("fenced-no-stream", changed(FENCED, stream=...), "bad-frame"),
    # bool where int
    ("fenced-epoch-bool", changed(FENCED, epoch=True), "bad-frame"),
    ("data-off-bool", data_header(off=True), "bad-frame"),
    ("data-xxh-bool", data_header(xxh=False), "bad-frame"),
    ("seal-size-bool", changed(SEAL, size=False), "bad-frame"),
    ("hello-version-bool", changed(HELLO, version=True), "bad-frame"),
    ("challenge-versions-bool", changed(CHALLENGE, versions=[True]), "bad-frame"),
    ("claim-epoch-bool", changed(HELLO, streams=[changed(CLAIM, epoch=True)]), "bad-frame"),
    # int where bool
    ("ack-sealed-int", changed(ACK, sealed=1), "bad-frame"),
    ("resume-sealed-int", changed(WELCOME, streams=[changed(RESUME, sealed=0)]), "bad-frame"),
    # float / str where int
    ("ack-off-float", changed(ACK, off=1.0), "bad-frame"),
    ("fenced-epoch-str", changed(FENCED, epoch="1"), "bad-frame"),
    # str where bytes
    ("challenge-nonce-str", changed(CHALLENGE, nonce="x" * 32), "bad-frame"),
    ("seal-digest-str", changed(SEAL, xxh="x" * 16), "bad-frame"),
    ("claim-proof-str", changed(HELLO, streams=[changed(CLAIM, proof="p" * 32)]), "bad-frame"),
    ("hello-nonce-str", changed(HELLO, nonce="n" * 32), "bad-frame"),
    # bytes where str
    ("error-code-bytes", changed(ERROR, code=b"auth"), "bad-frame"),
    ("nack-reason-bytes", changed(NACK, reason=b"r"), "bad-frame"),
    ("node-bytes", changed(CHALLENGE, node=b"r"), "bad-frame"),
    ("fenced-stream-bytes", changed(FENCED, stream=b"db1"), "bad-name"),
    ("data-seg-bytes", data_header(seg=SEG.encode()), "bad-name"),
    # msgpack extension types where plain values belong
    ("data-seg-ext", data_header(seg=msgpack.ExtType(2, b"E01")), "bad-name"),
    ("ack-seg-timestamp", changed(ACK, seg=msgpack.Timestamp(0)), "bad-name"),
    ("fenced-epoch-ext", changed(FENCED, epoch=msgpack.ExtType(3, b"\x01")), "bad-frame"),
    ("seal-digest-ext", changed(SEAL, xxh=msgpack.ExtType(4, bytes(16))), "bad-frame"),
    # negative or out-of-range numbers
    ("data-off-negative", data_header(off=-1), "bad-frame"),
    ("data-off-over-max", data_header(off=MAX_OFFSET + 1), "bad-frame"),
    ("data-xxh-negative", data_header(xxh=-1), "bad-frame"),
    ("ack-off-negative", changed(ACK, off=-1), "bad-frame"),
    ("ack-roff-negative", changed(ACK, roff=-5), "bad-frame"),
    ("nack-off-negative", changed(NACK, off=-1), "bad-frame"),
    ("seal-size-negative", changed(SEAL, size=-1), "bad-frame"),
    ("fenced-epoch-negative", changed(FENCED, epoch=-1), "bad-frame"),
    ("resume-off-negative", changed(WELCOME, streams=[changed(RESUME, off=-1)]), "bad-frame"),
    ("welcome-version-zero", changed(WELCOME, version=0), "bad-frame"),
    ("hello-version-too-big", changed(HELLO, version=1 << 16), "bad-frame"),
    ("challenge-versions-empty", changed(CHALLENGE, versions=[]), "bad-frame"),
    ("challenge-versions-zero", changed(CHALLENGE, versions=[0]), "bad-frame"),
    ("challenge-versions-too-many", changed(CHALLENGE, versions=list(range(1, 18))), "bad-frame"),
    # wrong digest / nonce / proof sizes
    ("seal-digest-15", changed(SEAL, xxh=bytes(15)), "bad-frame"),
    ("seal-digest-17", changed(SEAL, xxh=bytes(17)), "bad-frame"),
    ("seal-digest-int", changed(SEAL, xxh=12345), "bad-frame"),
    ("challenge-nonce-31", changed(CHALLENGE, nonce=bytes(31)), "bad-frame"),
    ("hello-nonce-33", changed(HELLO, nonce=bytes(33)), "bad-frame"),
    ("claim-proof-31", changed(HELLO, streams=[changed(CLAIM, proof=bytes(31))]), "bad-frame"),
    ("resume-proof-empty", changed(WELCOME, streams=[changed(RESUME, proof=b"")]), "bad-frame"),
    # wrong shapes and sizes
    ("hello-streams-map", changed(HELLO, streams={}), "bad-frame"),
    ("hello-claim-not-map", changed(HELLO, streams=["db1"]), "bad-frame"),
    ("welcome-resume-list", changed(WELCOME, streams=[[1, 2]]), "bad-frame"),
    ("features-not-strings", changed(HELLO, features=[1]), "bad-frame"),
    ("features-too-long", changed(HELLO, features=["f" * 65]), "bad-frame"),
    ("features-too-many", changed(WELCOME, features=["f"] * 33), "bad-frame"),
    ("error-text-too-long", changed(ERROR, text="x" * 4097), "bad-frame"),
    ("error-code-too-long", changed(ERROR, code="c" * 65), "bad-frame"),
    ("node-too-long", changed(CHALLENGE, node="n" * 256), "bad-frame"),
    # names
    ("seal-empty-segment", changed(SEAL, seg=""), "bad-name"),
    ("nack-empty-segment", changed(NACK, seg=""), "bad-name"),
    ("ack-traversal", changed(ACK, seg="../x"), "bad-name"),
    ("ack-rseg-traversal", changed(ACK, rseg="a/b"), "bad-name"),
    ("claim-bad-stream", changed(HELLO, streams=[changed(CLAIM, stream="../db")]), "bad-name"),
    ("resume-bad-segment", changed(WELCOME, streams=[changed(RESUME, seg="x.partial")]), "bad-name"),
    # non-map headers
    ("header-list", ["t", "HEARTBEAT"], "bad-frame"),
    ("header-str", "HEARTBEAT", "bad-frame"),
    ("header-int", 5, "bad-frame"),
    ("header-nil", None, "bad-frame"),
    ("header-bin", b"\x81\xa1t\xa9HEARTBEAT", "bad-frame"),
]


@pytest.mark.parametrize(("header", "code"), [c[1:] for c in BAD_HEADERS], ids=[c[0] for c in BAD_HEADERS])
def test_bad_header_raises_remote_error(header: Any, code: str) -> None:
    expect_remote_error(raw_frame(header, b"\x00" * 4), code)


GARBAGE: list[tuple[str, bytes]] = [
    ("reserved-byte", b"\xc1"),
    ("truncated-map", b"\x82\xa1t"),
    ("truncated-str", b"\x81\xa1t\xa9HEART"),
    ("trailing-bytes", msgpack.packb({"t": "HEARTBEAT"}) + b"\x00"),
    ("two-objects", msgpack.packb({"t": "HEARTBEAT"}) * 2),
    ("invalid-utf8", b"\x81\xa1t\xa2\xff\xfe"),
    ("int-map-key", msgpack.packb({1: 2})),
    ("nil-map-key", b"\x81\xc0\xc0"),
    ("huge-array-claim", b"\xdd\xff\xff\xff\xff"),
    ("huge-map-claim", b"\xdf\xff\xff\xff\xff"),
    ("deep-nesting", b"\x91" * 5000 + b"\xc0"),
    ("zeros", bytes(64)),
]


@pytest.mark.parametrize("body", [g[1] for g in GARBAGE], ids=[g[0] for g in GARBAGE])
def test_garbage_msgpack_raises_remote_error(body: bytes) -> None:
    err = expect_remote_error(length_prefixed(body), "bad-frame")
    assert isinstance(err, ProtocolError)


def test_error_keeps_raising_after_first_failure() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(raw_frame({"t": "NOPE"}) + encode(Heartbeat()))
    with pytest.raises(RemoteProtocolError) as first:
        decoder.next_message()
    for _ in range(3):
        with pytest.raises(RemoteProtocolError) as again:
            decoder.next_message()
        assert again.value is first.value
    with pytest.raises(RemoteProtocolError) as fed:
        decoder.receive_data(encode(Heartbeat()))
    assert fed.value is first.value


def test_error_after_good_messages_is_sticky() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(encode(Heartbeat()) + struct.pack(">I", MAX_HEADER + 1))
    assert decoder.next_message() == Heartbeat()
    with pytest.raises(FrameTooLarge):
        decoder.next_message()
    with pytest.raises(FrameTooLarge):
        decoder.next_message()


def test_extra_header_fields_are_ignored() -> None:
    assert decode(raw_frame(changed(FENCED, future="x"))) == [Fenced("db1", 1, bytes(32))]


# -- names -----------------------------------------------------------------------------------

BAD_SEGMENTS = [
    "",
    "a/b",
    "/abs",
    "..",
    ".",
    "../x",
    "x/../y",
    "a\\b",
    "a\x00b",
    "\x00",
    ".hidden",
    "..x",
    "E01.log.partial",
    "E01.partial",
    "E01.tmp",
    ".partial",
    "a\nb",
    "a\tb",
    "x" * 256,
    "\u00e9" * 128,  # 128 characters, 256 bytes
    "\U0001f600" * 64,  # 64 characters, 256 bytes
]
GOOD_SEGMENTS = [
    "E00000001.log",
    "000000010000000000000003",
    "x" * 255,
    "\u00e9" * 127 + "x",  # 255 bytes
    "a.b",
    "seg-1_2",
    "E01.partial.log",
    "tmp",
]


@pytest.mark.parametrize("name", BAD_SEGMENTS, ids=repr)
def test_bad_segment_name(name: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        check_segment_name(name)
    assert info.value.code == "bad-name"


@pytest.mark.parametrize("name", BAD_SEGMENTS, ids=repr)
def test_bad_segment_name_in_frames(name: str) -> None:
    # Through the decoder too: DATA (checked before its payload) and SEAL.
    expect_remote_error(raw_frame(data_header(seg=name)), "bad-name")
    expect_remote_error(raw_frame(changed(SEAL, seg=name)), "bad-name")


@pytest.mark.parametrize("name", GOOD_SEGMENTS, ids=repr)
def test_good_segment_name(name: str) -> None:
    assert check_segment_name(name) == name
    msg = Seal("db1", name, 0, bytes(16))
    assert decode(encode(msg)) == [msg]


@pytest.mark.parametrize("name", [None, 1, b"E01.log", ["E01"]], ids=repr)
def test_segment_name_must_be_str(name: object) -> None:
    with pytest.raises(RemoteProtocolError):
        check_segment_name(name)


BAD_STREAMS: list[object] = [
    "",
    "-db",
    "_db",
    ".db",
    "a" * 65,
    "db/1",
    "db 1",
    "db\x00",
    "db\n",
    "d\u00e9",
    "a..b",
    "..",
    "db:1",
    1,
    None,
    b"db1",
]
GOOD_STREAMS = ["a", "0", "A" * 64, "db1", "wal.main-2_x", "Z9.-_"]


@pytest.mark.parametrize("name", BAD_STREAMS, ids=repr)
def test_bad_stream_name(name: object) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        check_stream_name(name)
    assert info.value.code == "bad-name"


@pytest.mark.parametrize("name", BAD_STREAMS, ids=repr)
def test_bad_stream_name_in_frames(name: object) -> None:
    expect_remote_error(raw_frame(changed(FENCED, stream=name)), "bad-name")
    expect_remote_error(raw_frame(data_header(stream=name)), "bad-name")


@pytest.mark.parametrize("name", GOOD_STREAMS, ids=repr)
def test_good_stream_name(name: str) -> None:
    assert check_stream_name(name) == name
    msg = Fenced(name, 1, bytes(32))
    assert decode(encode(msg)) == [msg]


# -- receiver -> shipper frames carry a digest of their fields --------------------------------


@pytest.mark.parametrize("field", ["seg", "off", "sealed", "rseg", "roff", "stream"])
def test_ack_with_a_changed_field_is_refused(field: str) -> None:
    ack = Ack("db1", Position(SEG, 4096), False, Position("E00000000.log", 7)).to_header()
    other = {"seg": "E00000002.log", "off": 4097, "sealed": True, "rseg": "E00000001.log", "roff": 8, "stream": "db2"}
    expect_remote_error(raw_frame(changed(ack, **{field: other[field]})), "bad-digest")


def test_nack_with_a_changed_position_is_refused() -> None:
    nack = Nack("db1", Position(SEG, 4096), "r").to_header()
    expect_remote_error(raw_frame(changed(nack, off=0)), "bad-digest")
    expect_remote_error(raw_frame(changed(nack, xxh=...)), "bad-frame")


@pytest.mark.parametrize(
    "msg",
    [
        Ack("db1", Position(SEG, 1 << 20), False, Position("E00000000.log", 77)),
        Ack("db1", Position(SEG, 300), True),
        Nack("db1", Position(SEG, 65536), "chunk digest mismatch"),
    ],
    ids=["ack", "ack-sealed", "nack"],
)
def test_no_single_bit_flip_turns_an_ack_or_nack_into_another(msg: Ack | Nack) -> None:
    """Bytes in, messages out: each bit of the encoded frame flipped in turn. The decoder refuses the
    frame, waits for more bytes (a larger length prefix), or gives back the very message sent; never
    a different position, which the shipper would count as acknowledged (or rewind to)."""
    frame = encode(msg)
    for at in range(len(frame)):
        for bit in range(8):
            damaged = bytearray(frame)
            damaged[at] ^= 1 << bit
            decoder = FrameDecoder()
            decoder.receive_data(bytes(damaged))
            try:
                got = decoder.next_message()
            except ProtocolError:
                continue
            assert got is NEED_DATA or got == msg, (at, bit, got)


def test_an_http_request_is_named_as_such() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(FrameTooLarge, match=r"not a logship peer: looks like HTTP"):
        decoder.next_message()
