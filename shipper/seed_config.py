"""The ``seed_command`` of a stream (issue 17): where its images are spooled, and the sender's settings."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from logship.files import write_atomic
from shipper.settings import StreamConfig, TargetConfig

log = logging.getLogger("shipper")


def floor_file(stream: StreamConfig) -> Path | None:
    """Where the newest segment removed from the front of the source is kept across restarts."""
    return stream.seed_dir / "floor" if stream.seed_dir is not None else None


def keep_floor(tailer: Any, path: Path | None) -> None:
    """Load the tailer's floor from ``path`` and persist it there whenever it moves."""
    if path is None:
        return
    with contextlib.suppress(OSError):
        tailer.floor = path.read_text().strip()

    def save(floor: str) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(path, floor.encode() + b"\n", 0o600)
        except OSError as e:
            log.warning("cannot record the source's floor in %s: %s", path, e)

    tailer.on_floor = save


def seed_settings(stream: StreamConfig, target: TargetConfig) -> object:
    """The sender's ``config.seed`` for ``target`` (None: the stream has no seed_command)."""
    from shipper.seed import SeedSettings

    if stream.seed_command is None or stream.seed_dir is None:
        return None
    return SeedSettings(stream.seed_command, stream.seed_dir / target.name.replace(":", "_"))
