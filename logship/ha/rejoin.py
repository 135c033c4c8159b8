"""A node whose copy is activated (it led an older epoch from it) rejoins the current epoch as a standby.

The new leader's agent publishes the fork its activation made (position and xxh3_128, ``history/<N>``
``fork``) once it leads. The copy here led epoch L; every epoch after L forked somewhere, and the part of
what this node led that is still in the stream's history ends at the earliest of those forks. With
``rejoin = "auto"`` (the default) the receiver keeps what this node led up to that fork and moves the
rest into quarantine/, after checking the fork's digest against its own bytes (receiver/rejoin.py); when
a check fails it reseeds the copy from the new leader instead (the leader's shipper needs a
``seed_command``). ``reseed`` always reseeds; ``manual`` leaves the copy as it is and logs what to do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from logship.admin import control
from logship.ha.daemons import Node
from protocol.history import Fork
from receiver.datadir import control_path

log = logging.getLogger("logship.ha")

MODES = ("auto", "reseed", "manual")
FORK_WAIT = 30.0
"""How long ``auto`` waits for the current leader to publish its fork before it reseeds instead."""
REJOIN_TIMEOUT = 600.0
"""The receiver copies what this node led into log/: a large epoch takes its time."""


def rejoin_fork(forks: Mapping[int, Fork], led: int, current: int) -> tuple[Fork | None, list[int]]:
    """The earliest fork of the epochs after ``led`` up to ``current``, and the epochs whose fork is not
    published. Bytes this node wrote past that fork are in no later epoch's history."""
    missing = [e for e in range(led + 1, current + 1) if e not in forks or forks[e].position is None]
    known = [forks[e] for e in range(led + 1, current + 1) if e not in missing]
    if not known:
        return None, missing
    return min(known, key=lambda f: (f.position, f.epoch)), missing


def _call(path: Path, request: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return control.call(path, request, REJOIN_TIMEOUT)
    except (control.ControlUnavailable, control.ControlError, OSError, ValueError) as e:
        log.error("rejoin: the receiver did not answer: %s", e)
        return None


class Rejoiner:
    """The agent's part: pick the fork, ask the running receiver, say once what happened."""

    def __init__(self, node: Node, mode: str, pattern: str | None = None) -> None:
        self.node = node
        self.mode = mode
        self.pattern = pattern
        """The shipper's pattern ([ha.shipper]): the names it shipped from replica/ while this node led."""
        self.said: tuple[int, str] | None = None
        self.waiting_since: float | None = None

    def _say(self, epoch: int, text: str, error: bool = False) -> None:
        if self.said != (epoch, text):
            self.said = (epoch, text)
            (log.error if error else log.warning)("%s", text)

    async def rejoin(self, epoch: int, led: int, forks: Mapping[int, Fork], now: float | None = None) -> bool:
        """Make the activated copy a standby of ``epoch``; True once it is (rejoined or Seeding)."""
        now = time.monotonic() if now is None else now
        if self.node.data_dir is None:
            return False
        if self.mode == "manual":
            self._say(
                epoch, f"the copy here is activated (primary of epoch {led}): rejoin = manual; reseed it to rejoin"
            )
            return False
        fork, missing = rejoin_fork(forks, led, epoch)
        reseed = self.mode == "reseed"
        if not reseed and missing:
            if missing != [epoch]:
                reseed = True  # an older epoch's fork was never published: nothing to check against
            elif self.waiting_since is None or now - self.waiting_since < FORK_WAIT:
                self.waiting_since = self.waiting_since if self.waiting_since is not None else now
                self._say(epoch, f"rejoin of epoch {epoch}: waiting for its leader to publish its fork")
                return False
            else:
                reseed = True
        request: dict[str, Any] = {"op": "rejoin", "stream": self.node.stream, "epoch": epoch, "reseed": True}
        if not reseed and fork is not None:
            request["fork"] = fork.to_json()
        if self.pattern:
            request["pattern"] = self.pattern
        reply = await asyncio.to_thread(_call, control_path(self.node.data_dir), request)
        if reply is None:
            return False
        if not reply.get("ok"):
            self._say(epoch, f"rejoin of epoch {epoch} refused: {reply.get('error')}", error=True)
            return False
        report = reply.get("report") or {}
        self.waiting_since = None
        if report.get("reseeded"):
            why = report.get("why") or "rejoin = reseed"
            self._say(epoch, f"rejoined epoch {epoch} by a reseed ({why}); old copy in {report.get('moved_to')}")
        else:
            kept, cut = len(report.get("adopted_segments", [])), report.get("moved_bytes", 0)
            where = report.get("quarantine")
            text = f"rejoined epoch {epoch} as a standby at {report.get('fork')}: kept {kept} segments this node led"
            self._say(epoch, f"{text}, {cut} bytes past the fork moved to {where}")
        return True
