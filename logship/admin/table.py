"""Readable tables and units for the status commands."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_bytes(n: int | float | None) -> str:
    """Return ``n`` bytes as e.g. ``1.5 MiB``; ``-`` for None."""
    if n is None:
        return "-"
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_age(seconds: float | None) -> str:
    """Return a duration as e.g. ``850ms``, ``12.3s``, ``4m05s``, ``3h02m``; ``-`` for None."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def since(timestamp: float | None, now: float | None = None) -> str:
    """Return how long ago a wall-clock ``timestamp`` was, e.g. ``12.3s ago``; ``-`` for None."""
    if not timestamp:
        return "-"
    now = time.time() if now is None else now
    return f"{human_age(max(0.0, now - timestamp))} ago"


def cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def render(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """Return ``rows`` as a plain-text table with the given (key, header) columns."""
    if not rows:
        return "(nothing to show)"
    # Imported here: only the command line renders tables (the daemons import this module for its units).
    from tabulate import tabulate

    body = [[cell(row.get(key)) for key, _ in columns] for row in rows]
    return tabulate(body, headers=[header for _, header in columns], tablefmt="simple", disable_numparse=True)


# -- the status table both daemons print ---------------------------------------------------------

STATUS_COLUMNS = [
    ("state", "STATE"),
    ("copy_queue_text", "COPY QUEUE"),
    ("replay_queue_text", "REPLAY QUEUE"),
    ("last_copied_text", "LAST COPIED"),
    ("last_replayed_text", "LAST REPLAYED"),
    ("copy_lag_text", "COPY LAG"),
    ("replay_lag_text", "REPLAY LAG"),
    ("progress_text", "RATE / ETA"),
    ("reason", "REASON"),
]
"""The columns, words and units of ``status`` on both sides (what each side cannot know shows ``-``)."""

OK_STATES = ("Healthy", "Activated")
"""The states in which ``status`` exits 0: copying (and replaying) as configured, or, on a receiver,
a copy activated as the new primary (its end state). Anything else, Suspended included, exits 1."""


def queue_text(segments: int | None, nbytes: int | None) -> str:
    """Return a queue as ``3 seg, 2.5 MiB``; ``-`` when it is not known."""
    return "-" if segments is None else f"{segments} seg, {human_bytes(nbytes)}"


def reason(row: dict[str, Any]) -> str:
    """Return why a row is not simply Healthy: its failure, suspension, retry or comment."""
    if row.get("failure"):
        return str(row["failure"])
    if row.get("suspended"):
        return f"suspended: {row.get('comment') or '(no comment)'}"
    if row.get("retrying"):
        return f"retrying: {row['retrying']}"
    return str(row.get("comment") or "")


def progress_text(queue_bytes: int | None, rate: float | None) -> str:
    """Return a catch-up's rate and time to catch up, e.g. ``5.2 MiB/s, ETA 12.0s``; ``-`` if not catching up."""
    if not queue_bytes or not rate or rate <= 0:
        return "-"
    return f"{human_bytes(rate)}/s, ETA {human_age(queue_bytes / rate)}"


def _rate(row: dict[str, Any]) -> float | None:
    rate, limit = row.get("delivery_rate_bytes"), row.get("rate_limit_bytes")
    if isinstance(rate, int | float) and isinstance(limit, int | float) and limit > 0:
        return min(rate, limit)
    return rate if isinstance(rate, int | float) else None


def status_cells(row: dict[str, Any], now: float) -> dict[str, Any]:
    """Return ``row`` with the text of every STATUS_COLUMNS cell added."""

    def at(name: str | None, when: float | None) -> str:
        if not name:
            return "-"
        return f"{name} ({since(when, now)})" if when else name  # the shipper learns no replay times

    wait, lag = row.get("replay_wait_seconds"), row.get("replay_lag_seconds")
    replay_lag = human_age(wait) if wait is not None else "-"
    if lag:
        replay_lag = f"{replay_lag} (lag {human_age(lag)})"
    return {
        **row,
        "copy_queue_text": queue_text(row.get("copy_queue_segments"), row.get("copy_queue_bytes")),
        "replay_queue_text": queue_text(row.get("replay_queue_segments"), row.get("replay_queue_bytes")),
        "last_copied_text": at(row.get("last_copied"), row.get("last_copied_at")),
        "last_replayed_text": at(row.get("last_replayed"), row.get("last_replayed_at")),
        "copy_lag_text": human_age(row.get("copy_lag_seconds")),
        "replay_lag_text": replay_lag,
        # The rate the target acknowledged lately (the shipper measures it; a receiver shows -), never
        # above the rate limit: the window's estimate measures bursts (``status --watch`` measures better).
        "progress_text": progress_text(row.get("copy_queue_bytes"), _rate(row))
        if row.get("state") in ("Healthy", "Retrying")
        else "-",  # a rate measured before the target went away says nothing about when it catches up
        "reason": reason(row),
    }


def exit_status(rows: Sequence[dict[str, Any]]) -> int:
    """Return what ``status`` exits with: 0 every row in an OK state, 1 any other (0 for no rows)."""
    return 0 if all(row.get("state") in OK_STATES for row in rows) else 1


def epoch_text(row: dict[str, Any]) -> str:
    """The EPOCH cell: the epoch, and where each epoch of the history forked (``1@E4@1000``)."""
    forks = [
        f"{f['epoch']}@{f['fork']['seg'] or '-'}@{f['fork']['off']}" if f.get("fork") else f"{f['epoch']}@?"
        for f in row.get("history") or []
    ]
    return f"{row.get('epoch')}" + (f" (forks {', '.join(forks)})" if forks else "")
