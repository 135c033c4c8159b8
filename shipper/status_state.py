"""What status needs across a shipper restart: each target's last acknowledged position, last copied
segment (and when), and replayed position, kept in ``STATE_DIR/status.json``.

It is for the operator only. A restarted shipper shows these at once (COPY QUEUE, LAST COPIED, the
copy-queue series in /metrics) instead of ``-`` until each target answers again; nothing that
decides anything (retention, ``wait``, where to resume) reads them: those still trust only what a
target proves on this connection, since a target's disk is the truth and may have changed (restored,
rewound) while the shipper was down. The file is rewritten at most once a second when something
moved (temp + fsync + rename, logship/files.py), so a kill -9 loses at most the last second.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logship.files import write_atomic
from protocol.messages import Position
from shipper.remembered import Remembered
from shipper.status import TargetStats, newest_copied

log = logging.getLogger("shipper")

STATUS_FILE = "status.json"
SAVE_EVERY = 1.0
"""Seconds between checks for a change worth writing."""


Key = tuple[str, str]
"""(stream, target as HOST:PORT)."""


def remember(stats: TargetStats, now: float) -> Remembered | None:
    """Return what to keep of a target's live stats: what this run learnt, else what the last run left."""
    if not stats.known:
        return stats.remembered
    last_at = stats.last_copied_at
    prev = stats.remembered
    if last_at is None and prev is not None and prev.last_copied == stats.last_copied:
        last_at = prev.last_copied_at  # the WELCOME names it again, without a time: keep the time we had
    return Remembered(stats.acked, stats.acked_sealed, stats.acked_at, stats.last_copied, last_at, stats.replayed, now)


def load(state_dir: Path) -> dict[Key, Remembered]:
    """Read the kept status; an absent or unreadable file means none (it is only a display)."""
    path = state_dir / STATUS_FILE
    try:
        doc = json.loads(path.read_bytes())
        return {
            (str(item["stream"]), str(item["target"])): Remembered.from_json(item) for item in doc.get("targets", [])
        }
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        log.warning("ignoring the kept status %s (%s); status shows '-' until each target answers", path, e)
        return {}


def save(state_dir: Path, kept: dict[Key, Remembered]) -> None:
    """Write ``kept`` crash-safely (temp file, fsync, rename, fsync dir)."""
    items = [{"stream": s, "target": t, **r.to_json()} for (s, t), r in sorted(kept.items())]
    write_atomic(state_dir / STATUS_FILE, json.dumps({"targets": items}, indent=1).encode() + b"\n", 0o600)


def _view(kept: dict[Key, Remembered]) -> dict[Key, tuple[Any, ...]]:
    """What must differ for a rewrite to be worth it (not the save time)."""
    return {k: (r.acked, r.acked_sealed, r.last_copied, r.last_copied_at, r.replayed) for k, r in kept.items()}


class StatusKeeper:
    """Keep every target's status in the state dir while the shipper runs."""

    def __init__(self, state_dir: Path, targets: Iterable[tuple[Key, TargetStats]]) -> None:
        """Hand each target's kept status (if any) to its stats, as ``stats.remembered``."""
        self.state_dir = state_dir
        self.targets = list(targets)
        kept = load(state_dir)
        for key, stats in self.targets:
            stats.remembered = kept.get(key)
        self._written = _view(kept)
        self._probed: list[tuple[Any, ...]] | None = None
        """The targets' raw fields at the last flush that found nothing to write, or wrote."""

    def _probe(self) -> list[tuple[Any, ...]]:
        """Each target's fields that a kept status is made of: a flush that finds them all as they were
        has nothing to write, and skips the snapshot (with 1000 idle targets, building one each second
        was a tenth of the idle shipper's CPU)."""
        return [
            (s.known, s.acked, s.acked_sealed, s.last_copied, s.last_copied_at, s.replayed, s.remembered)
            for _, s in self.targets
        ]

    def snapshot(self, now: float) -> dict[Key, Remembered]:
        out = {}
        for key, stats in self.targets:
            item = remember(stats, now)
            if item is not None:
                out[key] = item
        return out

    async def flush(self) -> None:
        """Write the status now if it changed since the last write."""
        probe = self._probe()
        if probe == self._probed:
            return
        kept = self.snapshot(time.time())
        view = _view(kept)
        if view == self._written:
            self._probed = probe
            return
        try:
            await asyncio.to_thread(save, self.state_dir, kept)
        except OSError as e:
            log.warning("cannot keep the status in %s: %s", self.state_dir / STATUS_FILE, e)
            return
        self._written, self._probed = view, probe

    async def run(self) -> None:
        """Write changes once a second until cancelled, and once more then (a clean stop loses nothing)."""
        try:
            while True:
                await asyncio.sleep(SAVE_EVERY)
                await self.flush()
        finally:
            await asyncio.shield(self.flush())


@dataclass(frozen=True, slots=True)
class Shown:
    """What status shows of one target: this run's proven values, else the previous run's."""

    acked: tuple[Position, bool] | None
    """The acknowledged position (None: not known at all)."""
    proven: bool
    """Whether ``acked`` was proven by the target on this run (else it is the previous run's)."""
    replayed: Position | None
    last_copied: str
    last_copied_at: float | None


def shown_acked(stats: TargetStats) -> tuple[Position, bool] | None:
    """Return the acknowledged position status shows: this run's, else the previous run's, else None."""
    if stats.known:
        return (stats.acked, stats.acked_sealed)
    prev = stats.remembered
    return None if prev is None else (prev.acked, prev.acked_sealed)


def shown(stats: TargetStats, names: Sequence[str]) -> Shown:
    """Return what status shows of a target with these ``stats``, the source holding ``names``."""
    prev = stats.remembered
    acked = shown_acked(stats)
    last, at = stats.last_copied, stats.last_copied_at
    if not last and acked is not None:
        last = newest_copied(names, acked)  # a WELCOME inside a segment: the one before it is copied
    if prev is not None and not last:
        last, at = prev.last_copied, prev.last_copied_at
    elif prev is not None and last == prev.last_copied and at is None:
        at = prev.last_copied_at  # named again by the WELCOME, which carries no time
    replayed = stats.replayed if stats.replayed is not None else (prev.replayed if prev is not None else None)
    return Shown(acked, stats.known, replayed, last, at)
