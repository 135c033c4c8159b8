"""DATA payload compression: which encodings exist, how both ends agree, and the bounded decoder.

Compression is a property of the wire only. A DATA frame whose payload is compressed carries
``"enc": "zstd"`` and ``"ulen"`` (the uncompressed length) next to ``"len"`` (the bytes on the
wire); the decoder hands on the uncompressed payload, so digests, offsets and everything after the
codec never see the difference.

Agreement: the receiver lists the encodings it can decode in WELCOME ``features``; the shipper lists
the one it wants in HELLO ``features``; an encoding is used only if both list it. The decoder refuses
a compressed frame in an encoding that was not agreed.

Bounds (no zip bombs): ``ulen`` is checked against the decoder's maximum payload before a byte is
decompressed, the compressed size must be smaller than ``ulen`` (the shipper sends a chunk raw when
compression does not make it smaller), the zstd frame may not claim another size, and decompression
stops at ``ulen`` bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import zstandard

from protocol.errors import ErrorCode, FrameTooLarge, RemoteProtocolError

ZSTD: Final = "zstd"
ENCODINGS: Final = (ZSTD,)
"""Every payload encoding this implementation can decode; the receiver announces these."""
DEFAULT_LEVEL: Final = 3
MIN_LEVEL: Final = 1
MAX_LEVEL: Final = 19
_MAX_WINDOW: Final = 1 << 23


@dataclass(frozen=True, slots=True)
class Compression:
    """What a shipper asks for towards one target."""

    encoding: str = ZSTD
    """The payload encoding; only zstd exists."""
    level: int = DEFAULT_LEVEL
    """zstd level, 1 (fastest) to 19 (smallest)."""

    def __str__(self) -> str:
        return f"{self.encoding}:{self.level}"


def parse_compression(text: str) -> Compression | None:
    """Parse ``zstd``, ``zstd:LEVEL`` or ``none``.

    Raises ValueError for anything else.
    """
    m = re.fullmatch(r"\s*(zstd|none|off)(?::(\d{1,2}))?\s*", text.lower())
    if not m or (m.group(1) != ZSTD and m.group(2)):
        raise ValueError(f"bad compression {text!r}: expected zstd, zstd:LEVEL or none")
    if m.group(1) != ZSTD:
        return None
    level = int(m.group(2)) if m.group(2) else DEFAULT_LEVEL
    if not MIN_LEVEL <= level <= MAX_LEVEL:
        raise ValueError(f"bad zstd level {level}: expected {MIN_LEVEL} to {MAX_LEVEL}")
    return Compression(ZSTD, level)


def agreed(ours: tuple[str, ...] | frozenset[str], theirs: tuple[str, ...] | frozenset[str]) -> frozenset[str]:
    """The payload encodings both ends listed."""
    return frozenset(ours) & frozenset(theirs) & frozenset(ENCODINGS)


class PayloadCompressor:
    """Compress DATA payloads at one level (holds a reusable zstd context)."""

    def __init__(self, compression: Compression) -> None:
        self.compression = compression
        self._zstd = zstandard.ZstdCompressor(level=compression.level, write_content_size=True)

    @property
    def encoding(self) -> str:
        return self.compression.encoding

    def compress(self, payload: bytes) -> bytes | None:
        """Return the compressed payload, or None when it would not be smaller (then send it raw)."""
        if not payload:
            return None
        out = self._zstd.compress(payload)
        return out if len(out) < len(payload) else None


_decompressor = zstandard.ZstdDecompressor(max_window_size=_MAX_WINDOW)


def check_lengths(encoding: object, wire_len: int, ulen: object, max_payload: int, allowed: frozenset[str]) -> int:
    """Check a compressed DATA header before its payload is buffered; return ``ulen``.

    Raises RemoteProtocolError if the encoding was not agreed or the lengths are inconsistent,
    FrameTooLarge if the uncompressed length exceeds ``max_payload``.
    """
    if type(encoding) is not str or encoding not in allowed:
        raise RemoteProtocolError(f"DATA payload encoding {encoding!r} was not agreed", code=ErrorCode.BAD_ENCODING)
    if type(ulen) is not int or ulen <= 0:
        raise RemoteProtocolError("field 'ulen' must be a positive integer", code=ErrorCode.BAD_FRAME)
    if ulen > max_payload:
        raise FrameTooLarge(f"uncompressed payload length {ulen} exceeds {max_payload}")
    if wire_len >= ulen:
        raise RemoteProtocolError(
            f"compressed payload of {wire_len} bytes is not smaller than its {ulen} bytes", code=ErrorCode.BAD_ENCODING
        )
    return ulen


def decompress(encoding: str, data: bytes, ulen: int) -> bytes:
    """Return the ``ulen`` bytes ``data`` decompresses to; never produce more.

    Raises RemoteProtocolError (code bad-encoding) if ``data`` is not exactly one valid frame of that
    length.
    """
    if encoding != ZSTD:
        raise RemoteProtocolError(f"unknown payload encoding {encoding!r}", code=ErrorCode.BAD_ENCODING)
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError:
        raise RemoteProtocolError("compressed payload is not a zstd frame", code=ErrorCode.BAD_ENCODING) from None
    # A frame that states its size is decoded into a buffer of that size: refuse any other size
    # before zstd allocates it. One that states none is cut off at ulen by max_output_size.
    if declared not in (-1, ulen):
        raise RemoteProtocolError(
            f"compressed payload claims {declared} bytes, the header {ulen}", code=ErrorCode.BAD_ENCODING
        )
    try:
        out = _decompressor.decompress(data, max_output_size=ulen, allow_extra_data=False)
    except zstandard.ZstdError as e:
        raise RemoteProtocolError(f"undecodable compressed payload: {e}", code=ErrorCode.BAD_ENCODING) from None
    if len(out) != ulen:
        raise RemoteProtocolError(
            f"compressed payload holds {len(out)} bytes, the header says {ulen}", code=ErrorCode.BAD_ENCODING
        )
    return out
