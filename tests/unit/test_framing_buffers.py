"""FrameDecoder's zero-copy receive (get_buffer/buffer_updated) gives what receive_data gives."""

from __future__ import annotations

import os
import random

import pytest

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


def feed_through_buffers(wire: bytes, max_read: int, seed: int) -> list[Message]:
    """Write ``wire`` into the decoder the way a BufferedProtocol transport does, in random reads."""
    rnd = random.Random(seed)
    decoder = FrameDecoder(max_payload=4 << 20)
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
