"""Where replay puts a segment: the ``ReplayTarget`` interface and its directory and command backends.

``replay_target()`` is the one place that turns a stream's replay mode into a backend. The directory
backend's methods block (they copy and fsync); the replayer calls them from a worker thread. The command
backend is a coroutine around receiver/replay_run.py's wrapper. The shell helpers
here also run the inspector and the activation hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import mmap
import os
import shlex
import subprocess
from collections import Counter
from pathlib import Path
from typing import Protocol

from logship.files import fsync_dir
from protocol.digest import segment_hasher
from receiver.config import ReplaySettings
from receiver.manifest import Installed
from receiver.replay_run import Finished, Outcome, RunRecord, run_wrapped, settle, wait_run
from receiver.space import ReplicaNoSpace, command_lacks_space, free_space, is_no_space
from receiver.store import READ_BLOCK, ReplicaError, SegmentStore

log = logging.getLogger("receiver")


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
    """Install each segment into DIR/<stream>/replica/.

    replica/ sits beside log/, so a replayed segment is normally a hard link to the verified file in
    log/: atomic, and not one data byte written. Where replica/ is another filesystem (a mount or a
    symlink), the segment is cloned (reflink) or copied in the kernel (copy_file_range) and read back
    to check it; a plain read-and-write copy is the last resort. A hard-linked replica shares its bytes
    with log/: it must never be written in place (docs/operations.md).
    """

    def __init__(self, store: SegmentStore) -> None:
        self.store = store
        self.how: Counter[str] = Counter()
        """How many segments went in by each way (link, clone, copy_file_range, copy): for tests and stats."""
        self.unflushed = 0
        """Segments renamed into replica/ since its last directory flush."""

    def apply(self, record: Installed) -> None:
        """Put log/<segment> into replica/ atomically: temp name, fsync, rename; the directory's flush
        is ``flush()``'s, once for a batch of segments (receiver/replay_batch.py): call it before the
        segment is recorded as replayed.

        Raises ReplicaError.
        """
        replica = self.store.replica
        replica.mkdir(exist_ok=True)
        src = self.store.log_dir / record.name
        tmp = replica / f".{record.name}.tmp"
        try:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()  # left by a crash or an earlier failed attempt
            if _same_file(src, replica / record.name):
                # Linked already (a crash before state.json said so). A rename over it would do nothing
                # at all (both names are one file), so there is nothing to replace.
                how = "linked already"
            else:
                how = _link(src, tmp) or _copy(src, tmp, record)
                os.replace(tmp, replica / record.name)
            # Flushed even when linked already: that link may be one a crash caught before the flush.
            self.unflushed += 1
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise ReplicaError(f"{record.name} is missing from log/") from None
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            # A full disk heals by itself: replay waits for space instead of counting it as a failure.
            kind = ReplicaNoSpace if is_no_space(e) else ReplicaError
            raise kind(f"{record.name}: cannot install into replica/: {e.strerror or e}") from None
        except ReplicaError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self.how[how] += 1

    def flush(self) -> None:
        """Make the entries ``apply()`` made in replica/ durable (one device flush for all). Raises OSError."""
        if self.unflushed:
            fsync_dir(self.store.replica)
            self.unflushed = 0

    def replica_names(self) -> set[str] | None:
        replica = self.store.replica
        return set(os.listdir(replica)) if replica.exists() else set()


# Errors that say "this filesystem (pair) cannot do that", not "the disk failed": try the next way.
_UNSUPPORTED = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS}
_FICLONE = 0x40049409


def _same_file(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except FileNotFoundError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _link(src: Path, tmp: Path) -> str:
    """Hard-link ``src`` as ``tmp`` and make the new link count durable; return "link", or "" where the
    filesystem cannot (another filesystem, no hard links)."""
    try:
        os.link(src, tmp)
    except OSError as e:
        if e.errno in _UNSUPPORTED:
            return ""
        raise
    # The bytes were fsynced at install; the inode now has one more name, and a crash must not leave
    # a directory entry whose inode still counts one link (a later unlink of either would free it).
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return "link"


def _copy(src: Path, tmp: Path, record: Installed) -> str:
    """Copy ``src`` to ``tmp`` (fsynced), checking that ``tmp`` holds the segment of ``record``; return
    how. Raises ReplicaError (corrupt) if the bytes are not those verified, OSError."""
    with open(src, "rb") as f, open(tmp, "w+b") as out:  # read and write: the copy is read back
        how = _clone(f.fileno(), out.fileno(), record.size)
        if how:
            # The bytes never passed through us: read the copy back (from the page cache, where the
            # kernel just put it) so that what is replayed is still what was verified.
            out.flush()
            digest, size = _hash_fd(out.fileno())
        else:
            how = "copy"
            hasher = segment_hasher()
            size = 0
            while block := f.read(READ_BLOCK):
                hasher.update(block)
                out.write(block)
                size += len(block)
            digest = hasher.digest()
            out.flush()
        os.fsync(out.fileno())
    if size != record.size or digest != record.digest:
        raise ReplicaError(f"{record.name}: changed in log/ while it was replayed", corrupt=True)
    return how


def _clone(src: int, dst: int, size: int) -> str:
    """Copy ``size`` bytes from ``src`` to ``dst`` in the kernel: a reflink, else copy_file_range.
    Return how, or "" where neither works between these files (nothing written then)."""
    try:
        fcntl.ioctl(dst, _FICLONE, src)
        return "clone"
    except OSError as e:
        if e.errno not in _UNSUPPORTED and e.errno != errno.ENOTTY:
            raise
    done = 0
    try:
        while done < size:
            n = os.copy_file_range(src, dst, size - done, done, done)
            if n == 0:
                break  # shorter than recorded: the digest check says so
            done += n
    except OSError as e:
        if done == 0 and e.errno in _UNSUPPORTED:
            return ""
        raise
    return "copy_file_range"


def _hash_fd(fd: int) -> tuple[bytes, int]:
    """Return the xxh3_128 digest and size of the file open as ``fd``, hashed through mmap (no copy)."""
    size = os.fstat(fd).st_size
    hasher = segment_hasher()
    if size:
        with mmap.mmap(fd, size, prot=mmap.PROT_READ) as m:
            hasher.update(m)
    return hasher.digest(), size


class CommandTarget:
    """Run the replay command on each segment, exactly once for a command that completes.

    Every run goes through receiver/replay_run.py: the wrapper records the exit status durably, so a
    receiver killed during a replay takes the recorded result after its restart instead of running the
    command again. Only a run that started and never recorded its end is run again, and only with the
    recover command or when the target is declared safe to re-run (``replay_rerun = "safe"``).
    """

    def __init__(self, settings: ReplaySettings, store: SegmentStore, stream: str) -> None:
        self.settings = settings
        self.store = store
        self.stream = stream

    def command_for(self, interrupted: bool) -> tuple[str, str] | None:
        """Return (kind, command template) of the next run; None when an interrupted run may not be re-run."""
        assert self.settings.command, "command mode needs a replay command"
        if not interrupted:
            return "replay", self.settings.command
        if self.settings.recover_command:
            return "recover", self.settings.recover_command
        if self.settings.rerun == "safe":
            return "replay", self.settings.command
        return None

    async def run(self, record: Installed, attempt: int, kind: str, template: str) -> Outcome:
        """Run attempt ``attempt`` of ``record``'s command (``kind``: replay or recover) under the wrapper.

        Raises ReplicaNoSpace when it failed for lack of space (replay waits for space, never Failed).
        """
        path = str(self.store.log_dir / record.name)
        env = {**segment_env(self.stream, record, path), "LOGSHIP_ATTEMPT": str(attempt), "LOGSHIP_RUN": kind}
        command = expand_command(template, path, record.name, self.stream)
        outcome = await run_wrapped(
            self.store.root, record.name, attempt, kind, command, self.settings.command_timeout, env
        )
        self.check_space(record.name, outcome)
        return outcome

    def check_space(self, segment: str, outcome: Outcome) -> None:
        """Raise ReplicaNoSpace when ``outcome`` is a run that failed for lack of space."""
        if isinstance(outcome, Finished) and outcome.rc != 0:
            # A command that failed for lack of space waits for space (as the directory backend does),
            # never counted as a failure: receiver/space.py decides.
            free = free_space((self.store.replica, self.store.root))
            why = command_lacks_space(outcome.output, free, self.settings.min_free)
            if why is not None:
                text = f"replay command failed on {segment} (exit {outcome.rc}) for lack of space: {why}"
                raise ReplicaNoSpace(text)

    async def settle(self, segment: str, attempt: int) -> Outcome:
        """Say what became of a run recorded before a restart, waiting for it while it still runs.

        Raises ReplicaError if it still runs after the command timeout.
        """
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(None, settle, self.store.root, segment, attempt)
        if isinstance(found, RunRecord):
            log.warning(
                "stream %s: the replay of %s (attempt %d, pid %s) still runs; waiting for it",
                self.stream,
                segment,
                attempt,
                found.pid,
            )
            if not await wait_run(found, self.settings.command_timeout):
                raise ReplicaError(f"the replay of {segment} by pid {found.pid} still runs")
            found = await loop.run_in_executor(None, settle, self.store.root, segment, attempt)
            if isinstance(found, RunRecord):
                raise ReplicaError(f"the replay of {segment} by pid {found.pid} still runs")
        return found

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
