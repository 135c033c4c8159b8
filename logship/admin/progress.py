"""How far a catch-up has come: what ``status --watch`` draws as a bar and the daemons log every few
seconds while a target is behind (copied X of Y, rate, ETA).

Pure bookkeeping on the status rows both daemons already build: a catch-up's size is the largest copy
queue seen since the queue was last empty (the source may grow meanwhile, so Y can grow too), and its
rate is how fast the shipper sent between two looks (its ``bytes_sent``), or else how fast the queue
shrank (a receiver's rows).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from logship.admin.table import human_age, human_bytes

RATE_WEIGHT = 0.3
"""Weight of the newest measurement in the smoothed rate of a queue that shrinks."""


@dataclass(frozen=True, slots=True)
class Progress:
    """One target's catch-up as of one look."""

    left: int
    """Bytes still to copy."""
    total: int
    """The catch-up's size so far (its largest queue)."""
    segments: int
    """Segments still to copy."""
    rate: float | None
    """Bytes per second (None: not measured yet)."""

    @property
    def done(self) -> int:
        return self.total - self.left

    @property
    def fraction(self) -> float:
        return 1.0 if self.total <= 0 else self.done / self.total

    @property
    def eta(self) -> float | None:
        """Seconds to catch up at the current rate (None: no rate, or nothing left)."""
        return self.left / self.rate if self.left and self.rate else None

    def text(self) -> str:
        """E.g. ``copied 1.2 MiB of 4.0 MiB (30%), 3 seg left, 512.0 KiB/s, ETA 5.6s``."""
        rate = f"{human_bytes(self.rate)}/s" if self.rate else "rate not known yet"
        eta = f", ETA {human_age(self.eta)}" if self.eta is not None else ""
        return (
            f"copied {human_bytes(self.done)} of {human_bytes(self.total)} ({self.fraction:.0%}), "
            f"{self.segments} seg left, {rate}{eta}"
        )


class Tracker:
    """Follow one target's copy queue from look to look."""

    def __init__(self) -> None:
        self.peak = 0
        self._last: tuple[int, float] | None = None
        self._rate: float | None = None

    def update(self, row: dict[str, Any], now: float) -> Progress | None:
        """Take the row's copy queue at ``now``; return the catch-up (None: the queue is not known)."""
        left, segments = row.get("copy_queue_bytes"), row.get("copy_queue_segments")
        if not isinstance(left, int) or not isinstance(segments, int):
            self._last = None
            return None
        if left == 0:
            self.peak = 0
        self.peak = max(self.peak, left)
        # What moved since the last look: the bytes the shipper sent (its counter), else how much the
        # queue shrank (a receiver's view). Not the window's delivery-rate estimate: it measures bursts,
        # and reads 40x high behind a rate limit.
        sent = row.get("bytes_sent")
        moved = sent if isinstance(sent, int) else -left
        if self._last is not None and now > self._last[1] and moved > self._last[0]:
            speed = (moved - self._last[0]) / (now - self._last[1])
            self._rate = speed if self._rate is None else RATE_WEIGHT * speed + (1 - RATE_WEIGHT) * self._rate
        elif self._last is not None and not left:
            self._rate = None
        self._last = (moved, now)
        return Progress(left, self.peak, segments, self._rate if left else None)


def row_key(row: dict[str, Any]) -> tuple[str, str]:
    return (str(row.get("stream", "")), str(row.get("target", "")))


CONNECTED = ("Healthy", "Retrying")
"""States in which a copy queue shrinks (a disconnected target's warnings say enough already)."""


class ProgressLog:
    """Log a line per target every ``every`` seconds while it is at least that far behind, and one when
    it has caught up: the journal shows a long catch-up, not only its start and end."""

    def __init__(
        self,
        rows: Callable[[], list[dict[str, Any]]],
        log: logging.Logger,
        every: float = 5.0,
        behind: Callable[[], bool] | None = None,
    ) -> None:
        self.rows = rows
        self.log = log
        self.every = every
        self.behind = behind
        """A cheap answer to "has any row a copy queue?", asked before an idle look: None, always look."""
        self._trackers: dict[tuple[str, str], Tracker] = {}
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}
        """Targets whose catch-up is being logged: when it was first logged, and its size so far."""

    def _behind(self, row: dict[str, Any], progress: Progress) -> bool:
        """Whether a queue is a catch-up worth a line rather than the bytes of a busy live stream."""
        lag = row.get("copy_lag_seconds")
        if isinstance(lag, int | float):
            return lag >= self.every
        return progress.segments >= 2  # a receiver knows no copy lag: whole segments behind, then

    def look(self, now: float, speak: bool = True) -> bool:
        """Take one look at the rows; log what is worth it if ``speak`` (else only measure).

        Return whether any target has a copy queue or a catch-up still to be told over: worth a look
        each second.
        """
        busy = False
        # The rows are a burst of small acyclic objects (tens of thousands with 1000 streams), all freed
        # by reference counting when the look ends: collecting while they are built only traverses them
        # again and again (py-spy --native: gc_collect_main was 40 % of an idle shipper's look).
        collecting = gc.isenabled()
        gc.disable()
        try:
            for row in self.rows():
                key = row_key(row)
                progress = self._trackers.setdefault(key, Tracker()).update(row, now)
                if speak and progress is not None and row.get("state") in CONNECTED:
                    self._tell(key, row, progress, now)
                busy = busy or key in self._logged or (progress is not None and progress.left > 0)
        finally:
            if collecting:
                gc.enable()
        return busy

    def _tell(self, key: tuple[str, str], row: dict[str, Any], progress: Progress, now: float) -> None:
        who = f"target {key[1]} (stream {key[0]})" if key[1] else f"stream {key[0]}"
        if progress.left and (key in self._logged or self._behind(row, progress)):
            self._logged[key] = (self._logged.get(key, (now, 0))[0], progress.total)
            self.log.info("%s: catching up: %s", who, progress.text())
        elif not progress.left and key in self._logged:
            first, total = self._logged.pop(key)
            took, size = human_age(now - first), human_bytes(total)
            self.log.info("%s: caught up: %s copied, %s after the first progress line", who, size, took)

    async def run(self, clock: Callable[[], float], sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Measure every second while a target has a copy queue, else every ``every`` seconds; log every
        ``every`` seconds; until cancelled.

        A look builds the whole status (every stream's row): with 1000 idle streams, one a second was
        most of an idle receiver's CPU (scripts/bench scale). With every queue empty there is no rate to
        measure, and a catch-up that begins is still seen, and told, within ``every`` seconds (as before:
        the first line waited for the next ``every`` tick). With a ``behind`` probe, an idle look asks it
        first and builds the rows only if it says a queue is there.
        """
        step = min(1.0, self.every)
        waited, busy = 0.0, True
        while True:
            pause = step if busy else self.every
            await sleep(pause)
            waited += pause
            speak = waited >= self.every
            if speak:
                waited = 0.0
            # (A catch-up still to be told over keeps ``busy``: look() counts it.)
            if busy or self.behind is None or self.behind():
                busy = self.look(clock(), speak=speak)


async def log_progress(
    what: str, queue: Callable[[], tuple[int, int]], log: logging.Logger, every: float = 5.0
) -> None:
    """Log ``what: done X of Y (N%), S seg left, RATE, ETA`` every ``every`` seconds while ``queue()``
    (segments, bytes still to do) is not empty, until cancelled: for long work that is not a copy (an
    activation's replay)."""
    tracker, clock = Tracker(), asyncio.get_running_loop().time
    for tick in itertools.count():
        segments, left = queue()
        progress = tracker.update({"copy_queue_bytes": left, "copy_queue_segments": segments}, clock())
        if tick and tick % max(1, round(every)) == 0 and progress is not None and progress.left:
            log.info("%s: %s", what, progress.text().replace("copied", "done", 1))
        await asyncio.sleep(1.0)  # measured every second, told every ``every``
