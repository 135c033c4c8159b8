"""Rate limit and adaptive window, driven by a fake clock."""

from __future__ import annotations

import pytest

from shipper.pacing import AdaptiveWindow, TokenBucket, rate_limited_chunk

MiB = 1 << 20


# -- token bucket ----------------------------------------------------------------------------------


def test_bucket_lets_a_burst_through_then_paces_at_the_rate() -> None:
    bucket = TokenBucket(rate=1_000_000, burst=100_000)
    assert bucket.reserve(100_000, now=0.0) == 0.0  # the full bucket
    assert bucket.reserve(50_000, now=0.0) == pytest.approx(0.05)  # in debt: wait for 50 kB of tokens
    # After waiting, the next send is paid from tokens earned meanwhile.
    assert bucket.reserve(10_000, now=0.05) == pytest.approx(0.01)


def test_bucket_long_run_rate_is_the_limit() -> None:
    """Send 1 MB chunks as fast as the bucket allows for a simulated minute: the rate is the limit."""
    rate = 6_250_000.0  # 50 Mbit/s
    bucket = TokenBucket(rate=rate, burst=125_000)
    now, sent = 0.0, 0
    while now < 60:
        sent += 1_000_000
        now += bucket.reserve(1_000_000, now)
    assert sent / now == pytest.approx(rate, rel=0.02)


def test_bucket_does_not_save_up_beyond_the_burst() -> None:
    bucket = TokenBucket(rate=1000, burst=500)
    bucket.reserve(500, now=0.0)
    # An hour of quiet earns at most one burst.
    assert bucket.reserve(500, now=3600.0) == 0.0
    assert bucket.reserve(500, now=3600.0) == pytest.approx(0.5)


def test_bucket_ignores_a_clock_that_goes_back() -> None:
    bucket = TokenBucket(rate=1000, burst=1000)
    bucket.reserve(1000, now=10.0)
    assert bucket.reserve(1000, now=9.0) == pytest.approx(1.0)


def test_bucket_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=10)


def test_chunks_shrink_under_a_rate_limit() -> None:
    assert rate_limited_chunk(MiB, None) == MiB
    assert rate_limited_chunk(MiB, 6_250_000) == 125_000  # 20 ms at 50 Mbit/s
    assert rate_limited_chunk(MiB, 10_000) == 64 * 1024  # never below 64 KiB
    assert rate_limited_chunk(MiB, 1e12) == MiB  # never above the configured chunk
    assert rate_limited_chunk(4096, 10_000) == 4096


# -- adaptive window -------------------------------------------------------------------------------


def simulate(window: AdaptiveWindow, link_rate: float, rtt: float, seconds: float, chunk: int = 256 * 1024) -> float:
    """A link of ``link_rate`` bytes/s and ``rtt``: send chunks while the window allows, each is
    acknowledged rtt after it finished crossing the link. Returns the delivered rate of the last
    half of the run."""
    now = 0.0
    link_free = 0.0
    in_flight: list[tuple[float, int]] = []  # (ack time, bytes)
    in_flight_bytes = 0
    delivered_late = 0
    while now < seconds:
        while in_flight and in_flight[0][0] <= now:
            at, n = in_flight.pop(0)
            in_flight_bytes -= n
            window.on_ack(n, at)
            if at >= seconds / 2:
                delivered_late += n
        if in_flight_bytes + chunk <= window.window:
            window.on_send(chunk, now)
            link_free = max(link_free, now) + chunk / link_rate
            in_flight.append((link_free + rtt, chunk))
            in_flight_bytes += chunk
        else:
            now = in_flight[0][0] if in_flight else now + 0.001
    return delivered_late / (seconds / 2)


def test_window_grows_to_fill_a_long_fat_pipe() -> None:
    # 1 Gbit/s x 100 ms: a BDP of 12.5 MB, far more than the 4 MiB we start with.
    rate, rtt = 125e6, 0.1
    window = AdaptiveWindow(initial=4 * MiB, minimum=1 * MiB, maximum=256 * MiB)
    achieved = simulate(window, rate, rtt, seconds=10)
    assert achieved >= 0.95 * rate
    assert 2 * rate * rtt * 0.9 <= window.window <= 2 * rate * rtt * 1.5  # about 2 x BDP
    assert window.rtt == pytest.approx(rtt, rel=0.1)


def test_fixed_small_window_cannot_fill_it() -> None:
    """The same link with the window pinned to 4 MiB: the window, not the link, is the limit."""
    rate, rtt = 125e6, 0.1
    window = AdaptiveWindow(initial=4 * MiB, minimum=4 * MiB, maximum=4 * MiB)
    achieved = simulate(window, rate, rtt, seconds=10)
    assert achieved < 0.4 * rate


def test_window_stays_at_the_floor_on_a_short_thin_link() -> None:
    window = AdaptiveWindow(initial=16 * MiB, minimum=4 * MiB, maximum=64 * MiB)
    achieved = simulate(window, 12.5e6, 0.05, seconds=10)  # 100 Mbit/s x 50 ms: 2 x BDP = 1.25 MB
    assert achieved >= 0.95 * 12.5e6
    assert window.window == 4 * MiB


def test_window_respects_the_cap() -> None:
    window = AdaptiveWindow(initial=4 * MiB, minimum=1 * MiB, maximum=8 * MiB)
    simulate(window, 125e6, 0.2, seconds=5)
    assert window.window == 8 * MiB


def test_window_follows_a_link_that_gets_slower() -> None:
    window = AdaptiveWindow(initial=4 * MiB, minimum=1 * MiB, maximum=256 * MiB, rate_memory=2.0)
    simulate(window, 125e6, 0.1, seconds=6)
    big = window.window
    window.restart()
    simulate(window, 12.5e6, 0.1, seconds=12)
    assert window.window < big / 4


def test_restart_keeps_kept_bytes_out_of_the_samples() -> None:
    window = AdaptiveWindow(initial=4 * MiB, minimum=1 * MiB, maximum=64 * MiB)
    window.on_send(MiB, 0.0)
    window.on_send(MiB, 0.0)
    window.restart(in_flight=MiB)  # a rewind dropped the second MiB; the first is still coming
    window.on_send(MiB, 1.0)  # resent
    window.on_ack(MiB, 1.01)  # the kept first MiB: no sample (its send time is forgotten)
    assert window.rtt == 0
    window.on_ack(MiB, 1.1)  # the resent MiB: RTT 0.1
    assert window.rtt == pytest.approx(0.1)


def test_window_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        AdaptiveWindow(initial=1, minimum=2, maximum=3)
