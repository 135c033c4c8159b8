"""Storage verbs as data: what the ingest decides and the store carries out, in order. No I/O."""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass, field

import xxhash


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


@dataclass(frozen=True, slots=True)
class Rewrite:
    """Replace ``payload``'s length of bytes at ``offset`` of the partial ``segment`` (all already held)."""

    segment: str
    offset: int
    payload: bytes = field(repr=False)
    changed: concurrent.futures.Future[bool] = field(
        default_factory=concurrent.futures.Future, compare=False, repr=False
    )
    """Set once carried out: whether any byte on disk changed (a resent block may hold the same bytes)."""


@dataclass(frozen=True, slots=True, eq=False)
class Rehash:
    """Digest the first ``size`` bytes of the partial ``segment`` as they are on disk into ``done``.

    With ``current`` (the running digest of the bytes received) and ``rewrites`` (every Rewrite of the
    segment since that digest began, carried out before this op): when none of them changed a byte on
    disk, the partial is what ``current`` hashed, and ``done`` is ``current`` without reading it again.
    """

    segment: str
    size: int
    done: concurrent.futures.Future[xxhash.xxh3_128] = field(default_factory=concurrent.futures.Future)
    current: xxhash.xxh3_128 | None = None
    rewrites: tuple[Rewrite, ...] = ()


Op = Write | Install | Restart | Rewrite | Rehash
