"""Compressed DATA payloads: parsing the setting, agreement, round trips, and every way a peer can lie."""

from __future__ import annotations

import os
from typing import Any

import msgpack
import pytest
import zstandard

from protocol.compression import (
    ENCODINGS,
    ZSTD,
    Compression,
    PayloadCompressor,
    agreed,
    decompress,
    parse_compression,
)
from protocol.digest import chunk_digest
from protocol.errors import FrameTooLarge, RemoteProtocolError
from protocol.framing import NEED_DATA, FrameDecoder, encode, encode_packed, encode_parts
from protocol.messages import Data, Heartbeat
from tests.helpers.frames import raw_frame

SEG = "E0000000001.log"
TEXT = b"".join(
    b"2026-11-26T00:00:%02d.000000Z txn=%012x lsn=%010X UPDATE orders key=%d status=paid\n"
    % (i % 60, i * 7919, i * 104729, i)
    for i in range(4000)
)
ZSTD_ONLY = frozenset({ZSTD})


def _data(payload: bytes, offset: int = 0) -> Data:
    return Data("db1", SEG, offset, chunk_digest(SEG, offset, payload), payload)


def _decode_all(frame: bytes, decoder: FrameDecoder) -> list[Any]:
    decoder.receive_data(frame)
    out = []
    while (msg := decoder.next_message()) is not NEED_DATA:
        out.append(msg)
    return out


def _compressed_header(payload_len: int, ulen: int, **extra: Any) -> dict[str, Any]:
    h = {"t": "DATA", "stream": "db1", "seg": SEG, "off": 0, "len": payload_len, "xxh": 0, "enc": ZSTD, "ulen": ulen}
    h.update(extra)
    return h


# -- the setting and the agreement -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("zstd", Compression(ZSTD, 3)),
        ("zstd:1", Compression(ZSTD, 1)),
        ("ZSTD:19", Compression(ZSTD, 19)),
        ("none", None),
        ("off", None),
    ],
)
def test_parse_compression(text: str, want: Compression | None) -> None:
    assert parse_compression(text) == want


@pytest.mark.parametrize("text", ["", "gzip", "zstd:0", "zstd:20", "zstd:", "zstd:x", "none:3", "zstd:-1"])
def test_parse_compression_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_compression(text)


def test_agreed_needs_both_sides() -> None:
    assert agreed(("zstd",), ENCODINGS) == ZSTD_ONLY
    assert agreed((), ENCODINGS) == frozenset()
    assert agreed(("zstd",), ()) == frozenset()
    assert agreed(("zstd", "lz9"), ("zstd", "lz9")) == ZSTD_ONLY  # only what we implement


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [1, 3, 19])
def test_round_trip_whole_and_byte_by_byte(level: int) -> None:
    compressor = PayloadCompressor(Compression(ZSTD, level))
    msg = _data(TEXT, 4096)
    head, payload = encode_parts(msg, compressor)
    header = msgpack.unpackb(head[4:])
    assert header["enc"] == ZSTD and header["ulen"] == len(TEXT) and header["len"] == len(payload)
    assert len(payload) < len(TEXT) // 3, "log-like text should shrink well"
    frame = head + payload
    assert _decode_all(frame, FrameDecoder(encodings=ZSTD_ONLY)) == [msg]
    decoder = FrameDecoder(encodings=ZSTD_ONLY)
    got = []
    for i in range(len(frame)):
        got += _decode_all(frame[i : i + 1], decoder)
    assert got == [msg]
    # With trailing frames in the same buffer.
    assert _decode_all(frame + encode(Heartbeat()) + frame, FrameDecoder(encodings=ZSTD_ONLY)) == [
        msg,
        Heartbeat(),
        msg,
    ]


def test_incompressible_and_empty_payloads_go_raw() -> None:
    compressor = PayloadCompressor(Compression())
    noise = os.urandom(64 * 1024)
    for payload in (noise, b""):
        head, wire = encode_parts(_data(payload), compressor)
        assert "enc" not in msgpack.unpackb(head[4:])
        assert wire == payload
        # A raw frame decodes the same whether or not compression was agreed.
        assert _decode_all(head + wire, FrameDecoder(encodings=ZSTD_ONLY)) == [_data(payload)]


def test_digest_is_over_the_uncompressed_bytes() -> None:
    frame = encode(_data(TEXT), PayloadCompressor(Compression()))
    (msg,) = _decode_all(frame, FrameDecoder(encodings=ZSTD_ONLY))
    assert msg.payload == TEXT and msg.digest == chunk_digest(SEG, 0, TEXT)


# -- a peer that lies ----------------------------------------------------------------------------


def test_compressed_frame_without_agreement_is_refused() -> None:
    frame = encode(_data(TEXT), PayloadCompressor(Compression()))
    with pytest.raises(RemoteProtocolError) as e:
        _decode_all(frame, FrameDecoder())
    assert e.value.code == "bad-encoding"


@pytest.mark.parametrize(
    ("enc", "ulen", "code"),
    [
        ("gzip", 100, "bad-encoding"),
        (7, 100, "bad-encoding"),
        (ZSTD, 0, "bad-frame"),
        (ZSTD, "1", "bad-frame"),
        (ZSTD, None, "bad-frame"),
    ],
)
def test_bad_encoding_fields_are_refused_before_the_payload(enc: object, ulen: object, code: str) -> None:
    header = _compressed_header(10, 100)
    header.update(enc=enc, ulen=ulen)
    decoder = FrameDecoder(encodings=ZSTD_ONLY)
    with pytest.raises(RemoteProtocolError) as e:
        _decode_all(raw_frame(header, b""), decoder)  # refused with no payload byte buffered
    assert e.value.code == code


def test_declared_length_above_max_payload_is_refused_before_decompressing() -> None:
    decoder = FrameDecoder(max_payload=1 << 20, encodings=ZSTD_ONLY)
    with pytest.raises(FrameTooLarge):
        _decode_all(raw_frame(_compressed_header(100, (1 << 20) + 1), b""), decoder)


def test_compressed_not_smaller_than_declared_is_refused() -> None:
    with pytest.raises(RemoteProtocolError) as e:
        _decode_all(raw_frame(_compressed_header(100, 100), b"x" * 100), FrameDecoder(encodings=ZSTD_ONLY))
    assert e.value.code == "bad-encoding"


def test_zip_bomb_is_refused_without_inflating_it() -> None:
    # 64 MiB of zeros in ~2 KiB, whose frame header states its true size: refused on the header.
    bomb = zstandard.ZstdCompressor(level=3).compress(b"\0" * (64 << 20))
    header = _compressed_header(len(bomb), 1 << 20)
    with pytest.raises(RemoteProtocolError, match="claims"):
        _decode_all(raw_frame(header, bomb), FrameDecoder(max_payload=4 << 20, encodings=ZSTD_ONLY))
    # The same without a size in the frame header: decompression stops at ulen.
    c = zstandard.ZstdCompressor(level=3, write_content_size=False).compressobj()
    quiet_bomb = c.compress(b"\0" * (64 << 20)) + c.flush()
    with pytest.raises(RemoteProtocolError) as e:
        _decode_all(
            raw_frame(_compressed_header(len(quiet_bomb), 1 << 20), quiet_bomb),
            FrameDecoder(max_payload=4 << 20, encodings=ZSTD_ONLY),
        )
    assert e.value.code == "bad-encoding"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[: len(b) // 2],  # truncated frame
        lambda b: b"\x00" * len(b),  # not zstd at all
        lambda b: b[:-4] + bytes(x ^ 0xFF for x in b[-4:]),  # damaged checksum/tail
        lambda b: b + b"tail",  # trailing bytes after the frame
    ],
)
def test_bad_compressed_data_is_a_protocol_error(mutate: Any) -> None:
    good = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(TEXT)
    bad = mutate(good)
    with pytest.raises(RemoteProtocolError) as e:
        _decode_all(raw_frame(_compressed_header(len(bad), len(TEXT)), bad), FrameDecoder(encodings=ZSTD_ONLY))
    assert e.value.code == "bad-encoding"


def test_wrong_declared_length_is_refused() -> None:
    packed = zstandard.ZstdCompressor(level=3).compress(TEXT)
    with pytest.raises(RemoteProtocolError):
        decompress(ZSTD, packed, len(TEXT) - 1)
    with pytest.raises(RemoteProtocolError):
        decompress(ZSTD, packed, len(TEXT) + 1)
    assert decompress(ZSTD, packed, len(TEXT)) == TEXT


def test_decoder_stays_closed_after_a_bad_compressed_frame() -> None:
    decoder = FrameDecoder(encodings=ZSTD_ONLY)
    with pytest.raises(RemoteProtocolError):
        _decode_all(raw_frame(_compressed_header(8, 100), b"\x00" * 8), decoder)
    with pytest.raises(RemoteProtocolError):
        decoder.next_message()


def test_precompressed_encoding_matches() -> None:
    """The sender compresses in a worker thread and encodes afterwards: the frame is the same."""
    compressor = PayloadCompressor(Compression())
    msg = _data(TEXT, 8192)
    assert encode_packed(msg, ZSTD, compressor.compress(TEXT)) == encode_parts(msg, compressor)
    noise = _data(os.urandom(4096))
    assert encode_packed(noise, ZSTD, None) == encode_parts(noise, compressor) == encode_parts(noise)
