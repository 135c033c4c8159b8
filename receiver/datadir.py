"""The receiver's data dir as a whole: the copies in it, its lock, and its control socket."""

from __future__ import annotations

import os
from pathlib import Path

from logship.config import ConfigError
from logship.files import lock_exclusive
from protocol.names import is_stream_name

CONTROL_SOCKET = "control.sock"


def existing_streams(data_dir: Path) -> list[str]:
    """Return the names of the stream copies under ``data_dir`` (directories with a log/), in name order."""
    try:
        entries = list(os.scandir(data_dir))
    except FileNotFoundError:
        return []
    return sorted(
        e.name for e in entries if e.is_dir() and is_stream_name(e.name) and os.path.isdir(Path(e.path) / "log")
    )


def control_path(data_dir: Path) -> Path:
    """Return where the running receiver of ``data_dir`` answers operator requests."""
    return data_dir / CONTROL_SOCKET


def lock_data_dir(data_dir: Path) -> int:
    """Hold an exclusive lock on DIR/.lock for the life of the process.

    Raises ConfigError if another receiver holds it.
    """
    fd = lock_exclusive(data_dir / ".lock")
    if fd is None:
        raise ConfigError(f"another receiver is already using {data_dir} (lock {data_dir / '.lock'} is held)")
    return fd
