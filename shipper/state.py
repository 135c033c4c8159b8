"""The shipper's state directory: suspended targets (kept across restarts), the control socket, a lock.

Layout::

    STATE_DIR/lock           flock'ed by the running shipper, so two shippers never share a state dir
    STATE_DIR/control.sock   the control channel (status, suspend, resume), mode 0600
    STATE_DIR/suspended.json the suspended targets, written temp + fsync + rename + fsync dir

A shipper keeps no copy positions here: each target's disk is the truth about what it holds, and the
shipper learns it again at every handshake.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logship.files import lock_exclusive, write_atomic

SUSPENDED_FILE = "suspended.json"
CONTROL_SOCKET = "control.sock"
LOCK_FILE = "lock"
# sockaddr_un holds 108 bytes including the NUL.
MAX_SOCKET_PATH = 107


@dataclass(frozen=True, slots=True)
class Suspension:
    """One suspended target of one stream."""

    comment: str | None
    """Why, in the operator's words."""
    since: float
    """Wall-clock time it was suspended."""


SuspensionKey = tuple[str, str]
"""(stream, target as HOST:PORT)."""


class StateBusy(Exception):
    """Another running shipper holds this state directory."""


class StateDir:
    """The files of one shipper's state directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_fd = -1

    @property
    def control_socket(self) -> Path:
        return self.path / CONTROL_SOCKET

    def create(self) -> None:
        """Make the directory (mode 0700) if missing.

        Raises OSError if it cannot.
        """
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)

    def lock(self) -> None:
        """Take the directory for this process until it exits or ``unlock()``.

        Raises StateBusy if another process holds it, OSError if the lock file cannot be opened.
        """
        fd = lock_exclusive(self.path / LOCK_FILE, 0o600)
        if fd is None:
            raise StateBusy(f"another shipper uses the state directory {self.path}")
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def load_suspensions(self) -> dict[SuspensionKey, Suspension]:
        """Read the suspended targets; an absent file means none.

        Raises ValueError if the file is not what this module writes.
        """
        try:
            raw = (self.path / SUSPENDED_FILE).read_bytes()
        except FileNotFoundError:
            return {}
        doc = json.loads(raw)
        out: dict[SuspensionKey, Suspension] = {}
        for item in doc.get("suspended", []):
            key = (str(item["stream"]), str(item["target"]))
            comment = item.get("comment")
            out[key] = Suspension(None if comment is None else str(comment), float(item.get("since", 0.0)))
        return out

    def save_suspensions(self, suspensions: dict[SuspensionKey, Suspension]) -> None:
        """Persist the suspended targets (temp file, fsync, rename, fsync dir)."""
        items: list[dict[str, Any]] = [
            {"stream": stream, "target": target, "comment": s.comment, "since": s.since}
            for (stream, target), s in sorted(suspensions.items())
        ]
        write_atomic(self.path / SUSPENDED_FILE, json.dumps({"suspended": items}, indent=1).encode() + b"\n", 0o600)

    def set_suspended(self, stream: str, target: str, suspended: bool, comment: str | None) -> bool:
        """Record a suspension or its end, straight in the file (when no shipper runs); return if it changed."""
        current = self.load_suspensions()
        key = (stream, target)
        if suspended:
            current[key] = Suspension(comment, time.time())
        elif current.pop(key, None) is None:
            return False
        self.save_suspensions(current)
        return True


def check_socket_path(path: Path) -> None:
    """Raise ValueError if ``path`` is too long for a unix socket address."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ValueError(
            f"control socket path {path} is longer than {MAX_SOCKET_PATH} bytes; use a shorter --state-dir"
        )
