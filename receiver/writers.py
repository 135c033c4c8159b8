"""Who writes a stream's copy, and whether a new connection may take over from it. No I/O.

A new connection for a stream that another connection writes takes over from it: that is how a
shipper that restarted (its old connection half-open, nobody to close it) or reconnected gets back in
at once. Two live shippers of one stream would take over from each other for ever (about ten
reconnects a second, issue 13), so the shipper id of HELLO tells them apart: a shipper whose
connection was taken over by the current writer is refused while that writer is attached, with an ERROR
that names the writer; it backs off and gets in once the writer is gone. The id is per sender
(``PID.RANDOM/N``): two targets of one process that reach this receiver are refused at once, the
second one named as the same process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from protocol.handshake import same_process as same_process  # the sid format is the protocol's


@dataclass(slots=True)
class Writer:
    """The shipper writing a copy through one connection."""

    node: str
    shipper: str
    """Its process id from HELLO; "" from an older shipper (which always takes over, as before)."""
    addr: str
    since: float = field(default_factory=time.time)
    displaced: frozenset[str] = frozenset()
    """Shipper ids whose connections this writer took over (directly or before it, transitively)."""
    refused: set[str] = field(default_factory=set)
    """Shipper ids refused while this writer is attached (the first refusal of each is logged)."""

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"node {self.node}, id {self.shipper or '?'}, addr {self.addr}, since {since}"


def take_over(current: Writer | None, newcomer: Writer) -> str | None:
    """Decide whether ``newcomer`` may take the copy over from ``current``: None if it may (its
    ``displaced`` is then set), else the reason it is refused (another live shipper has the copy)."""
    if current is None:
        return None
    same = newcomer.shipper and newcomer.shipper == current.shipper
    if not same and same_process(newcomer.shipper, current.shipper):
        # One process, two of its targets reaching this receiver (two names or routes of it): both
        # are alive (it is one process), and taking over would only be taken back.
        return (
            f"another shipper ({current.describe()}) is shipping this stream: the same process, through another target"
        )
    if newcomer.shipper and current.shipper and not same and newcomer.shipper in current.displaced:
        # The current writer took over from this very process: both are alive. The one attached stays.
        return f"another shipper ({current.describe()}) is shipping this stream"
    if current.shipper and not same:
        newcomer.displaced = current.displaced | {current.shipper}
    else:
        newcomer.displaced = current.displaced
    return None
