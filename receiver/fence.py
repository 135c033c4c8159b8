"""Fencing a standby: tell its copy that epoch N exists, so that it refuses every shipper of an older one.

``python -m receiver fence`` runs this through the control socket of a running receiver (which also drops
an attached shipper of an older epoch at once) or on the data dir under its lock. With ``--fork`` the
fork of epoch N is recorded too: a shipper of epoch N whose history forks elsewhere is refused.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from protocol.messages import Position
from receiver.copy import StreamCopy
from receiver.history_file import load_history, save_history

log = logging.getLogger("receiver")


class FenceRefused(Exception):
    """The copy cannot be fenced as asked."""


async def fence(copy: StreamCopy, epoch: int, fork: Position | None) -> dict[str, Any]:
    """Raise ``copy``'s epoch to ``epoch`` (persisted) and record ``fork``; return the report.

    Raises FenceRefused for an activated copy (it is a primary: fencing it is demoting it, a reseed) or a
    fork that contradicts the one the copy already knows for that epoch.
    """
    loop = asyncio.get_running_loop()
    if copy.state.activated is not None:
        raise FenceRefused(
            f"stream {copy.name} is activated here (the primary of epoch {copy.epoch}): reseed it to make it a standby"
        )
    known = await loop.run_in_executor(None, load_history, copy.store.root)
    if fork is not None:
        mine = known.history.fork_of(epoch)
        if mine is not None and mine.position is not None and mine.position != fork:
            raise FenceRefused(f"stream {copy.name}: epoch {epoch} forked at {mine.position} here, not at {fork}")
    raised = epoch > copy.epoch
    if raised:
        copy.state.adopt_epoch(epoch)
        await copy.save_state()
    if fork is not None and known.fenced.get(epoch) != fork:
        known.fenced[epoch] = fork
        await loop.run_in_executor(None, save_history, copy.store.root, copy.name, known)
    dropped = None
    owner = copy.owner
    if raised and owner is not None:
        # Its shipper claimed an epoch at most the old one: from now on it is fenced at its next handshake.
        dropped = owner.conn.peer
        owner.conn.writer.close()
    log.warning(
        "stream %s: FENCED at epoch %d%s%s",
        copy.name,
        copy.epoch,
        f" (fork {fork})" if fork is not None else "",
        f"; dropped the shipper at {dropped}" if dropped else "",
    )
    return {
        "stream": copy.name,
        "epoch": copy.epoch,
        "raised": raised,
        "fork": str(fork) if fork is not None else None,
        "dropped_shipper": str(dropped) if dropped else None,
    }
