"""Replay one stream's sealed, verified segments, in log order, into its standby replica.

Before a segment is replayed it is inspected: checked against the size and xxh3_128 recorded in the
manifest at install time (``SegmentStore.verify_sealed()``: by its install stamp, or its bytes read
again), its place in the log is checked (the
manifest records, for each segment, the sealed segment before it: replay only ever moves along that
chain, so a missing segment stops it), and an optional inspector command may veto it. A failure is
retried a bounded number of times with back-off; then the replay is marked Failed with the reason,
persisted in state.json, and stays stopped at that segment until an operator resumes it. Nothing is
ever skipped; a segment whose bytes went bad is moved to quarantine/, not deleted. A full disk or an
I/O error (EIO) of the replica or log/ is transient (``storage_wait()``): replay waits for it, however
long, and never counts it as a failure.

``next_to_replay()``, ``retry_delay()`` and ``replay_queue()`` are the pure decisions; where a segment
goes is its ``ReplayTarget`` (receiver/targets.py). ``Replayer.step()`` does one unit of work (tests
drive it directly) and ``Replayer.run()`` loops over it, woken through an ``asyncio.Event`` when a
segment is installed or an operator acts.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from protocol.failures import errno_name
from receiver.config import ReplaySettings
from receiver.manifest import Base, Installed, first_pdx, record_digest
from receiver.replay_batch import ReplayBatch
from receiver.replay_command import CommandRuns, ReplayRefused
from receiver.space import ReplicaNoSpace, space_wait
from receiver.state import CopyState
from receiver.storage_retry import is_storage_retry
from receiver.store import ReplicaError, SegmentStore
from receiver.targets import CommandTarget, expand_command, replay_target, run_command, segment_env

log = logging.getLogger("receiver")


class ReplayedCopy(Protocol):
    """What a replayer needs of its stream's copy (receiver/copy.py's ``StreamCopy``)."""

    name: str
    store: SegmentStore
    state: CopyState
    installed: list[Installed]
    base: Base | None

    async def save_state(self) -> None: ...


# -- decisions (pure) ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Replay:
    """Replay ``record`` now."""

    record: Installed


@dataclass(frozen=True, slots=True)
class Hold:
    """The next segment is not due before ``until`` (the replay lag)."""

    until: float


@dataclass(frozen=True, slots=True)
class Idle:
    """Everything installed is replayed."""


@dataclass(frozen=True, slots=True)
class Gap:
    """The next installed segment does not follow the replayed one: replay must stop here."""

    reason: str


Decision = Replay | Hold | Idle | Gap


def next_to_replay(
    log: Sequence[Installed], replayed: str, now: float, lag: float, base: Base | None = None
) -> Decision:
    """Decide what to replay after ``replayed`` ("" for nothing yet) given the install records in log order,
    whose chain starts at ``base`` (None: at the stream's first segment)."""
    i = bisect.bisect_right(log, replayed, key=lambda r: r.name)
    if i == len(log):
        return Idle()
    record = log[i]
    if record.prev != replayed:
        return Gap(
            f"{record.name} follows {record.prev or 'nothing'} in the log, but replay stopped at "
            f"{replayed or 'the start'}: segment(s) in between are missing"
        )
    if record.pdx is not None and (i == 0 or log[i - 1].name == replayed):
        # The content chain: a same-named segment of another history does not follow this one.
        expected = record_digest(log[i - 1]) if i else first_pdx(base)
        if expected is not None and record.pdx != expected:
            return Gap(f"{record.name} was not installed after the replayed {replayed or 'start'}: another history")
    due = record.at + lag
    if now < due:
        return Hold(due)
    return Replay(record)


def retry_delay(failures: int, retries: int, backoff: float) -> float | None:
    """Return the pause before the next attempt after ``failures`` failures in a row, or None to give up."""
    if failures > retries:
        return None
    return backoff * (2 ** (failures - 1))


def storage_wait(error: ReplicaError) -> str | None:
    """Return what a replay that failed with ``error`` waits for ("space", "storage (EIO)"), or None when
    it is an ordinary failure (retried a few times, then Failed)."""
    if isinstance(error, ReplicaNoSpace):
        return "space"
    # The backends raise ReplicaError from the OSError they met (its context, even "from None").
    cause = error.__cause__ or error.__context__
    if not error.corrupt and cause is not None and is_storage_retry(cause):
        return f"storage ({errno_name(cause)})"
    return None


def replay_queue(log: Sequence[Installed], replayed: str) -> tuple[int, int, float | None]:
    """Return (segments, bytes, install time of the oldest) installed but not yet replayed."""
    i = bisect.bisect_right(log, replayed, key=lambda r: r.name)
    waiting = log[i:]
    return len(waiting), sum(r.size for r in waiting), (waiting[0].at if waiting else None)


# -- the loop -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Retry:
    """The last attempt failed; try again after ``delay`` seconds."""

    delay: float
    reason: str


@dataclass(frozen=True, slots=True)
class Stopped:
    """Replay does not move: the stream is suspended or Failed."""

    why: str


StepResult = Decision | Retry | Stopped


class Replayer(CommandRuns):
    """Replay one stream's copy into its replica, one segment at a time."""

    def __init__(
        self,
        copy: ReplayedCopy,
        settings: ReplaySettings,
        on_replayed: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.copy = copy
        self.settings = settings
        self.target = replay_target(settings, copy.store, copy.name)
        self.on_replayed = on_replayed
        self.clock = clock
        self.batch = ReplayBatch(copy, self.target)
        self.wake = asyncio.Event()
        self.failures = 0
        self.space_waits = 0
        self.retry_at = 0.0
        """Clock time before which the failing segment is not tried again (meaningful while ``failures``)."""
        self.override = False
        """Set during activation: replay everything verified, ignoring the lag and a suspension."""
        self._settled = False
        """Whether the command run recorded in state.json before this process started was looked at."""
        self._step_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def replayed(self) -> str:
        return self.batch.last or self.copy.state.replayed or ""

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"replay-{self.copy.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def run(self) -> None:
        """Replay for ever, sleeping until an install, the lag, a retry or an operator wakes us."""
        while True:
            self.wake.clear()
            timeout: float | None = None
            try:
                result: StepResult = await self.step()
            except Exception:
                # Not a replay failure (that is ReplicaError, handled in step()) but e.g. state.json
                # that cannot be written: keep the loop alive and try again later.
                log.exception("stream %s: replay step failed; trying again in 5s", self.copy.name)
                result = Retry(5.0, "internal error")
            if isinstance(result, Replay):
                continue
            if isinstance(result, Hold):
                timeout = max(0.0, result.until - self.clock()) + 0.01
            elif isinstance(result, Retry):
                timeout = result.delay
            try:
                async with asyncio.timeout(timeout):
                    await self.wake.wait()
            except TimeoutError:
                pass

    async def step(self) -> StepResult:
        """Inspect and replay the next due segment, if any (recorded once none is due next); return what happened."""
        async with self._step_lock:
            result = await self._step()
            if not (isinstance(result, Replay) and self.batch.may_grow() and isinstance(self._next(), Replay)):
                await self.batch.commit(self.clock(), self.on_replayed)
            return result

    def _next(self) -> Decision:
        lag = 0.0 if self.override else self.settings.lag
        return next_to_replay(self.copy.installed, self.replayed, self.clock(), lag, self.copy.base)

    async def catch_up(self) -> StepResult:
        """Replay everything already verified, ignoring the lag and a suspension (activation)."""
        self.override = True
        try:
            while True:
                result = await self.step()
                if isinstance(result, Replay):
                    continue
                if isinstance(result, Retry):
                    await asyncio.sleep(result.delay)
                    continue
                return result
        finally:
            self.override = False

    async def _step(self) -> StepResult:
        state = self.copy.state
        if state.replay_failed:
            return Stopped("failed")
        if state.suspended and not self.override:
            return Stopped("suspended")
        decision = self._next()
        if isinstance(decision, Gap):
            await self._fail(decision.reason)
            return decision
        if not isinstance(decision, Replay):
            return decision
        record = decision.record
        now = self.clock()
        if (self.failures or self.space_waits) and now < self.retry_at:
            # The pause promised after a failure holds even when an install or a new segment wakes the
            # loop: otherwise a busy stream spends every attempt within a second of a short outage.
            return Retry(self.retry_at - now, self.copy.state.last_error or "retry pending")
        loop = asyncio.get_running_loop()
        try:
            target = self.target
            settled = False
            if isinstance(target, CommandTarget) and not self._settled:
                settled = await self._settle(target, record)
            if not settled:
                await loop.run_in_executor(None, self._inspect, record)
                state.inspected_ok(record.name, self.clock())
                if isinstance(target, CommandTarget):
                    await self._run_command(target, record)
                else:
                    await loop.run_in_executor(None, target.apply, record)
        except ReplayRefused as e:
            await self._fail(str(e))
            return Stopped("failed")
        except ReplicaError as e:
            wait = storage_wait(e)
            if wait is not None:
                # Transient (protocol/failures.py): a full disk or an I/O error (EIO) of the replica or
                # log/; wait for it however long, never Failed for it.
                self.space_waits += 1
                state.replay_retrying(f"waiting for {wait}: {e}")
                self.retry_at = self.clock() + space_wait(self.space_waits)
                if self.space_waits == 1:
                    log.warning("stream %s: replay waits for %s: %s", self.copy.name, wait, e)
                return Retry(space_wait(self.space_waits), str(e))
            self.failures += 1
            state.replay_retrying(str(e))
            delay = retry_delay(self.failures, self.settings.retries, self.settings.backoff)
            if delay is None:
                quarantined = None
                if e.corrupt:
                    quarantined = await loop.run_in_executor(
                        None, self.copy.store.quarantine_sealed, record.name, str(e)
                    )
                reason = f"{e} ({self.failures} attempts)"
                if quarantined is not None:
                    reason += f"; moved to {quarantined}"
                await self._fail(reason)
                return Stopped("failed")
            self.retry_at = self.clock() + delay
            log.warning(
                "stream %s: replay of %s failed (attempt %d of %d): %s; retrying in %.1fs",
                self.copy.name,
                record.name,
                self.failures,
                self.settings.retries + 1,
                e,
                delay,
            )
            return Retry(delay, str(e))
        self.failures = self.space_waits = 0
        self.batch.add(record)  # recorded by step() (receiver/replay_batch.py)
        return decision

    async def _fail(self, reason: str) -> None:
        self.failures = 0
        self.copy.state.fail_replay(reason, self.clock())
        await self.copy.save_state()
        log.error("stream %s: replay Failed and stopped: %s", self.copy.name, reason)

    def _inspect(self, record: Installed) -> None:
        """Re-verify the segment from log/ and run the inspector (blocking; worker thread)."""
        store = self.copy.store
        cmd = self.settings.inspect_cmd
        # An inspector reads the file itself: read it here first, so what it judges is what was verified.
        store.verify_sealed(record, full=bool(cmd))
        if cmd:
            path = str(store.log_dir / record.name)
            rc, out = run_command(
                expand_command(cmd, path, record.name, self.copy.name, append_path=True),
                self.settings.command_timeout,
                segment_env(self.copy.name, record, path),
            )
            if rc != 0:
                raise ReplicaError(f"inspector vetoed {record.name} (exit {rc}): {out or 'no output'}")
