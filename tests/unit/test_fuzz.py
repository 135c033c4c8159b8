"""Hypothesis over the frame decoder: random bytes, mutated frames, and round trips.

The rule is h2's: whatever comes in, the decoder yields valid messages or raises a ProtocolError
(and stays closed); nothing else may escape. Examples per test default to a CI-sized number; set
LOGSHIP_FUZZ_EXAMPLES (an int) for a long run, e.g. ``LOGSHIP_FUZZ_EXAMPLES=100000``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from protocol.errors import ProtocolError
from protocol.fields import MAX_OFFSET
from protocol.framing import NEED_DATA, FrameDecoder, encode, encode_parts
from protocol.messages import (
    MESSAGE_TYPES,
    NONCE_SIZE,
    PAYLOAD_TYPES,
    PROOF_SIZE,
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
    StreamClaim,
    StreamResume,
    Welcome,
)
from protocol.names import STREAM_NAME
from tests.helpers.frames import length_prefixed

CI_EXAMPLES = 250
LONG_EXAMPLES = int(os.environ.get("LOGSHIP_FUZZ_EXAMPLES") or 0)

settings.register_profile(
    "logship-ci",
    max_examples=CI_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "logship-long",
    max_examples=LONG_EXAMPLES or CI_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ = settings.get_profile("logship-long" if LONG_EXAMPLES else "logship-ci")

MESSAGE_CLASSES = (Challenge, Hello, Welcome, Data, Seal, Ack, Nack, Heartbeat, Error, Fenced)


# -- strategies for valid messages -----------------------------------------------------------

texts = st.characters(codec="utf-8")
stream_names = st.from_regex(STREAM_NAME, fullmatch=True).filter(lambda s: ".." not in s)
segment_names = st.one_of(
    st.from_regex(r"E[0-9A-F]{8}\.log", fullmatch=True),
    st.from_regex(r"[0-9A-F]{24}", fullmatch=True),
    st.text(
        st.characters(codec="utf-8", min_codepoint=0x20, exclude_characters="/\\"),
        min_size=1,
        max_size=40,
    ).filter(lambda s: not s.startswith(".") and not s.endswith((".tmp", ".partial"))),
)
offsets = st.integers(0, MAX_OFFSET)
small_ints = st.integers(0, 1 << 20)
nodes = st.text(texts, max_size=255)
nonces = st.binary(min_size=NONCE_SIZE, max_size=NONCE_SIZE)
proofs = st.binary(min_size=PROOF_SIZE, max_size=PROOF_SIZE)
features = st.lists(st.text(texts, max_size=64), max_size=4).map(tuple)
positions = st.builds(Position, segment_names, offsets)
positions_or_start = st.builds(Position, st.just("") | segment_names, offsets)

messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Challenge, st.lists(st.integers(1, (1 << 16) - 1), min_size=1, max_size=16).map(tuple), nonces, nodes),
    st.builds(
        Hello,
        st.integers(1, (1 << 16) - 1),
        nodes,
        nonces,
        st.lists(st.builds(StreamClaim, stream_names, offsets, proofs), max_size=4).map(tuple),
        features,
    ),
    st.builds(
        Welcome,
        st.integers(1, (1 << 16) - 1),
        nodes,
        st.lists(
            st.builds(StreamResume, stream_names, offsets, positions_or_start, st.booleans(), proofs), max_size=4
        ).map(tuple),
        features,
    ),
    st.builds(
        Data,
        stream_names,
        segment_names,
        offsets,
        st.integers(0, (1 << 64) - 1),
        st.binary(max_size=300),
        st.booleans(),
    ),
    st.builds(Seal, stream_names, segment_names, offsets, st.binary(min_size=16, max_size=16)),
    st.builds(Ack, stream_names, positions_or_start, st.booleans(), positions_or_start),
    st.builds(Nack, stream_names, positions, st.text(texts, max_size=200)),
    st.just(Heartbeat()),
    st.builds(Error, st.text(texts, max_size=64), st.text(texts, max_size=200)),
    st.builds(Fenced, stream_names, offsets, st.binary(min_size=32, max_size=32)),
)
message_lists = st.lists(messages, min_size=1, max_size=5)


# -- strategies for hostile input ------------------------------------------------------------

FIELD_NAMES = sorted(
    {"t", "versions", "nonce", "node", "version", "streams", "features", "stream", "seg", "off", "len", "xxh"}
    | {"size", "sealed", "rseg", "roff", "reason", "code", "text", "epoch", "proof"}
)
TYPE_NAMES = sorted({*MESSAGE_TYPES, *PAYLOAD_TYPES})

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 63), (1 << 64) - 1),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=40),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)),
    st.builds(msgpack.Timestamp, st.integers(0, 1 << 34), st.integers(0, 999_999_999)),
)
# Values that get past the first checks, so the fuzzer reaches the deeper ones.
plausible = st.one_of(
    stream_names,
    segment_names,
    small_ints,
    offsets,
    nonces,
    st.binary(min_size=16, max_size=16),
    st.just([1]),
    st.sampled_from(TYPE_NAMES),
)
values = st.recursive(
    scalars | plausible,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(), inner, max_size=4)
    ),
    max_leaves=8,
)


def _mutate_map(draw: st.DrawFn, m: dict[str, Any]) -> None:
    """Replace, delete or add a few fields of ``m`` in place."""
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(m)) | st.sampled_from(FIELD_NAMES)) if m else "t"
        if draw(st.booleans()):
            m.pop(key, None)
        else:
            m[key] = draw(values)


@st.composite
def hostile_frames(draw: st.DrawFn) -> bytes:
    """A frame whose msgpack header is well formed but whose fields may be anything.

    Most start from a valid message's header with a few fields changed (at the top or inside one
    stream entry), so the checks deep in the message layer get exercised, not just the type check.
    """
    if draw(st.integers(0, 9)) == 0:
        header: dict[str, Any] = {"t": draw(values), **draw(st.dictionaries(st.sampled_from(FIELD_NAMES), values))}
    else:
        header = draw(messages).to_header()
        entries = header.get("streams")
        if entries and draw(st.booleans()):
            _mutate_map(draw, draw(st.sampled_from(entries)))
        else:
            _mutate_map(draw, header)
    plen = header.get("len")
    payload = bytes(plen) if type(plen) is int and 0 <= plen <= 300 else draw(st.binary(max_size=64))
    return length_prefixed(msgpack.packb(header, use_bin_type=True)) + payload


@st.composite
def splits(draw: st.DrawFn, blob: bytes) -> list[bytes]:
    """Cut ``blob`` into consecutive chunks at drawn points."""
    cuts = sorted(draw(st.lists(st.integers(0, len(blob)), max_size=12)))
    bounds = [0, *cuts, len(blob)]
    return [blob[a:b] for a, b in itertools.pairwise(bounds)]


# -- helpers ---------------------------------------------------------------------------------


def feed(chunks: Sequence[bytes], max_payload: int = 1 << 16) -> tuple[list[Message], ProtocolError | None]:
    """Feed chunks, draining after each; return the messages and the ProtocolError that ended it, if any.

    Anything that is not a ProtocolError propagates and fails the test.
    """
    decoder = FrameDecoder(max_payload)
    out: list[Message] = []
    try:
        for chunk in chunks:
            decoder.receive_data(chunk)
            while (msg := decoder.next_message()) is not NEED_DATA:
                out.append(msg)  # type: ignore[arg-type]
    except ProtocolError as e:
        assert isinstance(e.code, str) and e.code, f"error without a code: {e!r}"
        event(f"{type(e).__name__}: {e.code}")  # see --hypothesis-show-statistics
        with pytest.raises(ProtocolError):  # closed for good
            decoder.next_message()
        with pytest.raises(ProtocolError):
            decoder.receive_data(b"\x00")
        return out, e
    return out, None


def assert_valid(msgs: Sequence[Message]) -> None:
    """Every message the decoder yields is a proper message that round-trips on its own."""
    for msg in msgs:
        assert isinstance(msg, MESSAGE_CLASSES)
        again, err = feed([encode(msg)])
        assert err is None and again == [msg]


# -- (a) random input ------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=2048).flatmap(splits))
def test_random_bytes_raise_only_protocol_errors(chunks: list[bytes]) -> None:
    msgs, _ = feed(chunks)
    assert_valid(msgs)


@FUZZ
@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=4).flatmap(
        lambda bodies: splits(b"".join(length_prefixed(b) for b in bodies))
    )
)
def test_random_header_bodies_raise_only_protocol_errors(chunks: list[bytes]) -> None:
    # Right length prefixes around random bodies: the msgpack layer sees the garbage.
    msgs, _ = feed(chunks)
    assert_valid(msgs)


@FUZZ
@given(st.lists(hostile_frames(), min_size=1, max_size=3).flatmap(lambda frames: splits(b"".join(frames))))
def test_hostile_headers_raise_only_protocol_errors(chunks: list[bytes]) -> None:
    # Well-formed msgpack maps with our field names and odd values: the message layer sees the garbage.
    msgs, _ = feed(chunks)
    assert_valid(msgs)


# -- (b) mutated valid frames ----------------------------------------------------------------


@FUZZ
@given(message_lists, st.data())
def test_one_byte_mutated(msgs: list[Message], data: st.DataObject) -> None:
    blob = bytearray(b"".join(encode(m) for m in msgs))
    i = data.draw(st.integers(0, len(blob) - 1), label="index")
    blob[i] ^= data.draw(st.integers(1, 255), label="xor")
    decoded, _ = feed(data.draw(splits(bytes(blob))))
    assert_valid(decoded)


@FUZZ
@given(message_lists, st.data())
def test_truncated_yields_whole_frames_then_needs_data(msgs: list[Message], data: st.DataObject) -> None:
    frames = [encode(m) for m in msgs]
    blob = b"".join(frames)
    cut = data.draw(st.integers(0, len(blob) - 1), label="cut")
    complete, end = 0, 0
    for frame in frames:
        if end + len(frame) > cut:
            break
        end += len(frame)
        complete += 1
    decoded, err = feed(data.draw(splits(blob[:cut])))
    assert err is None
    assert decoded == msgs[:complete]


@FUZZ
@given(message_lists, st.binary(min_size=1, max_size=200), st.data())
def test_extended_decodes_originals_first(msgs: list[Message], extra: bytes, data: st.DataObject) -> None:
    blob = b"".join(encode(m) for m in msgs) + extra
    decoded, _ = feed(data.draw(splits(blob)))
    assert decoded[: len(msgs)] == msgs
    assert_valid(decoded[len(msgs) :])


# -- (c) round trip --------------------------------------------------------------------------


@FUZZ
@given(message_lists, st.data())
def test_round_trip_any_split(msgs: list[Message], data: st.DataObject) -> None:
    blob = b"".join(encode(m) for m in msgs)
    decoded, err = feed(data.draw(splits(blob)))
    assert err is None
    assert decoded == msgs


@FUZZ
@given(messages)
def test_encode_parts_agrees_with_encode(msg: Message) -> None:
    head, payload = encode_parts(msg)
    assert head + payload == encode(msg)
    assert payload == (msg.payload if isinstance(msg, Data) else b"")
