"""The receiver's status rows: one per stream copy, from its state, manifest and replay position. No I/O.

The same rows come from a running receiver (through its control channel or ``/status``) and, when none
runs, from the data dir on disk, so ``python -m receiver status`` reads alike either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from protocol.messages import SourceHead
from receiver.ha_view import HA_COLUMN, ha_text
from receiver.manifest import Installed
from receiver.replayer import replay_queue
from receiver.state import CopyState, Role

COLUMNS = [("stream", "STREAM"), ("epoch_text", "EPOCH")]
"""The receiver's own first columns; logship.admin.table.STATUS_COLUMNS, shared with the shipper, follow."""


def copy_state(state: CopyState, attached: bool | None, attached_once: bool = False) -> str:
    """Name the state of a copy; ``attached`` None means no receiver runs (read from disk)."""
    if state.role is Role.ACTIVATED:
        return "Activated"
    if state.role is Role.SEEDING:
        return "Seeding"
    if state.role is Role.FAILED or state.replay_failed:
        return "Failed"
    if state.suspended:
        return "Suspended"
    if attached:
        return "Healthy"
    if attached is None or attached_once:
        return "Disconnected"
    return "Initializing"


def copy_row(
    stream: str,
    state: CopyState,
    installed: Sequence[Installed],
    now: float,
    attached: bool | None,
    attached_once: bool = False,
    replay_lag: float | None = None,
    history: Sequence[dict[str, Any]] = (),
    source_head: tuple[SourceHead, float] | None = None,
) -> dict[str, Any]:
    """Build one status row in the shape admin/ expects (see COORD: status shape)."""
    replayed = state.replayed or ""
    segments, nbytes, oldest = replay_queue(installed, replayed)
    last = installed[-1] if installed else None
    failure = state.failed or state.replay_failed
    row: dict[str, Any] = {
        "stream": stream,
        "state": copy_state(state, attached, attached_once),
        "epoch": state.epoch,
        # The forks of the epochs the copy's bytes were written under (receiver/history_file.py).
        "history": list(history),
        # The attached shipper's copy queue from its last HEARTBEAT (at most a heartbeat interval old).
        "copy_queue_segments": source_head[0].queue_segments if source_head else None,
        "copy_queue_bytes": source_head[0].queue_bytes if source_head else None,
        "replay_queue_segments": segments,
        "replay_queue_bytes": nbytes,
        "last_copied": last.name if last else None,
        "last_copied_at": last.at if last else None,
        "last_inspected": state.inspected,
        "last_inspected_at": state.inspected_at,
        "last_replayed": replayed or None,
        "last_replayed_at": state.replayed_at,
        "lag_seconds": round(now - oldest, 3) if oldest is not None else 0.0,
        # The same number under the name both sides' tables use: how long the oldest segment copied
        # but not replayed has waited (compare with replay_lag_seconds, the configured replay lag).
        "replay_wait_seconds": round(now - oldest, 3) if oldest is not None else 0.0,
        "failure": failure,
        "suspended": state.suspended,
        "comment": state.comment,
        "retrying": state.last_error,
    }
    if replay_lag is not None:
        row["replay_lag_seconds"] = replay_lag
    if source_head is not None:
        head, at = source_head
        row["source_head"] = f"{head.position.segment or '-'}@{head.position.offset}"
        row["source_head_at"] = at
    if state.activated is not None:
        row["activated_at"] = state.activated.at
    return row


def render_rows(rows: Sequence[dict[str, Any]], now: float) -> str:
    """Return the rows as the readable table of ``python -m receiver status``."""
    # Imported here: tabulate is only needed by the command line, not by the daemon's start-up.
    from logship.admin.table import STATUS_COLUMNS, epoch_text, render, status_cells

    extra = {"epoch_text": epoch_text, "kept_text": kept_text, "ha_text": ha_text}
    cells = [{**status_cells(row, now), **{k: f(row) for k, f in extra.items()}} for row in rows]
    # HA (the node's agent, receiver/ha_view.py) only where an agent publishes its view.
    ha = [HA_COLUMN] if any("ha" in row for row in rows) else []
    # KEPT (standby retention, receiver/retention.py) goes before REASON, which stays the last column.
    return render(cells, [*COLUMNS, *STATUS_COLUMNS[:-1], KEPT_COLUMN, *ha, *STATUS_COLUMNS[-1:]])


KEPT_COLUMN = ("kept_text", "KEPT")


def kept_text(row: dict[str, Any]) -> str:
    """The KEPT cell: what log/ keeps, since which segment, and what retention removed: ``5 seg, 1.0 MiB
    from E0A (195 removed, 39.0 MiB)``."""
    from logship.admin.table import human_bytes, queue_text

    if row.get("kept_segments") is None:
        return "-"
    text = queue_text(row["kept_segments"], row.get("kept_bytes"))
    if row.get("oldest_kept"):
        text += f" from {row['oldest_kept']}"
    if row.get("removed_segments"):
        text += f" ({row['removed_segments']} removed, {human_bytes(row.get('removed_bytes'))})"
    return text


WAITING_FROM = ("Healthy", "Disconnected", "Initializing")
"""The states a copy held up by its storage shows as Waiting instead (a Failed, Suspended, Activated or
Seeding copy keeps its own state: that says more)."""


def waiting_row(row: dict[str, Any], why: str | None) -> dict[str, Any]:
    """Show in a copy's own row that it waits for its storage (receiver/space.py ``SpaceGuard.waiting``):
    state Waiting, the reason (``disk full (12.0 MiB free, min_free 64MiB)``) and the ``waiting`` gauge."""
    waits = why is not None and row.get("state") in WAITING_FROM
    row["waiting"] = int(waits)
    if waits:
        row["state"] = "Waiting"
        row["retrying"] = why
    return row
