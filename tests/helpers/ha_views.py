"""An HA agent's view document (what logship/ha/view_file.py writes) for the unit tests of both readers."""

from __future__ import annotations

from typing import Any

NOW = 1_000_000.0
"""The tests' wall clock: the view was written 0.2 s and its lease renewed 0.4 s before it."""


def view(**kw: Any) -> dict[str, Any]:
    """A fresh view of standby b following a at epoch 2, in the sync set; ``kw`` replaces fields."""
    doc = {
        "node": "b",
        "role": "standby",
        "leader": "a",
        "epoch": 2,
        "copy_epoch": 2,
        "sync": ["b"],
        "eligible": True,
        "ineligible": None,
        "last_action": "hold: following a",
        "lease_renewed_at": NOW - 0.4,
        "written_at": NOW - 0.2,
        "fresh_for": 3.0,
        "stopped": False,
    }
    return {**doc, **kw}
