"""Storage verbs as data: what the ingest decides and the store carries out, in order. No I/O."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Write:
    """Append ``payload`` at ``offset`` of the partial ``segment`` (creating it at offset 0)."""

    segment: str
    offset: int
    payload: bytes = field(repr=False)
    digest: int


@dataclass(frozen=True, slots=True)
class Install:
    """The partial ``segment`` is complete and verified at ``size``: move it into log/.

    ``digest`` (xxh3_128) and ``prev`` (the sealed segment before it, "" for none) go into the
    manifest, so replay can re-verify the segment and check that the log has no gap.
    """

    segment: str
    size: int
    digest: bytes = b""
    prev: str = ""


@dataclass(frozen=True, slots=True)
class Restart:
    """The partial ``segment`` failed its whole-segment digest: quarantine it, start it again empty."""

    segment: str
    reason: str


Op = Write | Install | Restart
