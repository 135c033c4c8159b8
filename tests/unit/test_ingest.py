"""Ingest: the per-stream state machine from DATA/SEAL frames to storage ops or resend verdicts."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.digest import chunk_digest, seal_digest, segment_digest
from protocol.errors import RemoteProtocolError
from protocol.messages import Data, Position, Seal
from receiver.ingest import MAX_TRIES, Ingest, Outcome, Verdict
from receiver.ops import Install, Op, Restart, Write

STREAM = "db1"
S1 = "E00000001.log"
S2 = "E00000002.log"
S3 = "E00000003.log"


def data(segment: str, offset: int, payload: bytes, corrupt: bool = False) -> Data:
    """Return a DATA frame; ``corrupt`` flips one payload bit after the digest was taken."""
    digest = chunk_digest(segment, offset, payload)
    if corrupt:
        payload = bytes([payload[0] ^ 0x01]) + payload[1:] if payload else payload
        if not payload:
            digest ^= 1
    return Data(STREAM, segment, offset, digest, payload)


def seal(segment: str, content: bytes, corrupt: bool = False, size: int | None = None) -> Seal:
    """Return a SEAL frame for ``content``; ``corrupt`` flips one bit of its seal digest."""
    digest = seal_digest(segment, len(content) if size is None else size, segment_digest(content))
    if corrupt:
        digest = bytes([digest[0] ^ 0x80]) + digest[1:]
    return Seal(STREAM, segment, len(content) if size is None else size, digest)


def fresh() -> Ingest:
    return Ingest("", None, 0)


def feed(ingest: Ingest, segment: str, chunks: list[bytes], start: int = 0) -> list[Op]:
    """Send ``chunks`` in order from ``start``; every one must be accepted. Return the ops."""
    ops: list[Op] = []
    offset = start
    for chunk in chunks:
        out = ingest.on_data(data(segment, offset, chunk))
        assert out.verdict is Verdict.ACCEPT, out
        ops += out.ops
        offset += len(chunk)
    return ops


# -- in order --------------------------------------------------------------------------------


def test_in_order_data_produces_writes_and_seal_installs() -> None:
    ingest = fresh()
    assert ingest.expected == Position("", 0)
    a, b = b"hello ", b"world"
    ops = feed(ingest, S1, [a, b])
    assert ops == [Write(S1, 0, a, chunk_digest(S1, 0, a)), Write(S1, 6, b, chunk_digest(S1, 6, b))]
    assert [w.payload for w in ops if isinstance(w, Write)] == [a, b]
    assert ingest.active == S1
    assert ingest.expected == Position(S1, 11)
    assert ingest.hasher.digest() == segment_digest(a + b)

    out = ingest.on_seal(seal(S1, a + b))
    assert out.verdict is Verdict.ACCEPT
    assert out.ops == [Install(S1, 11, segment_digest(a + b), "")]
    assert ingest.last_sealed == S1
    assert ingest.active is None
    assert ingest.expected == Position(S1, 0)

    ops = feed(ingest, S2, [b"next"])
    assert ops == [Write(S2, 0, b"next", chunk_digest(S2, 0, b"next"))]
    assert ingest.expected == Position(S2, 4)


def test_resumes_from_recovered_partial() -> None:
    head, tail = b"x" * 100, b"y" * 50
    hasher = Ingest("", None, 0).hasher
    hasher.update(head)
    ingest = Ingest(S1, S2, len(head), hasher)
    assert ingest.expected == Position(S2, 100)
    feed(ingest, S2, [tail], start=100)
    assert ingest.on_seal(seal(S2, head + tail)).ops == [Install(S2, 150, segment_digest(head + tail), S1)]


def test_empty_segment_sealed_at_size_zero() -> None:
    ingest = Ingest(S1, None, 0)
    out = ingest.on_seal(seal(S2, b""))
    assert out.verdict is Verdict.ACCEPT
    assert out.ops == [Write(S2, 0, b"", chunk_digest(S2, 0, b"")), Install(S2, 0, segment_digest(b""), S1)]
    assert ingest.last_sealed == S2
    assert ingest.active is None


def test_empty_segment_after_open_segment_is_an_error() -> None:
    ingest = fresh()
    feed(ingest, S1, [b"abc"])
    with pytest.raises(RemoteProtocolError) as e:
        ingest.on_seal(seal(S2, b""))
    assert e.value.code == "bad-position"


# -- out of order ----------------------------------------------------------------------------


def test_first_chunk_of_new_segment_must_be_at_offset_zero() -> None:
    ingest = fresh()
    with pytest.raises(RemoteProtocolError) as e:
        ingest.on_data(data(S1, 5, b"abc"))
    assert e.value.code == "bad-position"
    assert ingest.active is None


@pytest.mark.parametrize("segment", [S1, S2, "A", ""])
def test_new_segment_must_come_after_last_sealed(segment: str) -> None:
    ingest = Ingest(S2, None, 0)
    with pytest.raises(RemoteProtocolError) as e:
        ingest.on_data(Data(STREAM, segment, 0, chunk_digest(segment, 0, b"abc"), b"abc"))
    assert e.value.code == "bad-position"


@pytest.mark.parametrize("segment", [S1, S2])
def test_seal_of_new_segment_must_come_after_last_sealed(segment: str) -> None:
    ingest = Ingest(S2, None, 0)
    with pytest.raises(RemoteProtocolError) as e:
        ingest.on_seal(seal(segment, b""))
    assert e.value.code == "bad-position"


@pytest.mark.parametrize("offset", [0, 3, 9, 11, 1 << 40])
def test_offset_in_the_past_or_future_raises(offset: int) -> None:
    ingest = fresh()
    feed(ingest, S1, [b"0123456789"])
    with pytest.raises(RemoteProtocolError) as e:
        ingest.on_data(data(S1, offset, b"abc"))
    assert e.value.code == "bad-position"
    assert ingest.expected == Position(S1, 10)


@pytest.mark.parametrize("segment", [S2, S3, "A"])
def test_data_for_another_segment_while_one_is_open_raises(segment: str) -> None:
    ingest = Ingest("", S1, 0)
    feed(ingest, S1, [b"abc"])
    with pytest.raises(RemoteProtocolError) as e:
        ingest.on_data(data(segment, 0, b"x"))
    assert e.value.code == "bad-position"
    with pytest.raises(RemoteProtocolError):
        ingest.on_seal(seal(segment, b"abc"))


@pytest.mark.parametrize("size", [0, 2, 4, 100])
def test_seal_with_wrong_size_raises(size: int) -> None:
    ingest = fresh()
    feed(ingest, S1, [b"abc"])
    with pytest.raises(RemoteProtocolError) as e:
        ingest.on_seal(seal(S1, b"abc", size=size))
    assert e.value.code == "bad-size"
    assert ingest.active == S1


def test_seal_of_new_segment_with_nonzero_size_raises() -> None:
    ingest = Ingest(S1, None, 0)
    with pytest.raises(RemoteProtocolError) as e:
        ingest.on_seal(seal(S2, b"abc"))
    assert e.value.code == "bad-size"


# -- resends ---------------------------------------------------------------------------------


def test_corrupt_chunk_asks_for_resend_and_drops_until_it_arrives() -> None:
    ingest = fresh()
    feed(ingest, S1, [b"aaaa"])
    out = ingest.on_data(data(S1, 4, b"bbbb", corrupt=True))
    assert out.verdict is Verdict.RESEND
    assert out.resend_from == Position(S1, 4)
    assert out.ops == []
    assert "chunk digest" in out.reason
    assert ingest.resends == 1
    assert ingest.expected == Position(S1, 4)

    # Pipelined frames already on the wire, and anything else not at the resend position, are dropped.
    for frame in (data(S1, 8, b"cccc"), data(S1, 12, b"dddd"), data(S1, 0, b"aaaa"), data(S2, 0, b"z")):
        assert ingest.on_data(frame).verdict is Verdict.DROP
    assert ingest.on_seal(seal(S1, b"aaaabbbbccccdddd")).verdict is Verdict.DROP
    assert ingest.expected == Position(S1, 4)

    ops = feed(ingest, S1, [b"bbbb", b"cccc"], start=4)
    assert [op.offset for op in ops if isinstance(op, Write)] == [4, 8]
    assert ingest.on_seal(seal(S1, b"aaaabbbbcccc")).ops == [Install(S1, 12, segment_digest(b"aaaabbbbcccc"), "")]


def test_resend_position_is_checked_like_any_other_frame() -> None:
    ingest = fresh()
    feed(ingest, S1, [b"aaaa"])
    ingest.on_data(data(S1, 4, b"bbbb", corrupt=True))
    out = ingest.on_data(data(S1, 4, b"bbbb", corrupt=True))
    assert out.verdict is Verdict.RESEND
    assert out.resend_from == Position(S1, 4)
    assert ingest.resends == 2


def test_corrupt_first_chunk_of_new_segment_closes_instead_of_naming_it() -> None:
    # The digest binds segment and offset: a first chunk that fails it may carry a damaged segment
    # name, so the receiver must not ask for a resend "from" that name; it drops the connection and
    # the shipper resumes from what is on disk.
    ingest = Ingest(S1, None, 0)
    with pytest.raises(RemoteProtocolError) as err:
        ingest.on_data(data(S2, 0, b"first", corrupt=True))
    assert err.value.code == "bad-digest"
    assert ingest.active is None
    renamed = Data(STREAM, "E00000009.log", 0, chunk_digest(S2, 0, b"first"), b"first")
    with pytest.raises(RemoteProtocolError):
        Ingest(S1, None, 0).on_data(renamed)

    ops = feed(ingest, S2, [b"first", b"second"])
    assert ops[0] == Write(S2, 0, b"first", chunk_digest(S2, 0, b"first"))
    assert ingest.on_seal(seal(S2, b"firstsecond")).ops == [Install(S2, 11, segment_digest(b"firstsecond"), S1)]


def test_digest_binds_segment_and_offset() -> None:
    ingest = fresh()
    feed(ingest, S1, [b"aaaa"])
    # The right bytes at the right place, but with the digest of another place, are refused.
    moved = Data(STREAM, S1, 4, chunk_digest(S1, 0, b"bbbb"), b"bbbb")
    assert ingest.on_data(moved).verdict is Verdict.RESEND


def test_chunk_digest_mismatches_are_transient_and_never_fail_the_copy() -> None:
    ingest = fresh()
    feed(ingest, S1, [b"aaaa"])
    for _ in range(MAX_TRIES * 10):
        out = ingest.on_data(data(S1, 4, b"bbbb", corrupt=True))
        assert out.verdict is Verdict.RESEND
        assert out.resend_from == Position(S1, 4)
    assert S1 not in ingest.failures
    assert ingest.resends == MAX_TRIES * 10
    assert ingest.on_data(data(S1, 4, b"bbbb")).verdict is Verdict.ACCEPT


def test_seal_failures_fail_the_copy_after_max_tries_and_chunk_failures_do_not_count() -> None:
    ingest = fresh()
    feed(ingest, S1, [b"x"])
    assert ingest.on_data(data(S1, 1, b"abc", corrupt=True)).verdict is Verdict.RESEND
    feed(ingest, S1, [b"abc"], start=1)
    for _ in range(MAX_TRIES - 1):
        assert ingest.on_seal(seal(S1, b"xabc", corrupt=True)).verdict is Verdict.RESEND
        feed(ingest, S1, [b"xabc"])
    out = ingest.on_seal(seal(S1, b"xabc", corrupt=True))
    assert out.verdict is Verdict.FAIL
    assert f"{MAX_TRIES} times" in out.reason and "segment digest mismatch" in out.reason


def test_failures_are_forgotten_once_the_segment_installs() -> None:
    ingest = fresh()
    feed(ingest, S1, [b"xabc"])
    ingest.on_seal(seal(S1, b"xabc", corrupt=True))
    assert ingest.failures[S1] == 1
    feed(ingest, S1, [b"xabc"])
    ingest.on_seal(seal(S1, b"xabc"))
    assert S1 not in ingest.failures


def test_seal_with_wrong_digest_restarts_the_segment() -> None:
    content = b"aaaa" + b"bbbb"
    ingest = Ingest("", None, 0)
    feed(ingest, S1, [b"aaaa", b"bbbb"])
    out = ingest.on_seal(seal(S1, content, corrupt=True))
    assert out.verdict is Verdict.RESEND
    assert out.resend_from == Position(S1, 0)
    assert out.ops == [Restart(S1, out.reason)]
    assert "segment digest" in out.reason
    assert ingest.expected == Position(S1, 0)
    assert ingest.last_sealed == ""

    assert ingest.on_data(data(S2, 0, b"later")).verdict is Verdict.DROP
    ops = feed(ingest, S1, [b"aaaa", b"bbbb"])
    assert ops[0].offset == 0
    out = ingest.on_seal(seal(S1, content))
    assert out.verdict is Verdict.ACCEPT
    assert out.ops == [Install(S1, 8, segment_digest(content), "")]
    assert ingest.last_sealed == S1


def test_bad_seal_digest_of_empty_segment_closes_and_a_new_session_takes_it() -> None:
    # The SEAL is the only frame naming an empty segment: no resend request may name what could be a
    # damaged name. The session ends (ERROR, the shipper reconnects) and nothing was written.
    ingest = Ingest(S1, None, 0)
    with pytest.raises(RemoteProtocolError) as e:
        ingest.on_seal(seal(S2, b"", corrupt=True))
    assert e.value.code == "bad-digest"
    assert (ingest.last_sealed, ingest.active) == (S1, None)
    again = Ingest(S1, None, 0)  # what the next session recovers from disk
    out = again.on_seal(seal(S2, b""))
    assert out.verdict is Verdict.ACCEPT
    assert again.last_sealed == S2


def flip_bit(frame: bytes, at: int, bit: int) -> bytes:
    return frame[:at] + bytes([frame[at] ^ (1 << bit)]) + frame[at + 1 :]


def test_every_bit_flip_in_an_empty_segments_seal_frame_is_caught() -> None:
    """Bytes in, messages out: an empty segment's SEAL as the shipper encodes it, with each single bit
    flipped in turn. No flip may install a segment under another name or size: either the decoder
    refuses the frame, or Ingest does, or the flip only hit the stream name (which the server checks
    against the HELLO: no Ingest sees it)."""
    from protocol.errors import ProtocolError
    from protocol.framing import NEED_DATA, FrameDecoder, encode

    frame = encode(seal(S2, b""))
    name_at = frame.index(S2.encode())
    installed_elsewhere: list[tuple[int, int, str]] = []
    for at in range(len(frame)):
        for bit in range(8):
            decoder = FrameDecoder()
            decoder.receive_data(flip_bit(frame, at, bit))
            try:
                msg = decoder.next_message()
            except ProtocolError:
                continue
            if msg is NEED_DATA or not isinstance(msg, Seal) or msg.stream != STREAM:
                continue
            try:
                out = Ingest(S1, None, 0).on_seal(msg)
            except RemoteProtocolError:
                continue
            for op in out.ops:
                if isinstance(op, Install) and (op.segment, op.size) != (S2, 0):
                    installed_elsewhere.append((at, bit, op.segment))
    # The name's own bytes include flips that keep it a valid later name (e.g. "2" -> "3"): the seal
    # digest is what catches them.
    assert name_at > 0
    assert installed_elsewhere == []


# -- a shipper that rewinds on RESEND, over random chunks and corruption -----------------------


@dataclass
class Model:
    """The receiver's storage as the ops describe it."""

    partial: dict[str, bytearray] = field(default_factory=dict)
    installed: dict[str, bytes] = field(default_factory=dict)

    def apply(self, ops: list[Op]) -> None:
        for op in ops:
            if isinstance(op, Write):
                buf = self.partial.setdefault(op.segment, bytearray())
                assert op.offset == len(buf), f"write at {op.offset} but the partial holds {len(buf)}"
                assert chunk_digest(op.segment, op.offset, op.payload) == op.digest
                buf += op.payload
            elif isinstance(op, Restart):
                self.partial.pop(op.segment, None)
            else:
                buf = self.partial.pop(op.segment)
                assert len(buf) == op.size
                assert op.segment not in self.installed
                self.installed[op.segment] = bytes(buf)


def frames_from(
    source: dict[str, bytes], bounds: dict[str, list[int]], pos: Position
) -> Iterator[tuple[Position, bool]]:
    """Yield (position, is_seal) of every frame a shipper sends from ``pos`` on, in order."""
    for name in sorted(source):
        if name < pos.segment:
            continue
        start = pos.offset if name == pos.segment else 0
        for off in bounds[name]:
            if off >= start:
                yield Position(name, off), False
        yield Position(name, len(source[name])), True


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, bytes], dict[str, list[int]], set[int], int]:
    rng = random.Random(draw(st.integers(0, 2**32)))
    n_segments = draw(st.integers(1, 4))
    source: dict[str, bytes] = {}
    bounds: dict[str, list[int]] = {}
    for i in range(n_segments):
        sizes = draw(st.lists(st.integers(1, 40), max_size=5))
        name = f"E{i + 1:08d}.log"
        source[name] = rng.randbytes(sum(sizes))
        bounds[name] = [sum(sizes[:k]) for k in range(len(sizes))]
    corrupt = draw(st.sets(st.integers(0, 25), max_size=8))
    window = draw(st.integers(1, 6))
    return source, bounds, corrupt, window


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_shipper_rewinding_on_resend_delivers_every_segment_intact(
    scenario: tuple[dict[str, bytes], dict[str, list[int]], set[int], int],
) -> None:
    source, bounds, corrupt, window = scenario
    ingest = Ingest("", None, 0)
    store = Model()
    failures: dict[str, int] = {}
    sent = 0

    def send(pos: Position, is_seal: bool) -> Outcome:
        nonlocal sent
        bad = sent in corrupt
        sent += 1
        content = source[pos.segment]
        if is_seal:
            # An empty segment's SEAL is never corrupted here: a test above covers that case.
            return ingest.on_seal(seal(pos.segment, content, corrupt=bad and len(content) > 0))
        i = bounds[pos.segment].index(pos.offset)
        end = bounds[pos.segment][i + 1] if i + 1 < len(bounds[pos.segment]) else len(content)
        return ingest.on_data(data(pos.segment, pos.offset, content[pos.offset : end], corrupt=bad))

    frames = frames_from(source, bounds, Position("", 0))
    failed = False
    while not failed:
        in_flight = [f for _, f in zip(range(window), frames, strict=False)]
        if not in_flight:
            break
        rewind: Position | None = None
        for pos, is_seal in in_flight:
            try:
                out = send(pos, is_seal)
            except RemoteProtocolError as e:
                # A bad first chunk of a new segment drops the connection: the shipper reconnects
                # and resumes from what the store holds (the previous segment, sealed).
                assert e.code == "bad-digest" and pos.offset == 0 and not is_seal and rewind is None
                ingest = Ingest(ingest.last_sealed, None, 0)
                rewind = pos
                break
            if rewind is not None:
                # Everything pipelined behind a resend request is dropped.
                assert out.verdict is Verdict.DROP
                assert out.ops == []
                continue
            if out.verdict is Verdict.FAIL:
                failures[pos.segment] = failures.get(pos.segment, 0) + 1
                assert failures[pos.segment] == MAX_TRIES
                failed = True
                break
            assert out.verdict in (Verdict.ACCEPT, Verdict.RESEND)
            store.apply(out.ops)
            if out.verdict is Verdict.RESEND:
                if is_seal:
                    # Only SEAL failures count toward Failed; damaged chunks are transient.
                    failures[pos.segment] = failures.get(pos.segment, 0) + 1
                    assert failures[pos.segment] < MAX_TRIES
                assert out.resend_from is not None
                assert out.resend_from == (Position(pos.segment, 0) if is_seal else pos)
                rewind = out.resend_from
        if rewind is not None:
            frames = frames_from(source, bounds, rewind)

    for name, content in store.installed.items():
        assert content == source[name]
    if not failed:
        assert store.installed == source
        assert ingest.last_sealed == max(source)
        assert ingest.active is None
        assert store.partial == {}
