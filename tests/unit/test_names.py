"""The name checks with their memory of valid names and their compiled rules say exactly what the
plain rules say, the first time and every time after."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import names
from protocol.errors import RemoteProtocolError
from protocol.names import check_segment_name, check_stream_name, is_segment_name, is_stream_name


def reference_segment(name: object) -> bool:
    # The rule as it was written before the checks were made cheaper: one condition per line.
    return not (
        not isinstance(name, str)
        or not name
        or len(name.encode("utf-8", "surrogatepass")) > names.MAX_SEGMENT_NAME
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or name in (".", "..")
        or name.startswith(".")
        or name.endswith((".tmp", ".partial"))
        or any(ord(c) < 0x20 for c in name)
    )


def reference_stream(name: object) -> bool:
    return (
        isinstance(name, str)
        and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name) is not None
        and ".." not in name
    )


# Characters the rules care about, often enough to matter, and any others (surrogates included).
special = st.sampled_from(["/", "\\", "\x00", "\x1f", "\x7f", ".", "tmp", "partial", "\u00e9", "\U0001f600", "\ud800"])
text = st.lists(st.one_of(special, st.text(max_size=3)), max_size=80).map("".join)


@given(text)
def test_segment_rule_unchanged(name: str) -> None:
    for _ in range(2):  # the second time from memory, if the first found it valid
        assert is_segment_name(name) is reference_segment(name)


@given(st.one_of(text, st.from_regex(names.STREAM_NAME, fullmatch=True)))
def test_stream_rule_unchanged(name: str) -> None:
    for _ in range(2):
        assert is_stream_name(name) is reference_stream(name)


@pytest.mark.parametrize("name", ["x" * 60 + "\U0001f600" * 49, "\u00e9" * 128, "a" * 256])
def test_segment_length_counts_bytes(name: str) -> None:
    # Over 255 bytes in UTF-8 although some are at most 255 characters.
    assert len(name.encode()) > names.MAX_SEGMENT_NAME
    with pytest.raises(RemoteProtocolError):
        check_segment_name(name)


class Sly(str):
    """A str that claims to equal a valid name: never let through on the strength of the memory."""

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = str.__hash__


def test_memory_only_for_exact_str() -> None:
    assert check_segment_name("000000010000000000000007") == "000000010000000000000007"
    assert check_stream_name("db1") == "db1"
    sly = Sly("bad/name")
    with pytest.raises(RemoteProtocolError):
        check_segment_name(sly)
    with pytest.raises(RemoteProtocolError):
        check_stream_name(Sly("-db"))


def test_memory_is_bounded() -> None:
    for i in range(names._CACHE_SIZE + 10):
        check_segment_name(f"seg{i:08d}")
    assert len(names._SEGMENTS.names) <= names._CACHE_SIZE
    assert check_segment_name("seg00000001") == "seg00000001"


@pytest.mark.parametrize("name", [None, 1, b"E01", ["E01"], {"a": 1}])
def test_unhashable_and_other_types_refused(name: object) -> None:
    with pytest.raises(RemoteProtocolError):
        check_segment_name(name)
    with pytest.raises(RemoteProtocolError):
        check_stream_name(name)
