"""Activation: make a stream's standby copy the new primary.

The caller has already stopped the stream from accepting shippers and holds its lock (a running
receiver: its session for the stream is gone; no receiver: the data-dir lock). Then, in order:
raise and persist the epoch (from this moment any shipper of an older epoch is FENCED, even if we
crash half-way), replay everything already verified ignoring the lag, leave the received but unsealed
tail beside the replica as ``<segment>.partial``, check that nothing the old primary had acknowledged
is missing, run the ``--on-activate`` hook, and report.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from logship.admin.progress import log_progress
from logship.files import fsync_dir
from logship.tasks import cancel_and_wait
from protocol.history import Fork
from protocol.messages import START, Position
from receiver.copy import StreamCopy
from receiver.history_file import CopyHistory, history_path, load_history, save_history
from receiver.manifest import Installed
from receiver.replayer import Idle, replay_queue
from receiver.store import READ_BLOCK, SegmentStore
from receiver.targets import run_command

log = logging.getLogger("receiver")

HOOK_TIMEOUT = 600.0


class ActivationRefused(Exception):
    """The activation cannot be done as asked (an epoch that is not newer than every one the copy knows)."""


def new_fork(epoch: int, installed: Sequence[Installed]) -> Fork:
    """The fork of a new ``epoch``: the end of the last segment verified into log/, with its digest.

    The unsealed tail is not part of the new epoch: it is left beside the replica for the operator, and a
    standby holding more of that segment is rewound to the last sealed one.
    """
    if not installed:
        return Fork(epoch, START, b"")
    last = installed[-1]
    return Fork(epoch, Position(last.name, last.size), last.digest)


async def _raise_epoch(copy: StreamCopy, epoch: int | None) -> tuple[bool, CopyHistory]:
    """Raise and persist the epoch, then record its fork in the history file; return (already, history)."""
    loop = asyncio.get_running_loop()
    state = copy.state
    known = await loop.run_in_executor(None, load_history, copy.store.root)
    newest = max(copy.epoch, known.newest_epoch)
    if state.activated is not None:
        if epoch is not None and epoch != copy.epoch:
            raise ActivationRefused(f"stream {copy.name} was already activated at epoch {copy.epoch}, not {epoch}")
    elif epoch is not None and epoch <= newest:
        raise ActivationRefused(
            f"stream {copy.name}: epoch {epoch} is not newer than every epoch this copy knows ({newest}); "
            "another standby may be the primary of that epoch: pick a newer one"
        )
    if newest > copy.epoch and epoch is None:
        epoch = newest + 1
    already = not state.activate(time.time(), epoch)
    if not already:
        await copy.save_state()
        log.warning("stream %s: ACTIVATED at epoch %d; shippers of older epochs are fenced", copy.name, copy.epoch)
    if known.history.epoch < copy.epoch:
        # After the epoch, so that a crash in between is mended by activating again (it is idempotent).
        known.history = known.history.extended(new_fork(copy.epoch, copy.installed))
        await loop.run_in_executor(None, save_history, copy.store.root, copy.name, known)
    return already, known


def missing_after_activation(
    installed: Sequence[Installed],
    replayed: str,
    replica_names: set[str] | None,
    acked: Position | None,
    acked_sealed: bool,
    tail: Position | None,
    pruned_before: str = "",
) -> list[str]:
    """List what the old primary had acknowledged that the activated replica does not hold.

    Acknowledged are every installed segment (a segment is installed before its SEAL is acked) and,
    where the receiver still knows it, the last ACKed position. ``replica_names`` (directory replay)
    are the files actually in replica/; ``tail`` is the unsealed tail left beside it. Segments named
    before ``pruned_before`` were removed from replica/ by the database that consumed them (standby
    retention, ``replica_keep = "consumer"``): not missing.
    """
    missing = [f"{r.name}: installed but not replayed" for r in installed if r.name > replayed]
    if replica_names is not None:
        missing += [
            f"{r.name}: replayed but not in replica/"
            for r in installed
            if pruned_before <= r.name <= replayed and r.name not in replica_names
        ]
    if acked is not None and acked.segment:
        if acked_sealed:
            if acked.segment > replayed:
                missing.append(f"{acked}: acknowledged sealed but not replayed")
        elif acked.segment > replayed and (tail is None or tail.segment != acked.segment or tail.offset < acked.offset):
            missing.append(f"{acked}: acknowledged but beyond the tail left beside the replica ({tail})")
    return sorted(set(missing))


async def activate(
    copy: StreamCopy,
    on_activate: str | None,
    acked: Position | None = None,
    acked_sealed: bool = False,
    epoch: int | None = None,
) -> dict[str, Any]:
    """Activate ``copy`` at ``epoch`` (None: the next one after all it knows); return the report (see the
    module docstring). The caller holds the stream. Raises ActivationRefused."""
    loop = asyncio.get_running_loop()
    state = copy.state
    already, known = await _raise_epoch(copy, epoch)
    fork = known.history.fork_of(copy.epoch)
    # An operator's activation is a fresh attempt: a replay Failed earlier is tried once more.
    state.retry_replay()
    copy.replayer.failures = 0

    # A long replay says how far it is every few seconds (bytes left, rate, ETA).
    def left() -> tuple[int, int]:
        return replay_queue(copy.installed, copy.replayer.replayed)[:2]

    progress = asyncio.create_task(log_progress(f"stream {copy.name}: activation replaying", left, log))
    try:
        result = await copy.replayer.catch_up()
    finally:
        await cancel_and_wait(progress)
    store = copy.store
    rec = await loop.run_in_executor(None, store.recover)
    tail: Position | None = None
    tail_path = None
    if rec.active is not None:
        tail = Position(rec.active, rec.offset)
        tail_path = str(await loop.run_in_executor(None, leave_tail, store, rec.active, rec.offset))
    replica_names = copy.replayer.target.replica_names()
    pruned = copy.retainer.pruned_before(replica_names)
    missing = missing_after_activation(
        copy.installed, copy.replayer.replayed, replica_names, acked, acked_sealed, tail, pruned
    )
    report: dict[str, Any] = {
        "stream": copy.name,
        "epoch": copy.epoch,
        "epoch_given": epoch is not None,
        "fork": str(fork.position) if fork is not None and fork.position is not None else None,
        "history": known.history.to_json(),
        "history_file": str(history_path(store.root)),
        "fence_others": None
        if epoch is not None
        else f"the epoch was chosen here: fence every other standby of {copy.name} before it can take a shipper, "
        f"e.g. python -m receiver fence --data-dir DIR --stream {copy.name} --epoch {copy.epoch}",
        "previous_epoch": state.activated.previous_epoch if state.activated is not None else None,
        "already_activated": already,
        "replay_mode": copy.replayer.settings.mode,
        "replica": str(store.replica),
        "last_replayed": copy.replayed_position.segment or None,
        "last_replayed_position": str(copy.replayed_position),
        "replay_result": "complete" if isinstance(result, Idle) else (state.replay_failed or repr(result)),
        "unsealed_tail_segment": tail.segment if tail else None,
        "unsealed_tail_bytes": tail.offset if tail else 0,
        "unsealed_tail_path": tail_path,
        "acknowledged_position": str(acked) if acked is not None else None,
        "missing_acknowledged": missing,
        "hook": on_activate,
        "hook_exit": None,
        "hook_output": None,
    }
    if on_activate:
        if missing:
            report["hook_output"] = "not run: acknowledged data is missing from the replica"
        else:
            command = (
                on_activate.replace("{stream}", copy.name)
                .replace("{epoch}", str(copy.epoch))
                .replace("{replica}", str(store.replica))
            )
            env = {
                "LOGSHIP_STREAM": copy.name,
                "LOGSHIP_EPOCH": str(copy.epoch),
                "LOGSHIP_REPLICA": str(store.replica),
                "LOGSHIP_TAIL": tail_path or "",
            }
            rc, out = await loop.run_in_executor(None, run_command, command, HOOK_TIMEOUT, env)
            report["hook_exit"], report["hook_output"] = rc, out
            log.info("stream %s: on-activate hook exited %d", copy.name, rc)
    report["ok"] = not missing and report["hook_exit"] in (None, 0)
    return report


def leave_tail(store: SegmentStore, segment: str, size: int) -> Path:
    """Copy the first ``size`` verified bytes of the partial ``segment`` to replica/<segment>.partial."""
    store.replica.mkdir(exist_ok=True)
    dest = store.replica / f"{segment}.partial"
    tmp = store.replica / f".{segment}.partial.tmp"
    with open(store.partial_path(segment), "rb") as f, open(tmp, "wb") as out:
        left = size
        while left:
            block = f.read(min(READ_BLOCK, left))
            if not block:
                raise OSError(f"{segment}.partial is shorter than its {size} verified bytes")
            out.write(block)
            left -= len(block)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, dest)
    fsync_dir(store.replica)
    return dest


def render_report(report: dict[str, Any]) -> str:
    """Return the activation report as the lines ``python -m receiver activate`` prints."""
    lines = [
        f"stream {report['stream']}: activated at epoch {report['epoch']}"
        + (" (it was already activated)" if report["already_activated"] else ""),
        f"  fork (end of the old epoch): {report['fork'] or '-'}; ship with --history {report['history_file']}",
        f"  last replayed position:   {report['last_replayed_position']} ({report['replay_result']})",
        f"  replica:                  {report['replica']}",
        f"  unsealed tail:            {report['unsealed_tail_bytes']} bytes"
        + (f" in {report['unsealed_tail_path']}" if report["unsealed_tail_path"] else ""),
        "  acknowledged data missing: "
        + ("NO" if not report["missing_acknowledged"] else "YES: " + "; ".join(report["missing_acknowledged"])),
    ]
    if report["fence_others"]:
        lines.append(f"  WARNING: {report['fence_others']}")
    if report["hook"]:
        lines.append(f"  on-activate hook:         exit {report['hook_exit']}: {report['hook_output'] or ''}".rstrip())
    return "\n".join(lines)
