"""How fast a sender may send: the per-target rate limit and the adaptive send window.

Both are pure: they never read the clock or touch a socket; the sender feeds them ``now`` and the
bytes it sent or got acknowledged, and asks what to do. Tests drive them with a fake clock.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBucket:
    """A token bucket: ``rate`` bytes per second on average, at most ``burst`` bytes at once.

    ``reserve(n, now)`` takes n bytes' worth of tokens, going into debt if need be, and returns how
    long to wait before sending them, so the long-run rate never exceeds ``rate`` while a send is
    never split.
    """

    rate: float
    """Bytes per second."""
    burst: float
    """Tokens the bucket holds at most: what may go out at once after a quiet spell."""
    tokens: float = field(init=False)
    stamp: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.tokens = self.burst

    def _refill(self, now: float) -> None:
        if self.stamp is not None and now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        if self.stamp is None or now > self.stamp:
            self.stamp = now

    def reserve(self, nbytes: int, now: float) -> float:
        """Take ``nbytes`` of tokens at ``now``; return the seconds to wait before sending them."""
        self._refill(now)
        self.tokens -= nbytes
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


def rate_limited_chunk(chunk_size: int, rate: float | None) -> int:
    """Chunk size to use under a rate limit: about 20 ms of it (64 KiB at least), so the limit paces
    the link smoothly instead of in bursts of whole chunks."""
    if rate is None:
        return chunk_size
    return max(min(chunk_size, 64 * 1024), min(chunk_size, int(rate * 0.02)))


@dataclass(frozen=True, slots=True)
class _Sent:
    end: int
    """Bytes sent on this connection once this send was done."""
    at: float
    delivered: int
    """Bytes acknowledged when it was sent."""
    delivered_at: float
    """When the newest of those was acknowledged (or the send time if none yet)."""


class AdaptiveWindow:
    """The send window, grown toward twice the path's bandwidth x delay, between a floor and a cap.

    From each acknowledgement it takes a round-trip sample (send to acknowledgement of the newest
    acknowledged byte) and a delivery-rate sample (bytes acknowledged since that byte was sent,
    over the time since the acknowledgement before it, as TCP BBR does). The window is
    ``2 x max(rate) x min(RTT)`` over the recent past, clamped to [minimum, maximum]. While the
    window is what limits the rate, each sample is about window / RTT, so the window doubles every
    round trip until the link (or the receiver) is the limit; then it settles at 2 x BDP, enough to
    keep the link busy while acknowledgements are on their way. Samples age out, so the window
    follows a link that gets slower.
    """

    def __init__(
        self,
        initial: int,
        minimum: int,
        maximum: int,
        rate_memory: float = 5.0,
        rtt_memory: float = 10.0,
    ) -> None:
        if not 0 < minimum <= initial <= maximum:
            raise ValueError("need 0 < minimum <= initial <= maximum")
        self.minimum = minimum
        self.maximum = maximum
        self.window = initial
        self.rate_memory = rate_memory
        self.rtt_memory = rtt_memory
        self._sent = 0
        self._delivered = 0
        self._delivered_at: float | None = None
        self._flight: collections.deque[_Sent] = collections.deque()
        self._rates: collections.deque[tuple[float, float]] = collections.deque()  # (at, bytes/s), falling
        self._rtts: collections.deque[tuple[float, float]] = collections.deque()  # (at, seconds), rising

    @property
    def rate(self) -> float:
        """Highest recent delivery rate in bytes per second (0 before the first sample)."""
        return self._rates[0][1] if self._rates else 0.0

    @property
    def rtt(self) -> float:
        """Lowest recent round trip in seconds (0 before the first sample)."""
        return self._rtts[0][1] if self._rtts else 0.0

    def restart(self, in_flight: int = 0) -> None:
        """Forget the sends in flight (a new connection, a rewind); keep what was learnt of the path.

        ``in_flight``: bytes still unacknowledged that will be acknowledged (kept across a rewind);
        they yield no samples.
        """
        self._flight.clear()
        self._delivered = 0
        self._sent = in_flight
        self._delivered_at = None

    def on_send(self, nbytes: int, now: float) -> None:
        """``nbytes`` more went out at ``now``."""
        self._sent += nbytes
        self._flight.append(_Sent(self._sent, now, self._delivered, self._delivered_at or now))

    def on_ack(self, nbytes: int, now: float) -> int:
        """``nbytes`` more were acknowledged at ``now``; return the new window."""
        if nbytes <= 0:
            return self.window
        self._delivered += nbytes
        newest: _Sent | None = None
        while self._flight and self._flight[0].end <= self._delivered:
            newest = self._flight.popleft()
        if newest is not None:
            rtt = now - newest.at
            interval = now - newest.delivered_at
            if rtt > 0:
                _push_min(self._rtts, now, rtt, self.rtt_memory)
            if interval > 0:
                _push_max(self._rates, now, (self._delivered - newest.delivered) / interval, self.rate_memory)
        self._delivered_at = now
        if self._rates and self._rtts:
            target = int(2 * self.rate * self.rtt)
            self.window = max(self.minimum, min(self.maximum, target))
        return self.window


def _push_max(q: collections.deque[tuple[float, float]], now: float, value: float, memory: float) -> None:
    """Keep ``q`` a falling sequence of samples younger than ``memory``: its head is the maximum."""
    while q and q[-1][1] <= value:
        q.pop()
    q.append((now, value))
    while q[0][0] < now - memory:
        q.popleft()


def _push_min(q: collections.deque[tuple[float, float]], now: float, value: float, memory: float) -> None:
    """Keep ``q`` a rising sequence of samples younger than ``memory``: its head is the minimum."""
    while q and q[-1][1] >= value:
        q.pop()
    q.append((now, value))
    while q[0][0] < now - memory:
        q.popleft()
