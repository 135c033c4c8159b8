"""A copy's history file, DIR/<stream>/history.json: the history its bytes were written under and the
forks operators gave with ``fence --fork``. Activation appends the new epoch's fork to it; a shipper of
the new primary ships under it (``python -m shipper --history FILE``).

``{"stream": S, "epoch": N, "history": [{"epoch", "fork": {"seg", "off"} | null, "xxh"}...],
"fenced": [{"epoch", "fork"}...]}``, written temp + fsync + rename + fsync dir. A missing file is
epoch 0 with no forks (a copy from before histories existed).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logship.files import write_atomic
from protocol.history import Fork, History
from protocol.messages import Position

HISTORY_FILE = "history.json"
MAX_CACHED = 4096
"""History files whose parsed history ``history_rows`` keeps (one per copy; beyond it, it starts over)."""

_FileKey = tuple[int, int, int, int]
_parsed: dict[Path, tuple[_FileKey, History]] = {}
"""The history last read from each copy's file, by the file's device, inode, size and mtime."""


@dataclass(slots=True)
class CopyHistory:
    """What a copy knows of its stream's history."""

    history: History = field(default_factory=History)
    """The forks of the epochs the copy's bytes were written under."""
    fenced: dict[int, Position] = field(default_factory=dict)
    """Forks an operator named with ``fence --fork``: a shipper of that epoch must agree."""

    @property
    def newest_epoch(self) -> int:
        return max([self.history.epoch, *self.fenced])

    def to_json(self, stream: str) -> dict[str, Any]:
        return {
            "stream": stream,
            "epoch": self.history.epoch,
            "history": self.history.to_json(),
            "fenced": [
                {"epoch": e, "fork": {"seg": p.segment, "off": p.offset}} for e, p in sorted(self.fenced.items())
            ],
        }


def history_path(root: Path) -> Path:
    return root / HISTORY_FILE


def load_history(root: Path) -> CopyHistory:
    """Read DIR/<stream>/history.json. Raises ValueError if it is not a history file, OSError."""
    try:
        doc = json.loads(history_path(root).read_text())
    except FileNotFoundError:
        return CopyHistory()
    if not isinstance(doc, dict):
        raise ValueError(f"{history_path(root)} is not a JSON object")
    history = History.from_json(doc.get("history", []))
    fenced = {}
    for item in doc.get("fenced", []):
        fork = Fork.from_json(item)
        if fork.position is not None:
            fenced[fork.epoch] = fork.position
    return CopyHistory(history, fenced)


def save_history(root: Path, stream: str, copy_history: CopyHistory) -> None:
    write_atomic(history_path(root), json.dumps(copy_history.to_json(stream), indent=1, sort_keys=True).encode())


def history_rows(root: Path) -> list[dict[str, Any]]:
    """The history as status rows show it; empty when the file cannot be read (status must not fail).

    The file is read again only when it changed: save_history() renames a new file into place (a new
    inode), and any other writer changes its size or mtime; a status look otherwise costs one stat().
    """
    path = history_path(root)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        _parsed.pop(path, None)
        return CopyHistory().history.to_json()
    except OSError:
        return []
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    cached = _parsed.get(path)
    if cached is not None and cached[0] == key:
        return cached[1].to_json()
    try:
        history = load_history(root).history
    except (OSError, ValueError):
        return []
    if len(_parsed) >= MAX_CACHED:
        _parsed.clear()
    _parsed[path] = (key, history)
    return history.to_json()
