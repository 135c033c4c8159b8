"""Rewrites of already-shipped bytes (issue 20): the DATA ``rw`` flag on the wire (bytes in, messages
out), the shipper's per-block memory of what it sent and the diff at sealing, the receiver's rules for
accepting a rewrite, and the store carrying one out so that a restart still verifies the partial."""

from __future__ import annotations

import os
from pathlib import Path

import msgpack
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.digest import chunk_digest, seal_digest, segment_digest
from protocol.errors import RemoteProtocolError
from protocol.framing import FrameDecoder, encode
from protocol.messages import Data, Position, Seal
from receiver.ingest import Ingest, Verdict
from receiver.ops import Install, Rehash, Rewrite, Write
from receiver.rewrite import changed_span, judge
from receiver.store import SegmentStore
from shipper.rewrite import BLOCK, MAX_REWRITE, SentRanges, TrackingReader, changed_ranges

SEG = "000000010000000000000001"


def data(offset: int, payload: bytes, rewrite: bool = False, segment: str = SEG) -> Data:
    return Data("s", segment, offset, chunk_digest(segment, offset, payload), payload, rewrite)


def decode(frame: bytes) -> object:
    dec = FrameDecoder()
    dec.receive_data(frame)
    return dec.next_message()


def raw_frame(header: dict[str, object], payload: bytes) -> bytes:
    packed = msgpack.packb(header, use_bin_type=True)
    return len(packed).to_bytes(4, "big") + packed + payload


# -- the flag on the wire ------------------------------------------------------------------------------


def test_a_rewrite_round_trips_and_a_plain_data_carries_no_flag() -> None:
    msg = data(21, b"\x00", rewrite=True)
    assert decode(encode(msg)) == msg
    plain = data(0, b"abc")
    assert "rw" not in plain.to_header()
    assert decode(encode(plain)) == plain and not plain.rewrite


def test_a_compressed_rewrite_keeps_its_flag() -> None:
    from protocol.compression import PayloadCompressor, parse_compression

    compression = parse_compression("zstd")
    assert compression is not None
    msg = data(0, b"\x00" * 4096, rewrite=True)
    frame = encode(msg, PayloadCompressor(compression))
    assert len(frame) < 4096
    dec = FrameDecoder(encodings=frozenset({"zstd"}))
    dec.receive_data(frame)
    assert dec.next_message() == msg


def test_a_rewrite_flag_that_is_not_a_boolean_is_refused() -> None:
    header = data(0, b"x", rewrite=True).to_header()
    header["rw"] = 1
    with pytest.raises(RemoteProtocolError, match="rw"):
        decode(raw_frame(header, b"x"))
    header["rw"] = False  # spelled out: a plain DATA
    assert decode(raw_frame(header, b"x")) == data(0, b"x")


# -- the shipper's memory of what it sent ----------------------------------------------------------------


def block_digests(content: bytes) -> list[int]:
    return [xxhash.xxh3_64_intdigest(content[i : i + BLOCK]) for i in range(0, len(content), BLOCK)]


def test_sent_ranges_hold_one_digest_per_block_whatever_the_chunks() -> None:
    content = os.urandom(3 * BLOCK + 1000)
    sent = SentRanges()
    sent.start(SEG)
    pos = 0
    for size in (100, BLOCK, 7, 2 * BLOCK, 5000):  # chunks that straddle block boundaries
        sent.sent(SEG, pos, content[pos : pos + size])
        pos = min(len(content), pos + size)
    assert sent.end == len(content)
    assert sent.digests() == block_digests(content)
    assert not sent.unsure


def test_a_resume_inside_a_block_makes_that_block_unsure_and_bytes_out_of_order_forget_all() -> None:
    content = os.urandom(2 * BLOCK + 10)
    sent = SentRanges()
    sent.start(SEG)
    sent.sent(SEG, 0, content)
    sent.truncate(BLOCK + 5)
    assert sent.end == BLOCK + 5 and sent.unsure == {1}
    sent.sent(SEG, BLOCK + 5, content[BLOCK + 5 :])
    got, want = sent.digests(), block_digests(content)
    assert len(got) == 3 and (got[0], got[2]) == (want[0], want[2])  # block 1 is rewritten whatever it says
    sent.truncate(BLOCK)  # on a block boundary: nothing is unsure but what was already
    assert sent.unsure == set() and sent.digests() == block_digests(content[:BLOCK])
    sent.sent(SEG, BLOCK + 1, b"x")  # not the next byte: nothing can be vouched for
    assert sent.segment == ""
    sent.start(SEG)
    sent.truncate(10)  # beyond what was sent
    assert sent.segment == ""


def test_changed_ranges_name_the_blocks_that_differ_merged_and_the_short_last_one() -> None:
    size = 4 * BLOCK + 100
    sent = [1, 2, 3, 4, 5]
    assert changed_ranges(sent, [1, 2, 3, 4, 5], set(), size) == []
    assert changed_ranges(sent, [9, 2, 3, 4, 5], set(), size) == [(0, BLOCK)]
    assert changed_ranges(sent, [1, 9, 9, 4, 9], set(), size) == [(BLOCK, 3 * BLOCK), (4 * BLOCK, size)]
    assert changed_ranges(sent, [1, 2, 3, 4, 5], {3}, size) == [(3 * BLOCK, 4 * BLOCK)]
    assert changed_ranges(sent[:3], [1, 2, 3, 4, 5], set(), size) == [(3 * BLOCK, size)]


def ship(reader: TrackingReader, segment: str, size: int, chunk: int) -> None:
    for off in range(0, size, chunk):
        buf = bytearray(min(chunk, size - off))
        assert reader.read_into(segment, off, buf) == len(buf)


def test_sealing_finds_the_header_byte_mariadb_rewrote_after_it_was_sent(tmp_path: Path) -> None:
    content = bytearray(os.urandom(3 * BLOCK + 333))
    content[21] = 1  # the in-use flag
    (tmp_path / SEG).write_bytes(content)
    reader = TrackingReader(tmp_path)
    reader.seek(Position(SEG, 0))
    ship(reader, SEG, len(content), 50_000)
    with open(tmp_path / SEG, "r+b") as f:  # the writer clears it once the next binlog is open
        f.seek(21)
        f.write(b"\x00")
    content[21] = 0
    plan = reader.plan_seal(SEG, len(content))
    assert plan is not None
    assert plan.content == segment_digest(bytes(content))
    assert plan.ranges == [(0, BLOCK)]
    assert plan.rewrites == [(0, bytes(content[:BLOCK]))]
    # Nothing changed: nothing to rewrite. A size that is not what was sent: no plan (fetch again).
    reader2 = TrackingReader(tmp_path)
    reader2.seek(Position(SEG, 0))
    ship(reader2, SEG, len(content), BLOCK)
    assert reader2.plan_seal(SEG, len(content)).rewrites == []  # type: ignore[union-attr]
    assert reader2.plan_seal(SEG, len(content) - 1) is None


def test_a_resume_in_the_segment_before_still_knows_what_was_sent_of_it(tmp_path: Path) -> None:
    first = bytearray(os.urandom(2 * BLOCK))
    (tmp_path / SEG).write_bytes(first)
    nxt = "000000010000000000000002"
    (tmp_path / nxt).write_bytes(b"n" * 100)
    reader = TrackingReader(tmp_path)
    reader.seek(Position(SEG, 0))
    ship(reader, SEG, len(first), BLOCK)
    reader.seek(Position(nxt, 0))  # its SEAL went out, the next segment opened
    ship(reader, nxt, 100, 100)
    first[21] ^= 1
    (tmp_path / SEG).write_bytes(first)
    reader.seek(Position(SEG, len(first)))  # the reconnect: the SEAL was never acknowledged
    plan = reader.plan_seal(SEG, len(first))
    assert plan is not None and plan.ranges == [(0, BLOCK)]


def test_a_resumed_segment_is_remembered_from_the_source_and_a_segment_rewritten_wholesale_is_fetched_again(
    tmp_path: Path,
) -> None:
    size = MAX_REWRITE + BLOCK
    (tmp_path / SEG).write_bytes(b"a" * size)
    reader = TrackingReader(tmp_path)
    reader.seek(Position(SEG, size - 10))  # a shipper restart: what the copy holds is taken from the source
    ship_from = size - 10
    buf = bytearray(10)
    assert reader.read_into(SEG, ship_from, buf) == 10
    assert reader.plan_seal(SEG, size).rewrites == []  # type: ignore[union-attr]
    (tmp_path / SEG).write_bytes(b"b" * size)
    assert reader.plan_seal(SEG, size) is None  # more than MAX_REWRITE changed


# -- the receiver's rules ---------------------------------------------------------------------------------


def test_a_rewrite_is_accepted_only_for_held_bytes_of_the_active_segment_with_its_digest() -> None:
    ingest = Ingest("", None, 0)
    assert ingest.on_data(data(0, b"0123456789")).verdict is Verdict.ACCEPT
    good = data(2, b"ab", rewrite=True)
    assert judge(ingest, good, allowed=True) == Rewrite(SEG, 2, b"ab")
    assert judge(ingest, data(0, b"0123456789", rewrite=True), allowed=True) is not None  # all held bytes
    refused = {
        "feature": (good, False),
        "beyond": (data(8, b"abc", rewrite=True), True),
        "empty": (data(3, b"", rewrite=True), True),
        "other segment": (data(0, b"a", rewrite=True, segment="000000010000000000000002"), True),
        "digest": (Data("s", SEG, 2, 12345, b"ab", True), True),
    }
    for what, (msg, allowed) in refused.items():
        with pytest.raises(RemoteProtocolError):
            judge(ingest, msg, allowed)
            pytest.fail(what)
    # Sealed: no segment is being written, so nothing may be rewritten.
    content = b"0123456789"
    seal = Seal("s", SEG, 10, seal_digest(SEG, 10, segment_digest(content)))
    assert ingest.on_seal(seal).verdict is Verdict.ACCEPT
    with pytest.raises(RemoteProtocolError, match="not the segment being written"):
        judge(ingest, good, allowed=True)


def test_a_rewrite_while_a_resend_is_awaited_is_dropped() -> None:
    ingest = Ingest("", None, 0)
    ingest.on_data(data(0, b"0123"))
    assert ingest.on_data(Data("s", SEG, 4, 1, b"bad!")).verdict is Verdict.RESEND
    assert judge(ingest, data(0, b"x", rewrite=True), allowed=True) is None


def test_changed_span() -> None:
    assert changed_span(b"abcdef", b"abcdef") is None
    assert changed_span(b"abcdef", b"abXdeY") == (2, 5)
    old = os.urandom(3 * 4096 + 17)
    new = bytearray(old)
    new[5000] ^= 1
    new[3 * 4096 + 3] ^= 1
    assert changed_span(old, bytes(new)) == (5000, 3 * 4096 + 3)
    new = bytearray(old)
    new[-1] ^= 1
    assert changed_span(old, bytes(new)) == (len(old) - 1, len(old) - 1)


def test_adjacent_changed_blocks_are_rewritten_in_one_frame(tmp_path: Path) -> None:
    content = bytearray(os.urandom(10 * BLOCK))
    (tmp_path / SEG).write_bytes(content)
    reader = TrackingReader(tmp_path)
    reader.seek(Position(SEG, 0))
    ship(reader, SEG, len(content), 3 * BLOCK)
    for at in (BLOCK + 1, 2 * BLOCK + 1, 3 * BLOCK + 1, 7 * BLOCK):
        content[at] ^= 0xFF
    (tmp_path / SEG).write_bytes(content)
    plan = reader.plan_seal(SEG, len(content))
    assert plan is not None
    assert plan.ranges == [(BLOCK, 4 * BLOCK), (7 * BLOCK, 8 * BLOCK)]
    assert plan.rewrites == [
        (BLOCK, bytes(content[BLOCK : 4 * BLOCK])),
        (7 * BLOCK, bytes(content[7 * BLOCK : 8 * BLOCK])),
    ]


# -- the store carrying it out -----------------------------------------------------------------------------


def test_the_store_rewrites_held_bytes_durably_and_a_restart_still_verifies_the_partial(tmp_path: Path) -> None:
    store = SegmentStore(tmp_path / "s")
    chunks = [os.urandom(1000), os.urandom(3000), os.urandom(500)]
    ops: list[Write] = []
    off = 0
    for c in chunks:
        ops.append(Write(SEG, off, c, chunk_digest(SEG, off, c)))
        off += len(c)
    store.apply(list(ops))
    content = bytearray(b"".join(chunks))
    new = bytes(b ^ 0xFF for b in content[900:1100])  # across the first two chunks' records
    content[900:1100] = new
    rehash = Rehash(SEG, len(content))
    store.apply([Rewrite(SEG, 900, new), rehash])
    assert rehash.done.result(0).digest() == segment_digest(bytes(content))
    assert store.partial_path(SEG).read_bytes() == content
    store.close()
    rec = SegmentStore(tmp_path / "s").recover()
    assert (rec.active, rec.offset, rec.discarded) == (SEG, len(content), 0)
    assert rec.hasher.digest() == segment_digest(bytes(content))
    store2 = SegmentStore(tmp_path / "s")
    store2.apply([Install(SEG, len(content), segment_digest(bytes(content)), "")])
    assert (tmp_path / "s" / "log" / SEG).read_bytes() == content
    assert not list((tmp_path / "s" / "quarantine").iterdir())


def test_a_rehash_after_rewrites_that_changed_no_byte_is_the_running_digest_with_no_read(tmp_path: Path) -> None:
    store = SegmentStore(tmp_path / "s")
    content = os.urandom(3 * BLOCK + 7)
    store.apply([Write(SEG, 0, content, chunk_digest(SEG, 0, content))])
    running = xxhash.xxh3_128()
    running.update(content)
    same = Rewrite(SEG, BLOCK, content[BLOCK : 2 * BLOCK])  # a resent block holding the bytes it held
    store.apply([same])
    assert same.changed.result(0) is False
    # The partial is not read again: moved away, a Rehash that read it would fail.
    os.rename(store.partial_path(SEG), tmp_path / "elsewhere")
    rehash = Rehash(SEG, len(content), current=running.copy(), rewrites=(same,))
    store.apply([rehash])
    assert rehash.done.result(0).digest() == segment_digest(content)
    os.rename(tmp_path / "elsewhere", store.partial_path(SEG))
    # One that changed a byte: the partial is read, and the running digest (of the old bytes) is not used.
    new = bytearray(content)
    new[21] ^= 0xFF
    changed = Rewrite(SEG, 0, bytes(new[:BLOCK]))
    rehash = Rehash(SEG, len(new), current=running.copy(), rewrites=(same, changed))
    store.apply([changed, rehash])
    assert changed.changed.result(0) is True
    assert rehash.done.result(0).digest() == segment_digest(bytes(new)) != running.digest()
    store.close()


def test_a_rewrite_among_many_small_chunk_records_fixes_just_the_ones_it_covers(tmp_path: Path) -> None:
    store = SegmentStore(tmp_path / "s")
    content = bytearray(os.urandom(5000 * 37))
    store.apply(
        [
            Write(SEG, off, bytes(content[off : off + 37]), chunk_digest(SEG, off, content[off : off + 37]))
            for off in range(0, len(content), 37)
        ]
    )
    for start in (0, 37 * 2500 - 5, len(content) - 1):
        new = bytes(b ^ 0x55 for b in content[start : start + 50])
        content[start : start + len(new)] = new
        store.apply([Rewrite(SEG, start, new)])
    store.close()
    rec = SegmentStore(tmp_path / "s").recover()
    assert (rec.offset, rec.discarded) == (len(content), 0)
    assert rec.hasher.digest() == segment_digest(bytes(content))


# -- fetched again, when rewriting is not possible ---------------------------------------------------------


def test_a_nack_below_the_acknowledged_position_lets_the_resent_bytes_be_acknowledged_again() -> None:
    from shipper.pacing import AdaptiveWindow
    from shipper.window import SendWindow

    window = SendWindow(AdaptiveWindow(1 << 20, 1 << 20, 1 << 20))
    window.start_at((Position(SEG, 0), False))
    for _ in range(3):
        window.on_data_sent(1000, 0.0)
    assert window.on_ack((Position(SEG, 3000), False), 0.1)
    window.on_seal_sent()
    # The SEAL failed its digest at the target: its partial went to quarantine, everything again from 0.
    window.on_nack(Position(SEG, 0))
    assert window.take_rewind() == Position(SEG, 0)
    window.on_data_sent(1000, 0.2)
    assert window.on_ack((Position(SEG, 1000), False), 0.3)  # not "behind the acknowledged"
    assert window.in_flight_bytes == 0


# -- properties ------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 3 * BLOCK), min_size=1, max_size=12), st.lists(st.integers(0, 10**6), max_size=3))
def test_whatever_the_chunks_and_resumes_every_block_not_unsure_has_the_digest_of_its_bytes(
    chunks: list[int], cuts: list[int]
) -> None:
    content = bytes(i % 251 for i in range(sum(chunks)))
    sent = SentRanges()
    sent.start(SEG)
    pos = 0
    for n, size in enumerate(chunks):
        sent.sent(SEG, pos, content[pos : pos + size])
        pos += size
        if n < len(cuts):
            pos = cuts[n] % (pos + 1)  # a resume or resend from an earlier place
            sent.truncate(pos)
    assert sent.segment == SEG and sent.end == pos
    want = block_digests(content[:pos])
    got = sent.digests()
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert i in sent.unsure or a == b


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 3000),
    st.booleans(),
    st.integers(-5, 3000),
    st.binary(max_size=40),
    st.sampled_from([SEG, "000000010000000000000002"]),
    st.booleans(),
)
def test_a_rewrite_is_either_within_the_held_bytes_or_refused(
    held: int, sealed: bool, offset: int, payload: bytes, segment: str, allowed: bool
) -> None:
    ingest = Ingest("", None, 0)
    if held:
        ingest.on_data(data(0, bytes(held)))
    if sealed and held:
        ingest.on_seal(Seal("s", SEG, held, seal_digest(SEG, held, segment_digest(bytes(held)))))
    offset = max(0, offset)
    msg = data(offset, payload, rewrite=True, segment=segment)
    try:
        op = judge(ingest, msg, allowed)
    except RemoteProtocolError:
        return
    assert op is not None and allowed and held and not sealed and segment == SEG
    assert payload and op.offset + len(op.payload) <= held
