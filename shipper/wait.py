"""Synchronous replication on demand: wait until a segment's bytes are durable (or replayed) at the
targets a sync policy requires.

One ``Waiters`` per stream. It reads each target's position only from what its sender learnt from
the target's authenticated ACKs and WELCOME (``TargetStats.acked`` / ``replayed``, and only once
``known`` since this shipper started): a forged frame never reaches there (the session MAC), and a
position from before a reconnect is replaced by the WELCOME's, so a target that lost bytes is never
counted for them. Waiting changes nothing: retention and shipping go on as before.

The senders call ``wake()`` whenever a durable or replayed position moves; every waiter then looks
again. It also looks every ``RECHECK`` seconds, because a target going down or being suspended
changes who a FIRST policy waits for, and no ACK says so.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from protocol.errors import ProtocolError
from protocol.messages import Position
from protocol.names import check_segment_name
from shipper.policy import DEFAULT_POLICY, Policy, PolicyError, TargetPosition, parse_policy, resolve, satisfying
from shipper.service import ShipperService
from shipper.status import TargetState, covers
from shipper.tailer import SegmentInfo, is_segment
from shipper.window import AckKey

RECHECK = 0.5
"""Seconds between looks without a wake-up (state changes that no ACK reports)."""
LOOK_FOR = 10.0
"""Seconds a segment the tailer has not seen is looked for before it counts as unknown."""
MAX_TIMEOUT = 86400.0
MAX_WAITS = 10000
"""Waits one stream serves at once: POST /wait may face many clients, each holding one until its timeout."""
LEVELS = ("durable", "replayed")
_UP = (TargetState.HEALTHY, TargetState.RETRYING)


class WaitUsageError(ValueError):
    """The wait cannot mean anything: unknown stream or segment, bad policy, bad arguments."""


@dataclass(frozen=True, slots=True)
class Need:
    """The bytes waited for: ``[0, offset)`` of ``segment``, or (``offset`` None) the whole sealed segment."""

    segment: str
    offset: int | None
    level: str = "durable"


def holds(acked: AckKey, replayed: Position | None, need: Need) -> bool:
    """Return whether a target at durable ``acked`` and ``replayed`` holds what ``need`` asks for."""
    pos, _ = acked
    if need.offset is None:
        durable = covers(acked, need.segment)
    else:
        durable = pos.segment > need.segment or (pos.segment == need.segment and pos.offset >= need.offset)
    if need.level == "durable" or not durable:
        return durable
    # Replay applies whole sealed segments, in order: a replayed segment holds all its bytes.
    return replayed is not None and replayed.segment >= need.segment


def behind(segments: list[SegmentInfo], names: list[str], acked: AckKey, need: Need) -> tuple[int, int]:
    """Return (segments, bytes) of the source between ``acked`` and the end of what ``need`` asks for."""
    pos, sealed = acked
    count = nbytes = 0
    for seg in segments[bisect.bisect_left(names, pos.segment) :]:
        if seg.name > need.segment:
            break
        end = seg.size if seg.name != need.segment or need.offset is None else need.offset
        start = pos.offset if seg.name == pos.segment else 0
        if seg.name == pos.segment and sealed:
            continue
        count += 1
        nbytes += max(0, end - start)
    return count, nbytes


class Waiters:
    """The waiters of one stream's service, woken when a target's position moves."""

    def __init__(self, service: ShipperService, default_policy: str | None = None) -> None:
        self.service = service
        self.default_policy = default_policy or DEFAULT_POLICY
        self._moved = asyncio.Event()
        self.active = 0
        """Waits in progress."""
        for sender in service.senders:
            sender.on_progress = _chain(sender.on_progress, self.wake)

    def wake(self) -> None:
        """A position moved: wake every waiter (each one waits on the event of its own generation)."""
        self._moved.set()
        self._moved = asyncio.Event()

    def policy(self, text: str | None) -> Policy:
        """Parse and resolve ``text`` (None: the stream's default). Raises WaitUsageError."""
        try:
            return resolve(parse_policy(text or self.default_policy), [s.name for s in self.service.senders])
        except PolicyError as e:
            raise WaitUsageError(f"stream {self.service.stream.name}: {e}") from None

    def positions(self, need: Need) -> dict[str, TargetPosition]:
        out = {}
        for s in self.service.senders:
            st = s.stats
            held = st.known and holds((st.acked, st.acked_sealed), st.replayed, need)
            out[s.name] = TargetPosition(held, s.state in _UP)
        return out

    async def wait_durable(
        self,
        segment: str,
        offset: int | None = None,
        *,
        level: str = "durable",
        require: str | None = None,
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        """Wait until ``[0, offset)`` of ``segment`` (None: all of it, sealed) is at ``level`` where the
        policy ``require`` (None: the stream's ``sync``, else ANY 1) says; return the outcome as a dict
        (``outcome`` ``satisfied`` or ``timeout``, ``satisfied_by``, ``missing``).

        Raises WaitUsageError for an unknown segment (after looking for it), a bad policy or argument.
        """
        need = self._need(segment, offset, level)
        policy = self.policy(require)
        if not 0 <= timeout <= MAX_TIMEOUT:
            raise WaitUsageError(f"timeout must be between 0 and {MAX_TIMEOUT:g} seconds")
        if self.active >= MAX_WAITS:
            raise WaitUsageError(f"stream {self.service.stream.name}: {MAX_WAITS} waits already in progress")
        self.active += 1
        try:
            return await self._wait(need, policy, timeout)
        finally:
            self.active -= 1

    async def _wait(self, need: Need, policy: Policy, timeout: float) -> dict[str, Any]:
        segment = need.segment
        tailer = self.service.tailer
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline, look_until = start + timeout, start + min(timeout, LOOK_FOR)
        seen: dict[str, float] = {}
        while True:
            if segment not in tailer.by_name and tailer.scan():
                tailer.notify()  # the caller has usually just renamed it in: ship it now
            self._check_offset(need)
            positions = self.positions(need)
            now_wall = time.time()
            for name, p in positions.items():
                if p.holds:
                    seen.setdefault(name, now_wall)
            by = satisfying(policy, positions)
            now = loop.time()
            if by is not None:
                return self._result("satisfied", need, policy, now - start, positions, by, seen)
            if tailer.error is not None and self._source_gone():
                # The source dir is gone (status shows every target Failed): nothing more can be shipped
                # until it is back, so say so now instead of at the timeout.
                return self._result("failed", need, policy, now - start, positions, (), seen)
            if segment not in tailer.by_name and now >= look_until and not any(p.holds for p in positions.values()):
                raise WaitUsageError(
                    f"stream {self.service.stream.name} has no segment {segment} in {self.service.stream.source}"
                )
            if now >= deadline:
                return self._result("timeout", need, policy, now - start, positions, (), seen)
            moved = self._moved
            try:
                async with asyncio.timeout(min(deadline - now, RECHECK)):
                    await moved.wait()
            except TimeoutError:
                pass

    def _source_gone(self) -> bool:
        """Look at the source dir once more (it may be back, a remount); return whether it is still gone."""
        tailer = self.service.tailer
        if tailer.scan():
            tailer.notify()
        return tailer.error is not None

    def _need(self, segment: str, offset: int | None, level: str) -> Need:
        try:
            check_segment_name(segment)
        except ProtocolError:
            raise WaitUsageError(f"bad segment name {segment!r}") from None
        if not is_segment(segment, self.service.tailer.pattern):
            raise WaitUsageError(f"{segment} is not a segment name of stream {self.service.stream.name}")
        if offset is not None and (isinstance(offset, bool) or not isinstance(offset, int) or offset < 0):
            raise WaitUsageError(f"bad offset {offset!r}: expected a byte count >= 0")
        if level not in LEVELS:
            raise WaitUsageError(f"bad level {level!r}: expected durable or replayed")
        return Need(segment, offset, level)

    def _check_offset(self, need: Need) -> None:
        info = self.service.tailer.by_name.get(need.segment)
        if need.offset is not None and info is not None and info.sealed and need.offset > info.size:
            raise WaitUsageError(
                f"segment {need.segment} is sealed at {info.size} bytes; offset {need.offset} never comes"
            )

    def _result(
        self,
        outcome: str,
        need: Need,
        policy: Policy,
        waited: float,
        positions: Mapping[str, TargetPosition],
        by: tuple[str, ...],
        seen: Mapping[str, float],
    ) -> dict[str, Any]:
        tailer = self.service.tailer
        missing = []
        for s in self.service.senders:
            if s.name in by or positions[s.name].holds:
                continue
            st = s.stats
            segs, nbytes = (
                behind(tailer.segments, tailer.names, (st.acked, st.acked_sealed), need) if st.known else (None, None)
            )
            reason = s.state.value
            if outcome == "failed" and s.state not in (TargetState.FENCED, TargetState.SUSPENDED):
                # As status shows it: a target cannot catch up while the source cannot be read.
                reason = f"{TargetState.FAILED.value}: {tailer.error}"
            elif s.state not in _UP and st.last_error:
                reason += f": {st.last_error}"
            if (
                need.level == "replayed"
                and st.known
                and holds((st.acked, st.acked_sealed), None, Need(need.segment, need.offset))
            ):
                reason += "; durable, not yet replayed"
            elif segs is not None:
                reason += f"; behind by {segs} segment(s), {nbytes} byte(s)"
            else:
                reason += "; position not known yet"
            missing.append(
                {
                    "target": s.name,
                    "state": reason.split(":", 1)[0] if outcome == "failed" else s.state.value,
                    "reason": reason,
                    "behind_segments": segs,
                    "behind_bytes": nbytes,
                }
            )
        info = tailer.by_name.get(need.segment)
        source = None
        if outcome == "failed":
            source = tailer.error
        elif info is None:
            source = "not in the source directory"
        elif need.offset is None and not info.sealed:
            source = "not sealed on the source yet (a later segment, seal_idle or segment_size seals it)"
        elif need.offset is not None and info.size < need.offset:
            source = f"the source has {info.size} bytes of it so far"
        return {
            "outcome": outcome,
            "source": source if outcome != "satisfied" else None,
            "stream": self.service.stream.name,
            "segment": need.segment,
            "offset": need.offset,
            "sealed": need.offset is None,
            "level": need.level,
            "policy": str(policy),
            "waited_seconds": round(waited, 6),
            "satisfied_by": [{"target": t, "at": seen.get(t)} for t in by],
            "missing": missing if outcome != "satisfied" else [],
        }


def _chain(first: Callable[[], None] | None, then: Callable[[], None]) -> Callable[[], None]:
    if first is None:
        return then

    def both() -> None:
        first()
        then()

    return both


async def handle(waiters: Mapping[str, Waiters], request: Mapping[str, Any]) -> dict[str, Any]:
    """Serve a wait request from the control socket or ``POST /wait`` (JSON fields as the CLI's flags).

    Returns ``{"ok": True, "outcome": ...}``; ``outcome`` ``usage`` (with ``error``) for a request that
    cannot mean anything.
    """
    try:
        stream = request.get("stream")
        if not isinstance(stream, str) or stream not in waiters:
            raise WaitUsageError(f"no stream {stream!r} here")
        offset, sealed = request.get("offset"), bool(request.get("sealed", False))
        if (offset is None) == (not sealed):
            raise WaitUsageError("give exactly one of offset and sealed")
        timeout = request.get("timeout", 60.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise WaitUsageError(f"bad timeout {timeout!r}")
        require = request.get("require")
        if require is not None and not isinstance(require, str):
            raise WaitUsageError(f"bad require {require!r}: expected a policy text")
        result = await waiters[stream].wait_durable(
            str(request.get("segment", "")),
            offset,
            level=str(request.get("level", "durable")),
            require=require,
            timeout=float(timeout),
        )
    except WaitUsageError as e:
        return {"ok": True, "outcome": "usage", "error": str(e)}
    return {"ok": True, **result}
