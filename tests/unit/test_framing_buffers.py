"""FrameDecoder's zero-copy receive (get_buffer/buffer_updated) gives what receive_data gives."""

from __future__ import annotations

import os
import random

import pytest

from protocol.auth import TO_RECEIVER, DirectionKeys, FrameOpener, FrameSealer
from protocol.buffers import AlignedBuffer, BufferPool, page_aligned
from protocol.digest import chunk_digest
from protocol.framing import DIRECT_PAYLOAD, NEED_DATA, FrameDecoder, encode
from protocol.messages import Ack, Data, Heartbeat, Message, Position


def frames() -> tuple[list[Message], bytes]:
    rnd = random.Random(3)
    msgs: list[Message] = []
    offset = 0
    for size in (0, 1, 4096, DIRECT_PAYLOAD - 1, DIRECT_PAYLOAD, 1 << 20, 300_001, 4 << 20):
        payload = rnd.randbytes(size)
        msgs.append(Data("s", "E1.log", offset, chunk_digest("E1.log", offset, payload), payload))
        offset += size
        msgs.append(Heartbeat())
    msgs.append(Ack("s", Position("E1.log", offset), False))
    return msgs, b"".join(encode(m) for m in msgs)


def feed_through_buffers(
    wire: bytes, max_read: int, seed: int, pool: BufferPool | None = None, opener: FrameOpener | None = None
) -> list[Message]:
    """Write ``wire`` into the decoder the way a BufferedProtocol transport does, in random reads."""
    rnd = random.Random(seed)
    decoder = FrameDecoder(max_payload=4 << 20)
    decoder.pool, decoder.opener = pool, opener
    out: list[Message] = []
    pos = 0
    while pos < len(wire):
        buf = decoder.get_buffer()
        assert len(buf) > 0
        n = min(len(buf), rnd.randint(1, max_read), len(wire) - pos)
        buf[:n] = wire[pos : pos + n]
        pos += n
        decoder.buffer_updated(n)
        # Not every read is followed by a look for messages (a busy receiver lets bytes pile up).
        if rnd.random() < 0.7:
            while (msg := decoder.next_message()) is not NEED_DATA:
                out.append(msg)
    while (msg := decoder.next_message()) is not NEED_DATA:
        out.append(msg)
    assert decoder.buffered == 0
    return out


@pytest.mark.parametrize("max_read", [1 << 20, 256 * 1024, 65536, 7777])
def test_buffered_receive_equals_the_sent_messages(max_read: int) -> None:
    msgs, wire = frames()
    assert feed_through_buffers(wire, max_read, seed=max_read) == msgs


@pytest.mark.parametrize("max_read", [1 << 20, 65536 + 50, 65536, 7777, 97])
@pytest.mark.parametrize("tagged", [False, True])
def test_with_a_pool_reads_between_frames_split_at_the_head(max_read: int, tagged: bool) -> None:
    # With a pool, a read between frames is taken in two: the next head, then what follows it (the
    # first bytes of a payload, or whole further frames). Whatever the reads, the same messages.
    msgs, wire = frames()
    opener = None
    if tagged:
        keys = DirectionKeys.derive({"s": b"k" * 32}, TO_RECEIVER, b"r" * 32, b"n" * 32, "a", "b")
        sealer, opener = FrameSealer(keys), FrameOpener(keys)
        wire = b"".join(encode(m, sealer=sealer) for m in msgs)
    for seed in range(3):
        if opener is not None:
            opener.sequence = 0
        assert feed_through_buffers(wire, max_read, seed, BufferPool(), opener) == msgs


def test_mixing_receive_data_and_buffers() -> None:
    msgs, wire = frames()
    decoder = FrameDecoder(max_payload=4 << 20)
    rnd = random.Random(9)
    out: list[Message] = []
    pos = 0
    while pos < len(wire):
        n = min(rnd.randint(1, 300_000), len(wire) - pos)
        if rnd.random() < 0.5:
            decoder.receive_data(wire[pos : pos + n])
        else:
            buf = decoder.get_buffer()
            n = min(n, len(buf))
            buf[:n] = wire[pos : pos + n]
            decoder.buffer_updated(n)
        pos += n
        while (msg := decoder.next_message()) is not NEED_DATA:
            out.append(msg)
    assert out == msgs


def test_a_payload_buffer_is_not_allocated_for_a_header_alone() -> None:
    # A peer that announces a 4 MiB payload and sends a few bytes of it must not make us hold 4 MiB.
    payload = os.urandom(4 << 20)
    wire = encode(Data("s", "E1.log", 0, chunk_digest("E1.log", 0, payload), payload))
    decoder = FrameDecoder(max_payload=4 << 20)
    decoder.receive_data(wire[:1000])
    assert decoder.next_message() is NEED_DATA
    assert len(decoder.get_buffer()) < 1 << 20


def test_after_an_error_get_buffer_still_gives_a_buffer_and_drops_what_comes() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"\x00\x00\x00\x00")
    with pytest.raises(Exception, match="empty header"):
        decoder.next_message()
    buf = decoder.get_buffer()
    assert len(buf) > 0
    buf[:3] = b"abc"
    decoder.buffer_updated(3)
    with pytest.raises(Exception, match="empty header"):
        decoder.next_message()


def _data_frame(payload: bytes, offset: int = 0) -> bytes:
    return encode(Data("s", "E1.log", offset, chunk_digest("E1.log", offset, payload), payload))


def _feed(decoder: FrameDecoder, wire: bytes, step: int) -> None:
    pos = 0
    while pos < len(wire):
        buf = decoder.get_buffer()
        n = min(len(buf), step, len(wire) - pos)
        buf[:n] = wire[pos : pos + n]
        decoder.buffer_updated(n)
        pos += n


def test_with_a_pool_the_payload_is_received_in_place_from_its_header_on() -> None:
    payload = os.urandom(1 << 20)
    wire = _data_frame(payload)
    decoder = FrameDecoder(max_payload=4 << 20)
    decoder.pool = BufferPool()
    head = len(wire) - len(payload)
    _feed(decoder, wire[: head + 100], 1 << 20)
    # The header is decoded as it arrives: the next read goes straight into the payload's buffer,
    # not into scratch space to be copied later.
    assert len(decoder.get_buffer()) == len(payload) - 100
    _feed(decoder, wire[head + 100 :], 1 << 20)
    msg = decoder.next_message()
    assert isinstance(msg, Data) and msg.payload == payload


def test_a_buffer_given_back_carries_the_next_payload_with_no_stale_bytes() -> None:
    pool = BufferPool()
    decoder = FrameDecoder(max_payload=4 << 20)
    decoder.pool = pool
    first, second = os.urandom(1 << 20), os.urandom(1 << 20)
    _feed(decoder, _data_frame(first), 65536)
    msg1 = decoder.next_message()
    assert isinstance(msg1, Data) and msg1.payload == first
    buf = msg1.payload
    assert page_aligned(buf)  # for the store's O_DIRECT writes
    pool.give(buf)
    _feed(decoder, _data_frame(second, 1 << 20), 7777)
    msg2 = decoder.next_message()
    assert isinstance(msg2, Data)
    assert msg2.payload is buf  # reused, not a fresh mapping
    assert msg2.payload == second
    assert chunk_digest("E1.log", 1 << 20, msg2.payload) == msg2.digest
    assert (pool.hits, pool.misses) == (1, 1)


def test_the_pool_keeps_no_more_than_its_limit() -> None:
    pool = BufferPool(max_bytes=3 << 20)
    for _ in range(5):
        pool.give(AlignedBuffer(1 << 20))
    pool.give(bytearray(1 << 20))  # not one of its own: not kept
    assert pool.free_bytes == 3 << 20
    assert [len(pool.take(1 << 20)) for _ in range(4)] == [1 << 20] * 4
    assert (pool.hits, pool.misses) == (3, 1)


def test_frames_before_a_bad_one_come_out_first_then_the_error() -> None:
    good = [Heartbeat(), Ack("s", Position("E1.log", 5), False)]
    wire = b"".join(encode(m) for m in good) + b"\x00\x00\x00\x00" + encode(Heartbeat())
    decoder = FrameDecoder()
    _feed(decoder, wire, 1 << 20)  # all in one read: decoded ahead, the error found meanwhile
    assert [decoder.next_message(), decoder.next_message()] == good
    with pytest.raises(Exception, match="empty header"):
        decoder.next_message()
    with pytest.raises(Exception, match="empty header"):
        decoder.next_message()


def test_buffered_counts_messages_decoded_ahead() -> None:
    payload = os.urandom(300_000)
    decoder = FrameDecoder()
    _feed(decoder, _data_frame(payload), 1 << 20)
    assert decoder.buffered >= len(payload)
    assert isinstance(decoder.next_message(), Data)
    assert decoder.buffered == 0
