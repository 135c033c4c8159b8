"""A place in a stream's log (pure: no I/O)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A place in a stream's log: a segment name and a byte offset inside it.

    Log order is name order, so positions order as (segment, offset) tuples. The empty segment
    name means "before the first segment".
    """

    segment: str
    offset: int

    def __str__(self) -> str:
        return f"{self.segment or '-'}@{self.offset}"


START = Position("", 0)
