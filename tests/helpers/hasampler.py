"""A sampler of an HA cluster for the failover tests: every ~50 ms, each agent's role and epoch from its
own /status, the standby's receiver row and its copy's size, so that a test can check what held at
every instant (never two primaries, epochs only grow, no promotion while the old epoch is attached)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from logship.admin import control
from logship.ha.local import copy_mark
from receiver.datadir import control_path
from tests.helpers.hanode import HaNode

SAMPLE = 0.05
"""Seconds between two samples."""


@dataclass
class Sample:
    at: float
    """Wall clock (the hooks stamp the wall clock too)."""
    roles: dict[str, str | None]
    """Each agent's role from its /status (None: it did not answer)."""
    epochs: dict[str, int]
    b_row: tuple[str, int] | None
    """b's receiver row of sg1: (state, epoch); Healthy means a shipper of that epoch is attached."""
    b_total: int
    """Bytes of b's copy (manifest plus partial)."""


@dataclass
class Sampler:
    """Samples ``nodes`` (and ``b``, the standby watched) in ``run`` (a thread) until ``stop`` is set."""

    nodes: list[HaNode]
    b: HaNode
    samples: list[Sample] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        for _ in range(int(120 / SAMPLE)):  # bounded: two minutes at most
            if self.stop.is_set():
                return
            at = time.time()
            roles: dict[str, str | None] = {}
            epochs: dict[str, int] = {}
            for n in self.nodes:
                doc = n.ha_status(timeout=0.5)
                roles[n.name] = str(doc["role"]) if doc else None
                if doc and isinstance(doc.get("epoch"), int):
                    epochs[n.name] = int(doc["epoch"])  # type: ignore[call-overload]
            mark = copy_mark(self.b.copy())
            self.samples.append(Sample(at, roles, epochs, b_row(self.b), mark.total if mark else 0))
            time.sleep(SAMPLE)


def b_row(node: HaNode) -> tuple[str, int] | None:
    """The node's receiver row of sg1 through its control socket: (state, epoch); None when it does not answer."""
    try:
        reply = control.call(control_path(node.data_dir), {"op": "status"}, 1)
    except (control.ControlUnavailable, control.ControlError, OSError, ValueError):
        return None
    for row in reply.get("copies", []):
        if row.get("stream") == "sg1":
            return str(row.get("state")), int(row.get("epoch") or 0)
    return None
