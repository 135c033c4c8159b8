"""Checks of untrusted header fields: each reads one field of a decoded msgpack map and returns it
with the right type and range, or raises RemoteProtocolError (code bad-frame or bad-name). No I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.names import check_segment_name, check_stream_name

MAX_OFFSET = 1 << 62
MAX_TEXT = 4096
MAX_FORKS = 1024
"""Forks a HELLO's history may list (protocol/history.py checks what they mean)."""

WireFork = tuple[int, str | None, int, bytes]
"""One fork of a history as it travels: epoch, fork segment (None: not known), fork offset, digest."""


def get(h: Mapping[str, Any], key: str) -> Any:
    try:
        return h[key]
    except KeyError:
        raise RemoteProtocolError(f"missing field {key!r}", code=ErrorCode.BAD_FRAME) from None


def integer(h: Mapping[str, Any], key: str, lo: int = 0, hi: int = MAX_OFFSET) -> int:
    v = get(h, key)
    if type(v) is not int or not lo <= v <= hi:
        raise RemoteProtocolError(f"field {key!r} must be an integer in [{lo}, {hi}]", code=ErrorCode.BAD_FRAME)
    return v


def boolean(h: Mapping[str, Any], key: str) -> bool:
    v = get(h, key)
    if type(v) is not bool:
        raise RemoteProtocolError(f"field {key!r} must be a boolean", code=ErrorCode.BAD_FRAME)
    return v


def text(h: Mapping[str, Any], key: str, max_len: int = MAX_TEXT) -> str:
    v = get(h, key)
    if type(v) is not str or len(v) > max_len:
        raise RemoteProtocolError(f"field {key!r} must be a string of at most {max_len}", code=ErrorCode.BAD_FRAME)
    return v


MAX_SID = 64
"""A shipper's sender id (HELLO's ``sid``, ``PID.RANDOM/N``) is at most this long."""


def sid(h: Mapping[str, Any], key: str) -> str:
    """An optional sender id (absent: ""): non-empty printable text of at most MAX_SID characters.

    Only bounded, not parsed: it names another shipper (perhaps an older one, of another format), and
    a value this end cannot match simply matches nothing (protocol/handshake.py ``same_process``).
    """
    if key not in h:
        return ""
    v = get(h, key)
    if type(v) is not str or not 0 < len(v) <= MAX_SID or not v.isprintable():
        raise RemoteProtocolError(
            f"field {key!r} must be printable text of 1 to {MAX_SID} characters", code=ErrorCode.BAD_FRAME
        )
    return v


def octets(h: Mapping[str, Any], key: str, size: int) -> bytes:
    v = get(h, key)
    if type(v) is not bytes or len(v) != size:
        raise RemoteProtocolError(f"field {key!r} must be {size} bytes", code=ErrorCode.BAD_FRAME)
    return v


def items(h: Mapping[str, Any], key: str, max_len: int) -> list[Any]:
    v = get(h, key)
    if type(v) not in (list, tuple) or len(v) > max_len:
        raise RemoteProtocolError(f"field {key!r} must be a list of at most {max_len}", code=ErrorCode.BAD_FRAME)
    return list(v)


def mapping(v: Any, what: str) -> Mapping[str, Any]:
    if type(v) is not dict:
        raise RemoteProtocolError(f"{what} must be a map", code=ErrorCode.BAD_FRAME)
    return v


def stream(h: Mapping[str, Any]) -> str:
    return check_stream_name(get(h, "stream"))


def segment(h: Mapping[str, Any], key: str = "seg", allow_empty: bool = False) -> str:
    v = get(h, key)
    if allow_empty and v == "":
        return ""
    return check_segment_name(v)


def features(h: Mapping[str, Any]) -> tuple[str, ...]:
    found = items(h, "features", 32)
    if not all(type(f) is str and len(f) <= 64 for f in found):
        raise RemoteProtocolError("features must be short strings", code=ErrorCode.BAD_FRAME)
    return tuple(found)


def forks(h: Mapping[str, Any], key: str = "history") -> tuple[WireFork, ...]:
    """An optional list of forks (absent: none); types and sizes checked, meaning left to protocol/history.py."""
    if key not in h:
        return ()
    out = []
    for v in items(h, key, MAX_FORKS):
        if type(v) not in (list, tuple) or len(v) != 4:
            raise RemoteProtocolError("a fork must be [epoch, segment, offset, digest]", code=ErrorCode.BAD_FRAME)
        epoch, seg, off, digest = v
        if type(epoch) is not int or not 0 < epoch <= MAX_OFFSET or type(off) is not int or not 0 <= off <= MAX_OFFSET:
            raise RemoteProtocolError("a fork's epoch and offset must be integers in range", code=ErrorCode.BAD_FRAME)
        if type(digest) is not bytes or len(digest) not in (0, 16):
            raise RemoteProtocolError("a fork's digest must be empty or 16 bytes", code=ErrorCode.BAD_FRAME)
        if seg is not None and seg != "":
            check_segment_name(seg)
        elif seg is not None and off:
            raise RemoteProtocolError("a fork before the first segment has offset 0", code=ErrorCode.BAD_FRAME)
        out.append((epoch, seg, off, digest))
    return tuple(out)
