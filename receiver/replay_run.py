"""One command replay run that outlives the receiver: its run record, the wrapper's launch, and the wait.

The receiver records "replaying X, attempt N" in state.json (receiver/state.py) and then starts
``python -m receiver.replay_wrapper`` in a session (process group) of its own. The wrapper writes the
run record (``replay-run.json`` beside state.json) before it starts the command: segment, attempt, its
pid, the pid's start time and the boot id; when the command ends it writes the exit status. Both writes
are temp + fsync + rename. A kill -9 of the receiver therefore leaves either a run that never started
the command, a wrapper still running (identified by pid + start time, or its process group), or the
recorded result: ``settle()`` tells which, and only a run that started and never recorded its end is
``Interrupted``.

The record is claimed under an flock (``replay-run.lock``): a restarted receiver that finds no record
for its attempt writes one saying "abandoned" under the lock, and a wrapper that starts late sees it and
runs nothing, so the command of one attempt runs at most once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from logship.files import write_atomic

RUN_FILE = "replay-run.json"
LOCK_FILE = "replay-run.lock"
WRAPPER_LOG = "replay-run.log"
REFUSED = 75
"""The wrapper's exit status when its attempt was already settled by a restarted receiver (EX_TEMPFAIL)."""


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What the wrapper wrote about one run; ``state`` is running, done, killed or abandoned."""

    segment: str
    attempt: int
    state: str
    kind: str = "replay"
    pid: int | None = None
    start: int | None = None
    """The pid's start time in clock ticks after boot (/proc/PID/stat field 22): a reused pid differs."""
    boot: str | None = None
    rc: int | None = None
    output: str = ""
    reason: str = ""
    started_at: float | None = None
    ended_at: float | None = None

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> RunRecord | None:
        try:
            doc: Any = json.loads(data)
            return cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})
        except (ValueError, TypeError, KeyError):
            return None


@dataclass(frozen=True, slots=True)
class Finished:
    """The command ran to its end with exit status ``rc``."""

    rc: int
    output: str


@dataclass(frozen=True, slots=True)
class Interrupted:
    """The command started and no exit status was recorded: the target may hold part of the segment."""

    reason: str


@dataclass(frozen=True, slots=True)
class NeverStarted:
    """The command of this attempt never started (and now never will)."""

    reason: str


Outcome = Finished | Interrupted | NeverStarted


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> int | None:
    """Return the start time of process ``pid`` (clock ticks after boot), or None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields after the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def group_alive(pgid: int) -> bool:
    """Return whether process group ``pgid`` has a member left (a zombie leader that is our child is reaped)."""
    with contextlib.suppress(ChildProcessError):
        # A wrapper we started and stopped waiting for (our task was cancelled) stays a zombie, and a
        # zombie still counts as a member of its group.
        os.waitpid(pgid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_running(rec: RunRecord) -> bool:
    """Return whether the wrapper of ``rec``, or anything left of its process group, still runs."""
    if rec.pid is None or rec.boot != boot_id():
        return False
    if process_start(rec.pid) == rec.start:
        return True
    # The wrapper is gone, but the command it started may not be (the wrapper alone was killed).
    return group_alive(rec.pid)


def read_run(path: Path) -> RunRecord | None:
    try:
        return RunRecord.from_bytes(path.read_bytes())
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def outcome_of(rec: RunRecord | None, segment: str, attempt: int) -> Outcome | None:
    """Return what the run record says of (segment, attempt); None while it may still be running."""
    if rec is None or (rec.segment, rec.attempt) != (segment, attempt):
        return NeverStarted("no run record")
    if rec.state == "done" and rec.rc is not None:
        return Finished(rec.rc, rec.output)
    if rec.state == "abandoned":
        return NeverStarted("abandoned by a restarted receiver")
    if rec.state == "killed":
        return Interrupted(rec.reason or "killed")
    if is_running(rec):
        return None
    return Interrupted(f"its wrapper (pid {rec.pid}) ended without recording an exit status")


def settle(run_dir: Path, segment: str, attempt: int) -> Outcome | RunRecord:
    """Say what became of (segment, attempt), claiming it as abandoned if it never started.

    Returns the run record instead while its process still runs (wait for it, then ask again).
    """
    with locked(run_dir / LOCK_FILE):
        rec = read_run(run_dir / RUN_FILE)
        outcome = outcome_of(rec, segment, attempt)
        if outcome is None:
            assert rec is not None
            return rec
        if isinstance(outcome, NeverStarted) and (rec is None or (rec.segment, rec.attempt) != (segment, attempt)):
            write_atomic(run_dir / RUN_FILE, RunRecord(segment, attempt, "abandoned", ended_at=time.time()).to_bytes())
        return outcome


async def wait_exit(pid: int, alive: Callable[[], bool], timeout: float) -> bool:
    """Wait until process ``pid`` ends (``alive()`` says whether it still runs); False on timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (OSError, AttributeError):
        fd = -1
    try:
        if fd >= 0 and alive():
            # A pidfd turns readable when the process ends: a wake-up, not polling, even for a process
            # that is not our child (a previous receiver's wrapper).
            ended = loop.create_future()
            loop.add_reader(fd, lambda: ended.done() or ended.set_result(None))
            try:
                async with asyncio.timeout(timeout):
                    await ended
            except TimeoutError:
                return False
            finally:
                loop.remove_reader(fd)
        while alive():
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True
    finally:
        if fd >= 0:
            os.close(fd)


async def wait_run(rec: RunRecord, timeout: float) -> bool:
    """Wait for a previous receiver's run to end; False if it still runs after ``timeout`` seconds."""
    assert rec.pid is not None
    pid = rec.pid
    if not await wait_exit(pid, lambda: process_start(pid) == rec.start, timeout):
        return False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    # The rest of its process group (a command whose wrapper alone was killed): no pidfd for a group.
    while group_alive(pid):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.1)
    return True


def spawn_wrapper(run_dir: Path, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start the wrapper in a session of its own (a kill of the receiver's group does not reach it)."""
    with open(run_dir / WRAPPER_LOG, "ab") as errors:
        return subprocess.Popen(
            [sys.executable, "-m", "receiver.replay_wrapper", str(run_dir), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env={**os.environ, **env},
            start_new_session=True,
            cwd=run_dir,
        )


async def run_wrapped(
    run_dir: Path, segment: str, attempt: int, kind: str, command: str, timeout: float, env: dict[str, str]
) -> Outcome:
    """Run ``command`` for (segment, attempt) under the wrapper, in a session of its own; return its outcome.

    The wrapper goes on if we are cancelled or killed; a later ``settle()`` finds its result.
    """
    proc = spawn_wrapper(run_dir, [segment, str(attempt), kind, str(timeout), command], env)
    # The wrapper enforces the command's timeout itself; this bound only guards against a stuck wrapper.
    if not await wait_exit(proc.pid, lambda: proc.poll() is None, timeout + 30):
        return Interrupted(f"its wrapper (pid {proc.pid}) still runs {timeout + 30:g}s later")
    rc = proc.wait()
    rec = read_run(run_dir / RUN_FILE)
    outcome = outcome_of(rec, segment, attempt)
    if outcome is None:
        # The wrapper is gone but its process group lives on: wait for what is left of it.
        assert rec is not None
        await wait_run(rec, timeout)
        outcome = outcome_of(read_run(run_dir / RUN_FILE), segment, attempt) or Interrupted("still running")
    if isinstance(outcome, NeverStarted):
        return NeverStarted(f"the wrapper exited {rc} before it started the command (see {WRAPPER_LOG})")
    return outcome
