"""Frames by hand: any header packed as-is, any length prefix, and whole frames read off a stream.

The protocol's own codec refuses to build or yield a malformed frame; these helpers exist so that a
test can put exactly the bytes it wants on the wire, or see exactly the bytes that crossed it.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any, NamedTuple

import msgpack
import pytest

from protocol.auth import TAG_SIZE, FrameSealer
from protocol.digest import chunk_digest
from protocol.errors import RemoteProtocolError
from protocol.framing import NEED_DATA, FrameDecoder
from protocol.limits import MAX_HEADER
from protocol.messages import Message

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


class Frame(NamedTuple):
    """One frame as the wire carried it."""

    prefix: bytes
    header_raw: bytes
    header: Any
    payload: bytes
    tag: bytes
    """The 16-byte tag after the header (protocol v3, after the handshake), or b""."""

    @property
    def wire(self) -> bytes:
        return self.prefix + self.header_raw + self.tag + self.payload


class TagTracker:
    """Know which frames of one direction carry a tag: towards the receiver every frame after HELLO,
    towards the shipper every frame after WELCOME (a FENCED or ERROR before it is untagged)."""

    def __init__(self, to_receiver: bool) -> None:
        self.to_receiver = to_receiver
        self.tagged = False

    def saw(self, header: Any) -> None:
        """Note a frame just read; the frames after it are tagged once the handshake is over."""
        if self.to_receiver or (isinstance(header, dict) and header.get("t") == "WELCOME"):
            self.tagged = True


async def read_frame(r: asyncio.StreamReader, tracker: TagTracker | None = None) -> Frame:
    """Read one whole frame as the wire carries it (with ``tracker``, its tag when it has one)."""
    prefix = await r.readexactly(4)
    (hlen,) = PREFIX.unpack(prefix)
    header_raw = await r.readexactly(hlen)
    tag = await r.readexactly(TAG_SIZE) if tracker is not None and tracker.tagged else b""
    header = msgpack.unpackb(header_raw, raw=False)
    is_data = isinstance(header, dict) and header.get("t") == "DATA"
    payload = await r.readexactly(header["len"]) if is_data else b""
    if tracker is not None:
        tracker.saw(header)
    return Frame(prefix, header_raw, header, payload, tag)


class TagSkipper:
    """An opener for a passive observer's FrameDecoder: it takes the tags off without checking them
    (it has no key); set it on the decoder once the handshake frame of its direction went by."""

    payload_mac = False

    def check(self, stream: object, head: object, tag: object) -> None:
        """Accept any tag: the observer only reads, the ends check."""

    def check_payload(self, stream: object, payload: object, mac: object) -> None:
        """Accept any payload MAC."""


def seal_raw(data: bytes, sealer: FrameSealer) -> bytes:
    """Tag every whole frame in hand-built ``data`` as an authenticated peer would, in order.

    The first bytes that do not parse as a frame (a bad length, an undecodable header) go out as
    they are: the receiver refuses them before it looks for a tag.
    """
    out = bytearray()
    pos = 0
    while len(data) - pos >= 4:
        (hlen,) = PREFIX.unpack_from(data, pos)
        end = pos + 4 + hlen
        if hlen == 0 or hlen > MAX_HEADER or end > len(data):
            break
        try:
            header = msgpack.unpackb(data[pos + 4 : end], raw=False)
        except Exception:  # noqa: BLE001 - garbage on purpose: send it untagged
            break
        if not isinstance(header, dict):
            break
        stream = header.get("stream")
        try:
            tag = sealer.tag(stream if isinstance(stream, str) else None, data[pos:end])
        except RemoteProtocolError:
            tag = bytes(TAG_SIZE)  # a stream outside the session: refused before its tag is looked at
        plen = header.get("len", 0) if header.get("t") == "DATA" else 0
        plen = plen if isinstance(plen, int) and 0 <= plen <= len(data) - end else len(data) - end
        out += data[pos:end] + tag + data[end : end + plen]
        pos = end + plen
    return bytes(out + data[pos:])


def drain(decoder: FrameDecoder, data: bytes) -> list[Message]:
    """Feed ``data`` to ``decoder`` and return every message it then yields."""
    decoder.receive_data(data)
    out = []
    while (msg := decoder.next_message()) is not NEED_DATA:
        out.append(msg)  # type: ignore[arg-type]
    return out


def refused(decoder: FrameDecoder, data: bytes) -> RemoteProtocolError:
    """Return the RemoteProtocolError ``decoder`` raises on ``data`` (fails the test if none)."""
    with pytest.raises(RemoteProtocolError) as info:
        drain(decoder, data)
    return info.value
