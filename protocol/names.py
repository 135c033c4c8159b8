"""Rules for names that cross the network: stream names and segment names."""

from __future__ import annotations

import re

from protocol.errors import ErrorCode, RemoteProtocolError

STREAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_SEGMENT_NAME = 255
_SEGMENT_BAD_CHAR = re.compile(r"[\x00-\x1f/\\]")
"""A control character (NUL included) or a path separator: never in a segment name."""
_MAX_CHARS_UNENCODED = MAX_SEGMENT_NAME // 4
"""Names of at most this many characters fit MAX_SEGMENT_NAME bytes whatever they hold (UTF-8: at most
4 bytes a character), so their length needs no encoding to check."""

_CACHE_SIZE = 4096


class _Valid:
    """Names already found valid. Every DATA and ACK names its stream and segment again; a segment
    lives for many frames. The checks are pure functions of an immutable str, so a name once valid
    stays valid; only exact str is remembered (a subclass could compare equal and hash alike while
    being something else). Bounded: when full it starts over."""

    __slots__ = ("names",)

    def __init__(self) -> None:
        self.names: set[str] = set()

    def add(self, name: str) -> None:
        if len(self.names) >= _CACHE_SIZE:
            self.names.clear()
        self.names.add(name)


_STREAMS = _Valid()
_SEGMENTS = _Valid()


def is_stream_name(name: object) -> bool:
    """Tell whether ``name`` is a valid stream name: the one rule config checks and the wire share."""
    if type(name) is str and name in _STREAMS.names:
        return True
    valid = isinstance(name, str) and STREAM_NAME.fullmatch(name) is not None and ".." not in name
    if valid and type(name) is str:
        _STREAMS.add(name)
    return valid


def check_stream_name(name: object) -> str:
    """Return ``name`` if it is a valid stream name.

    Raises RemoteProtocolError otherwise.
    """
    if not is_stream_name(name):
        raise RemoteProtocolError(f"invalid stream name {name!r}", code=ErrorCode.BAD_NAME)
    return name  # type: ignore[return-value]


def is_segment_name(name: object) -> bool:
    """Tell whether ``name`` is safe to use as a file name inside a stream directory."""
    if type(name) is str and name in _SEGMENTS.names:
        return True
    valid = (
        isinstance(name, str)
        and name != ""
        and (len(name) <= _MAX_CHARS_UNENCODED or len(name.encode("utf-8", "surrogatepass")) <= MAX_SEGMENT_NAME)
        and _SEGMENT_BAD_CHAR.search(name) is None
        # ".", ".." and every hidden name.
        and not name.startswith(".")
        and not name.endswith((".tmp", ".partial"))
    )
    if valid and type(name) is str:
        _SEGMENTS.add(name)
    return valid


def check_segment_name(name: object) -> str:
    """Return ``name`` if it is safe to use as a file name inside a stream directory.

    Raises RemoteProtocolError otherwise.
    """
    if not is_segment_name(name):
        raise RemoteProtocolError(f"invalid segment name {name!r}", code=ErrorCode.BAD_NAME)
    return name  # type: ignore[return-value]
