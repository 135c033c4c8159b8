"""Frames by hand: any header packed as-is, any length prefix, and whole frames read off a stream.

The protocol's own codec refuses to build or yield a malformed frame; these helpers exist so that a
test can put exactly the bytes it wants on the wire, or see exactly the bytes that crossed it.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import msgpack

from protocol.digest import chunk_digest

PREFIX = struct.Struct(">I")
"""The 4-byte big-endian length of the msgpack header that opens every frame."""


def length_prefixed(body: bytes) -> bytes:
    """Put the 4-byte length prefix in front of already-packed (possibly garbage) header bytes."""
    return PREFIX.pack(len(body)) + body


def raw_frame(header: Any, payload: bytes = b"", length: int | None = None) -> bytes:
    """Return a frame with ``header`` packed as msgpack as-is (any type), then ``payload``.

    ``length`` overrides the 4-byte header length prefix.
    """
    body = msgpack.packb(header, use_bin_type=True)
    return PREFIX.pack(len(body) if length is None else length) + body + payload


def data_header(stream: str, segment: str, offset: int, payload: bytes, **override: Any) -> dict[str, Any]:
    """The header of a correct DATA frame for ``payload``, with fields replaced by ``override``."""
    header: dict[str, Any] = {
        "t": "DATA",
        "stream": stream,
        "seg": segment,
        "off": offset,
        "len": len(payload),
        "xxh": chunk_digest(segment, offset, payload),
    }
    header.update(override)
    return header


async def read_frame(r: asyncio.StreamReader) -> tuple[bytes, bytes, Any, bytes]:
    """Read one whole frame as the wire carries it: (length prefix, raw header, decoded header, the
    DATA payload or b"")."""
    prefix = await r.readexactly(4)
    (hlen,) = PREFIX.unpack(prefix)
    header_raw = await r.readexactly(hlen)
    header = msgpack.unpackb(header_raw, raw=False)
    is_data = isinstance(header, dict) and header.get("t") == "DATA"
    payload = await r.readexactly(header["len"]) if is_data else b""
    return prefix, header_raw, header, payload
