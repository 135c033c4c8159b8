"""The command backend's part of a replay step: the run recorded before a restart, and one recorded run.

A mixin of ``Replayer`` (receiver/replayer.py), kept apart for size: the attributes it uses are the
replayer's. How a run outlives the receiver is receiver/replay_run.py's; the backend is
receiver/targets.py's ``CommandTarget``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from receiver.manifest import Installed
from receiver.replay_run import Finished, Interrupted
from receiver.state import CopyState
from receiver.store import ReplicaError
from receiver.targets import CommandTarget

log = logging.getLogger("receiver")


class ReplayRefused(Exception):
    """The next run of a segment is not allowed (an interrupted run on a target not safe to re-run)."""


class RunCopy(Protocol):
    """What the command runs need of the copy (a part of receiver/replayer.py's ``ReplayedCopy``)."""

    name: str
    state: CopyState

    async def save_state(self) -> None: ...


class CommandRuns:
    """Settle and run replay commands for ``Replayer``."""

    copy: RunCopy
    clock: Callable[[], float]
    _settled: bool

    async def _settle(self, target: CommandTarget, record: Installed) -> bool:
        """Find out what became of the command run recorded before a restart; True if it replayed ``record``.

        Raises ReplicaError (retried) when that run failed or still runs after the command timeout, and
        ReplicaNoSpace (waited for, not counted) when it failed for lack of space.
        """
        state = self.copy.state
        pending = state.replaying
        if pending is None or pending.segment != record.name or pending.settled:
            if pending is not None and pending.segment != record.name:
                state.replay_forgotten()
            self._settled = True
            return False
        outcome = await target.settle(pending.segment, pending.attempt)
        self._settled = True
        if isinstance(outcome, Finished):
            log.warning(
                "stream %s: attempt %d at %s finished while no receiver watched it (exit %d); taking its result",
                self.copy.name,
                pending.attempt,
                record.name,
                outcome.rc,
            )
            # Settled: a lack of space waits, and the next attempt runs the command again.
            target.check_space(record.name, outcome)
            if outcome.rc != 0:
                raise ReplicaError(f"replay command failed on {record.name} (exit {outcome.rc}): {outcome.output}")
            return True
        if isinstance(outcome, Interrupted):
            log.warning("stream %s: replay of %s was interrupted: %s", self.copy.name, record.name, outcome.reason)
            state.replay_interrupted(record.name)
            await self.copy.save_state()
        return False

    async def _run_command(self, target: CommandTarget, record: Installed) -> None:
        """Record the attempt durably, run it under the wrapper, and say how it ended.

        Raises ReplicaError (retried) or ReplayRefused (an interrupted run that may not run again).
        """
        state = self.copy.state
        pending = state.replaying
        interrupted = pending is not None and pending.segment == record.name and pending.interrupted
        choice = target.command_for(interrupted)
        if choice is None:
            raise ReplayRefused(
                f"replay of {record.name} was interrupted; the target is not known to be safe to re-run "
                "(repair the target and resume, or set replay_rerun = safe or a replay recover command)"
            )
        kind, template = choice
        run = state.replay_begins(record.name, kind, self.clock())
        # Durable before the command starts: a restarted receiver must know this attempt may have run.
        await self.copy.save_state()
        outcome = await target.run(record, run.attempt, kind, template)
        if isinstance(outcome, Finished):
            if outcome.rc != 0:
                raise ReplicaError(
                    f"replay command failed on {record.name} (exit {outcome.rc}): {outcome.output or 'no output'}"
                )
            return
        if isinstance(outcome, Interrupted):
            state.replay_interrupted(record.name)
            await self.copy.save_state()
            if target.command_for(True) is None:
                raise ReplayRefused(
                    f"replay of {record.name} was interrupted ({outcome.reason}); the target is not known to be "
                    "safe to re-run (repair the target and resume, or set replay_rerun = safe or a replay "
                    "recover command)"
                )
        raise ReplicaError(f"replay of {record.name} did not complete: {outcome.reason}")
