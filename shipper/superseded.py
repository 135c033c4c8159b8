"""A target that says another connection took this stream over: two shippers of one stream (an old
one left running, a second with another state dir) would otherwise take it from each other ten times
a second, without a word. The one taken over waits longer each time it happens again."""

from __future__ import annotations

import collections

from protocol.errors import ErrorCode
from shipper.handshake import Reconnect

SUPERSEDED = str(ErrorCode.SUPERSEDED)
"""The ERROR code a receiver sends the connection another one took the stream from."""
FIRST_PAUSE, MAX_PAUSE, MEMORY = 5.0, 60.0, 600.0


class Superseded(Reconnect):
    """Another connection took the stream over at the target: reconnect after ``pause`` seconds."""

    def __init__(self, text: str, pause: float) -> None:
        super().__init__(text)
        self.pause = pause


class Supersessions:
    """When this sender was taken over lately: the pause doubles with each in the last ten minutes."""

    def __init__(self) -> None:
        self._times: collections.deque[float] = collections.deque(maxlen=16)

    def note(self, text: str, now: float) -> Superseded:
        while self._times and now - self._times[0] > MEMORY:
            self._times.popleft()
        self._times.append(now)
        pause = min(MAX_PAUSE, FIRST_PAUSE * 2 ** (len(self._times) - 1))
        return Superseded(f"{text}; waiting {pause:g}s before taking it back", pause)
