"""Rules for names that cross the network: stream names and segment names."""

from __future__ import annotations

import re

from protocol.errors import ErrorCode, RemoteProtocolError

STREAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_SEGMENT_NAME = 255


def is_stream_name(name: object) -> bool:
    """Tell whether ``name`` is a valid stream name: the one rule config checks and the wire share."""
    return isinstance(name, str) and STREAM_NAME.fullmatch(name) is not None and ".." not in name


def check_stream_name(name: object) -> str:
    """Return ``name`` if it is a valid stream name.

    Raises RemoteProtocolError otherwise.
    """
    if not is_stream_name(name):
        raise RemoteProtocolError(f"invalid stream name {name!r}", code=ErrorCode.BAD_NAME)
    return name


def check_segment_name(name: object) -> str:
    """Return ``name`` if it is safe to use as a file name inside a stream directory.

    Raises RemoteProtocolError otherwise.
    """
    if (
        not isinstance(name, str)
        or not name
        or len(name.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_NAME
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or name in (".", "..")
        or name.startswith(".")
        or name.endswith((".tmp", ".partial"))
        or any(ord(c) < 0x20 for c in name)
    ):
        raise RemoteProtocolError(f"invalid segment name {name!r}", code=ErrorCode.BAD_NAME)
    return name
