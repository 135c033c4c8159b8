"""Readable tables and units for the status commands."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from tabulate import tabulate

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
    body = [[cell(row.get(key)) for key, _ in columns] for row in rows]
    return tabulate(body, headers=[header for _, header in columns], tablefmt="simple", disable_numparse=True)
