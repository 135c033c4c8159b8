"""What promotion makes this node's log: its activated copy (``receiver activate --epoch N``) or, at the
first epoch or one it took with it, the application's own log. Then the shipper starts from there."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from logship.ha import daemons
from logship.ha.config import AgentConfig
from logship.ha.shipping import Shipping
from protocol.history import Fork

log = logging.getLogger("logship.ha")


@dataclass(frozen=True, slots=True)
class Promoted:
    source: Path | None
    """What this node ships while it leads; None: hooks only (the application ships by itself)."""
    fork: Fork | None
    """The fork the activation made (published for a former primary's rejoin); None without one."""


def activation_fork(report: dict[str, object], epoch: int) -> Fork | None:
    """The fork of ``epoch`` in an activation report's history (with its digest)."""
    for doc in report.get("history") or []:  # type: ignore[attr-defined]
        try:
            fork = Fork.from_json(doc)
        except ValueError:
            continue
        if fork.epoch == epoch:
            return fork
    return None


async def start_primary(
    config: AgentConfig, shipping: Shipping | None, copy_dir: Path | None, may_ship_source: bool, epoch: int
) -> Promoted | None:
    """Make this node's log the stream's at ``epoch``; None when it cannot lead (retried next round)."""
    node = config.daemon
    history: Path | None = None
    fork: Fork | None = None
    if copy_dir is not None and (copy_dir / "manifest").exists():
        report = await daemons.activate(node, epoch)
        if report is None:
            return None
        source = copy_dir / "replica"
        hf = report.get("history_file")
        history = Path(hf) if isinstance(hf, str) else None
        fork = activation_fork(report, epoch)
    elif config.source is not None and may_ship_source:
        source = config.source
    elif config.source is None and node.data_dir is None:
        source = None  # hooks only: the application ships (or not) by itself
    else:
        log.error("no copy of %s to activate and no source to ship: cannot lead", node.stream)
        return None
    if source is not None and shipping is not None:
        await shipping.start(source, epoch, history)
    return Promoted(source, fork)
