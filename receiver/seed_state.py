"""The ``seeding`` record of a copy's state.json (receiver/state.py makes every transition of it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Seeding:
    """An operator's reseed, under way until the base image is installed."""

    at: float | None
    """When the reseed was asked for."""
    manual_resume: bool = False
    """Replay waits for an operator's ``resume`` once the image is installed."""

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "manual_resume": self.manual_resume}


def parse_seeding(value: Any) -> Seeding | None:
    """Read the state.json value; raises ValueError for one of the wrong type."""
    if not value:
        return None
    if not isinstance(value, dict):
        raise ValueError("seeding is not an object")
    at = value.get("at")
    return Seeding(None if at is None else float(at), bool(value.get("manual_resume")))
