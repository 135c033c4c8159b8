"""One target's status as the previous run of the shipper last saw it (kept by shipper/status_state.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol.messages import Position


@dataclass(frozen=True, slots=True)
class Remembered:
    """One target's status as the previous run of the shipper last saw it."""

    acked: Position
    acked_sealed: bool
    acked_at: float
    last_copied: str
    last_copied_at: float | None
    replayed: Position | None
    saved_at: float
    """When the previous run wrote it (how old this view is)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "acked": [self.acked.segment, self.acked.offset, self.acked_sealed],
            "acked_at": self.acked_at,
            "last_copied": self.last_copied,
            "last_copied_at": self.last_copied_at,
            "replayed": None if self.replayed is None else [self.replayed.segment, self.replayed.offset],
            "saved_at": self.saved_at,
        }

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Remembered:
        """Raises KeyError, TypeError or ValueError if ``item`` is not what ``to_json`` wrote."""
        seg, off, sealed = item["acked"]
        replayed = item.get("replayed")
        at = item.get("last_copied_at")
        return cls(
            Position(str(seg), int(off)),
            bool(sealed),
            float(item.get("acked_at") or 0.0),
            str(item.get("last_copied") or ""),
            None if at is None else float(at),
            None if replayed is None else Position(str(replayed[0]), int(replayed[1])),
            float(item.get("saved_at") or 0.0),
        )
