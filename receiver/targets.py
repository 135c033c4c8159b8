"""Where replay puts a segment: the ``ReplayTarget`` interface and its directory and command backends.

``replay_target()`` is the one place that turns a stream's replay mode into a backend. Methods block
(they copy, fsync or run a command); the replayer calls them from a worker thread. The shell helpers
here also run the inspector and the activation hook.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
from typing import Protocol

from logship.files import fsync_dir
from protocol.digest import segment_hasher
from receiver.config import ReplaySettings
from receiver.manifest import Installed
from receiver.store import READ_BLOCK, ReplicaError, SegmentStore


class ReplayTarget(Protocol):
    """Replay inspected segments, one at a time, in log order."""

    def apply(self, record: Installed) -> None:
        """Replay the segment of ``record`` from log/. Raises ReplicaError."""
        ...

    def replica_names(self) -> set[str] | None:
        """Return the names the replica holds, where the target can tell; None where it cannot."""
        ...


def replay_target(settings: ReplaySettings, store: SegmentStore, stream: str) -> ReplayTarget:
    """Return the backend of ``settings.mode`` for the copy in ``store``."""
    if settings.mode == "directory":
        return DirectoryTarget(store)
    return CommandTarget(settings, store, stream)


class DirectoryTarget:
    """Install each segment into DIR/<stream>/replica/."""

    def __init__(self, store: SegmentStore) -> None:
        self.store = store

    def apply(self, record: Installed) -> None:
        """Copy log/<segment> into replica/ atomically: temp, fsync, digest check, rename, fsync dir.

        Raises ReplicaError.
        """
        replica = self.store.replica
        replica.mkdir(exist_ok=True)
        src = self.store.log_dir / record.name
        tmp = replica / f".{record.name}.tmp"
        hasher = segment_hasher()
        try:
            with open(src, "rb") as f, open(tmp, "wb") as out:
                while block := f.read(READ_BLOCK):
                    hasher.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            if hasher.digest() != record.digest:
                tmp.unlink()
                raise ReplicaError(f"{record.name}: changed in log/ while it was replayed", corrupt=True)
            os.replace(tmp, replica / record.name)
            fsync_dir(replica)
        except FileNotFoundError:
            raise ReplicaError(f"{record.name} is missing from log/") from None
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise ReplicaError(f"{record.name}: cannot install into replica/: {e.strerror}") from None

    def replica_names(self) -> set[str] | None:
        replica = self.store.replica
        return set(os.listdir(replica)) if replica.exists() else set()


class CommandTarget:
    """Run the replay command on each segment; a non-zero exit fails it."""

    def __init__(self, settings: ReplaySettings, store: SegmentStore, stream: str) -> None:
        self.settings = settings
        self.store = store
        self.stream = stream

    def apply(self, record: Installed) -> None:
        assert self.settings.command, "command mode needs a replay command"
        path = str(self.store.log_dir / record.name)
        rc, out = run_command(
            expand_command(self.settings.command, path, record.name, self.stream),
            self.settings.command_timeout,
            segment_env(self.stream, record, path),
        )
        if rc != 0:
            raise ReplicaError(f"replay command failed on {record.name} (exit {rc}): {out or 'no output'}")

    def replica_names(self) -> set[str] | None:
        return None


def segment_env(stream: str, record: Installed, path: str) -> dict[str, str]:
    """Return the environment a replay command or inspector gets for one segment."""
    return {"LOGSHIP_STREAM": stream, "LOGSHIP_SEGMENT": record.name, "LOGSHIP_PATH": path}


def expand_command(template: str, path: str, name: str, stream: str, append_path: bool = False) -> str:
    """Fill {path}, {name}, {stream} with shell-quoted values; with ``append_path`` and no placeholder, add the path.

    Other braces are left alone, so shell syntax such as ``${VAR}`` survives.
    """
    values = {"{path}": path, "{name}": name, "{stream}": stream}
    if append_path and not any(key in template for key in values):
        return f"{template} {shlex.quote(path)}"
    for key, value in values.items():
        template = template.replace(key, shlex.quote(value))
    return template


def run_command(command: str, timeout: float, env: dict[str, str]) -> tuple[int, str]:
    """Run ``command`` with /bin/sh; return its exit status and the tail of its output (-1 on timeout)."""
    try:
        done = subprocess.run(
            ["/bin/sh", "-c", command],
            capture_output=True,
            timeout=timeout,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout:g}s"
    except OSError as e:
        return 127, str(e)
    text = (done.stdout + done.stderr).decode(errors="replace").strip()
    return done.returncode, text[-500:]
