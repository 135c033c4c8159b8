"""The send window alone: sends and acknowledgements in, decisions out, a fake clock; no socket."""

from __future__ import annotations

import pytest

from protocol.errors import ProtocolError
from protocol.messages import Position
from shipper.pacing import AdaptiveWindow
from shipper.settings import SenderConfig
from shipper.window import START, Cursor, SendWindow, adaptive_window

KiB = 1024
A, B = "E01.log", "E02.log"


def fixed(size: int) -> SendWindow:
    return SendWindow(AdaptiveWindow(size, size, size))


def sent(window: SendWindow, segment: str, *chunks: int, now: float = 0.0) -> None:
    """Open ``segment`` after a sealed cursor and send ``chunks`` bytes of it."""
    if window.cursor.sealed:
        window.open(segment)
    for n in chunks:
        window.on_data_sent(n, now)


def test_a_new_window_starts_at_the_resume_position_with_nothing_in_flight() -> None:
    window = fixed(64 * KiB)
    assert window.cursor == Cursor("", 0, True) and window.acked == START == window.sent_max
    window.start_at((Position(A, 100), False))
    assert window.cursor == Cursor(A, 100, False)
    assert window.acked == window.sent_max == (Position(A, 100), False)
    assert window.in_flight_bytes == 0 and not window.full


def test_sends_move_the_cursor_and_fill_the_window_acks_open_it() -> None:
    window = fixed(64 * KiB)
    window.start_at(START)
    sent(window, A, 32 * KiB, 16 * KiB)
    assert window.cursor == Cursor(A, 48 * KiB, False) and not window.full
    window.on_data_sent(16 * KiB, 0.0)
    assert window.full and window.in_flight_bytes == 64 * KiB
    assert window.sent_max == (Position(A, 64 * KiB), False)
    assert window.on_ack((Position(A, 32 * KiB), False), 0.01) is True
    assert window.in_flight_bytes == 32 * KiB and not window.full
    assert window.acked == (Position(A, 32 * KiB), False)


def test_an_ack_inside_a_chunk_releases_only_the_chunks_it_covers() -> None:
    window = fixed(64 * KiB)
    window.start_at(START)
    sent(window, A, 10, 10, 10)
    assert window.on_ack((Position(A, 15), False), 0.0) is True
    assert window.in_flight_bytes == 20  # the second chunk ends at 20: not yet covered


def test_a_seal_is_in_flight_until_acknowledged_and_orders_after_its_bytes() -> None:
    window = fixed(64 * KiB)
    window.start_at(START)
    sent(window, A, 100)
    window.on_seal_sent()
    assert window.cursor == Cursor(A, 100, True)
    assert window.sent_max == (Position(A, 100), True)
    assert window.on_ack((Position(A, 100), False), 0.0) is True
    assert window.on_ack((Position(A, 100), True), 0.0) is True
    assert window.acked == (Position(A, 100), True) and window.in_flight_bytes == 0
    # One ACK may cover the SEAL and data of the next segment.
    sent(window, B, 50)
    assert window.cursor == Cursor(B, 50, False)
    assert window.on_ack((Position(B, 50), False), 0.0) is True and window.in_flight_bytes == 0


def test_the_same_ack_again_moves_nothing() -> None:
    window = fixed(64 * KiB)
    window.start_at(START)
    sent(window, A, 100)
    assert window.on_ack((Position(A, 40), False), 0.0) is True
    # A receiver repeats its durable position to tell of replay progress.
    assert window.on_ack((Position(A, 40), False), 0.0) is False
    assert window.in_flight_bytes == 100


def test_an_ack_beyond_what_was_sent_is_a_protocol_error() -> None:
    window = fixed(64 * KiB)
    window.start_at((Position(A, 10), False))
    sent(window, A, 100)
    with pytest.raises(ProtocolError, match=r"beyond what was sent"):
        window.on_ack((Position(A, 111), False), 0.0)
    with pytest.raises(ProtocolError, match=r"beyond what was sent"):
        window.on_ack((Position(A, 110), True), 0.0)  # the SEAL did not go out
    with pytest.raises(ProtocolError, match=r"beyond what was sent"):
        window.on_ack((Position(B, 0), False), 0.0)
    assert window.on_ack((Position(A, 110), False), 0.0) is True


def test_an_ack_going_backwards_is_a_protocol_error() -> None:
    window = fixed(64 * KiB)
    window.start_at((Position(A, 10), False))
    with pytest.raises(ProtocolError, match=r"behind the acknowledged"):
        window.on_ack((Position(A, 5), False), 0.0)
    sent(window, A, 100)
    window.on_ack((Position(A, 60), False), 0.0)
    with pytest.raises(ProtocolError, match=r"behind the acknowledged"):
        window.on_ack((Position(A, 59), False), 0.0)
    window.on_seal_sent()
    window.on_ack((Position(A, 110), True), 0.0)
    with pytest.raises(ProtocolError, match=r"behind the acknowledged"):
        window.on_ack((Position(A, 110), False), 0.0)


def test_a_nack_rewinds_the_cursor_and_forgets_what_was_sent_after_it() -> None:
    window = fixed(64 * KiB)
    window.start_at(START)
    sent(window, A, 10, 10, 10, 10)
    window.on_ack((Position(A, 10), False), 0.0)
    assert window.take_rewind() is None and not window.rewind_due
    window.on_nack(Position(A, 20))
    assert window.rewind_due
    assert window.take_rewind() == Position(A, 20)
    assert window.cursor == Cursor(A, 20, False)
    assert window.in_flight_bytes == 10  # the chunk 10..20 the target holds; 20..40 is to be sent again
    assert window.take_rewind() is None
    # What the target acknowledges of the resent bytes still counts, and the old end is still "sent".
    sent(window, A, 10)
    assert window.on_ack((Position(A, 30), False), 0.0) is True and window.in_flight_bytes == 0
    assert window.on_ack((Position(A, 40), False), 0.0) is True


def test_a_nack_may_ask_for_a_whole_segment_again_but_not_beyond_what_was_sent() -> None:
    window = fixed(64 * KiB)
    window.start_at(START)
    sent(window, A, 50, 50)
    window.on_seal_sent()
    window.on_ack((Position(A, 50), False), 0.0)
    # A SEAL whose digest did not match: the receiver starts the segment over, below what it acked.
    window.on_nack(Position(A, 0))
    assert window.take_rewind() == Position(A, 0)
    assert window.cursor == Cursor(A, 0, False) and window.in_flight_bytes == 0
    with pytest.raises(ProtocolError, match=r"beyond what was sent"):
        window.on_nack(Position(A, 101))
    with pytest.raises(ProtocolError, match=r"beyond what was sent"):
        window.on_nack(Position(B, 0))


def test_a_reconnect_resumes_where_the_target_is_and_drops_what_was_in_flight() -> None:
    window = fixed(64 * KiB)
    window.start_at(START)
    sent(window, A, 30 * KiB, 30 * KiB)
    window.on_ack((Position(A, 30 * KiB), False), 0.0)
    window.on_nack(Position(A, 30 * KiB))
    # The connection is cut; the new one's WELCOME says the target holds 40 KiB.
    window.start_at((Position(A, 40 * KiB), False))
    assert window.take_rewind() is None  # a NACK of the old connection is void
    assert window.cursor == Cursor(A, 40 * KiB, False) and window.in_flight_bytes == 0
    assert window.acked == window.sent_max == (Position(A, 40 * KiB), False)
    sent(window, A, 8 * KiB)
    assert window.on_ack((Position(A, 48 * KiB), False), 1.0) is True
    # Resuming after a sealed segment: the cursor waits for the next one.
    window.start_at((Position(A, 64 * KiB), True))
    assert window.cursor == Cursor(A, 64 * KiB, True)


def test_the_window_size_follows_the_link_with_a_fake_clock() -> None:
    window = SendWindow(AdaptiveWindow(64 * KiB, 16 * KiB, 1024 * KiB))
    window.start_at(START)
    window.open(A)
    now = 0.0
    # 64 KiB per 10 ms round trip, window-limited: the window grows toward 2 x rate x RTT.
    for _ in range(8):
        while not window.full:
            window.on_data_sent(16 * KiB, now)
        now += 0.01
        window.on_ack(window.sent_max, now)
    assert window.size.window > 64 * KiB
    assert window.size.rtt == pytest.approx(0.01)


def test_adaptive_window_follows_the_sender_config() -> None:
    fixed_cfg = SenderConfig(window=8 * 1024 * KiB, adaptive=False)
    size = adaptive_window(fixed_cfg)
    assert size.minimum == size.maximum == size.window == 8 * 1024 * KiB
    size = adaptive_window(SenderConfig(window=2 * 1024 * KiB, window_min=4 * 1024 * KiB))
    assert (size.minimum, size.window, size.maximum) == (2 * 1024 * KiB, 2 * 1024 * KiB, 64 * 1024 * KiB)


def test_chunks_halve_to_64k_on_damage_and_grow_back_after_clean_acks() -> None:
    from shipper.window import MIN_CHUNK, ChunkSizer

    sizer = ChunkSizer(1 << 20, clean=2)
    sizes = []
    for _ in range(6):
        sizer.on_damage()
        sizes.append(sizer.size)
    assert sizes == [512 << 10, 256 << 10, 128 << 10, MIN_CHUNK, MIN_CHUNK, MIN_CHUNK]
    for _ in range(2 * 4):
        sizer.on_clean_ack()
    assert sizer.size == 1 << 20 and not sizer.shrunk
    sizer.on_clean_ack()
    assert sizer.size == 1 << 20
