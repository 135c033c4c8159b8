"""Real ``python -m receiver|shipper`` processes with their output in a log file.

Servers bind port 0 and the test reads the bound port back from the line the daemon logs on startup
(``listening on HOST:PORT``, ``admin endpoint on http://HOST:PORT/status``): no port is picked first
and bound later, so no other process can take it in between.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from tests.helpers.source import ROOT

LISTENING = re.compile(r"listening on (\S+):(\d+)")
ADMIN = re.compile(r"admin endpoint on http://(\S+):(\d+)/status")


class Listener(Protocol):
    """Anything a shipper can be pointed at: a receiver process, a proxy; ``port`` is 0 until it listens."""

    @property
    def port(self) -> int: ...


def stop_popen(popen: subprocess.Popen[bytes], timeout: float = 10) -> int:
    """SIGTERM, wait ``timeout``; SIGKILL if it does not stop. Returns the exit code."""
    if popen.poll() is None:
        popen.terminate()
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(5)
    return popen.returncode


class Proc:
    """A real ``python -m receiver|shipper`` process with its stdout and stderr in a log file."""

    def __init__(self, module: str, args: list[str], log_path: Path) -> None:
        self.module = module
        self.args = args
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log_start = 0
        """Where the latest start's output begins in the log (the log is appended across restarts)."""

    def argv(self) -> list[str]:
        """The arguments after ``python -m MODULE`` (subclasses add what is only known at start)."""
        return self.args

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, *self.argv()]

    def start(self) -> Proc:
        assert self.popen is None or self.popen.poll() is not None
        with open(self.log_path, "ab") as log:
            self._log_start = log.tell()
            self.popen = subprocess.Popen(self.command(), stdout=log, stderr=log, cwd=ROOT)
        self.starts += 1
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill9(self) -> None:
        assert self.popen is not None
        os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM, wait; SIGKILL if it does not stop. Returns the exit code."""
        return None if self.popen is None else stop_popen(self.popen, timeout)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def count(self, needle: str) -> int:
        return self.log_text().count(needle)

    def unexpected_errors(self) -> list[str]:
        """Return the log lines that show a traceback or an unretrieved task exception."""
        needles = ("Traceback (most recent call last)", "Task exception was never retrieved")
        return [line for line in self.log_text().splitlines() if any(n in line for n in needles)]

    def wait_for_line(self, pattern: re.Pattern[str], what: str, timeout: float = 30) -> re.Match[str]:
        """Wait until the latest start logs a line matching ``pattern``; return the match.

        Raises AssertionError, with the end of the log, if the process exits first or ``timeout`` passes.
        """
        deadline = time.monotonic() + timeout
        while True:
            # Whether it was alive before the log was read: a process may log the line and then exit.
            alive = self.alive()
            with open(self.log_path, "rb") as f:
                f.seek(self._log_start)
                text = f.read().decode(errors="replace")
            m = pattern.search(text)
            if m:
                return m
            tail = "\n".join(text.splitlines()[-20:])
            if not alive:
                code = self.popen.returncode if self.popen is not None else None
                raise AssertionError(f"{self.module} exited ({code}) before it logged {what}; its log:\n{tail}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"{self.module} did not log {what} within {timeout:g}s; its log:\n{tail}")
            time.sleep(0.02)

    def listen_port(self, timeout: float = 30) -> int:
        """The port the latest start listens on (a receiver's ``listening on`` line)."""
        return int(self.wait_for_line(LISTENING, "its listening port", timeout).group(2))

    def admin_port(self, timeout: float = 30) -> int:
        """The port of the latest start's admin endpoint (``--admin HOST:0`` picks one)."""
        return int(self.wait_for_line(ADMIN, "its admin endpoint", timeout).group(2))


class ReceiverProc(Proc):
    """A receiver on 127.0.0.1. The first start binds port 0 and waits for the port it reports.

    A restart listens on that same port again, so that shippers pointed at it find it: a tiny race
    remains (another process may take the port while the receiver is down; it would then exit with
    "cannot listen"). A restart does not wait for the line either, so a kill may land during startup,
    as it could before. A receiver that must start after its shipper sits behind a Relay
    (tests.helpers.proxies), which looks its port up at each connection.
    """

    def __init__(self, args: list[str], log_path: Path) -> None:
        super().__init__("receiver", args, log_path)
        self.port = 0
        """0 until the first start has read the bound port back from the log."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return ["--listen", self.address, *self.args]

    def start(self) -> ReceiverProc:
        first = self.port == 0
        super().start()
        if first:
            self.port = self.listen_port()
        return self


def unexpected_log_lines(procs: Sequence[Proc]) -> list[str]:
    """Every traceback or unretrieved-task line the processes logged, each named by its log file."""
    return [f"{p.log_path.name}: {line}" for p in procs for line in p.unexpected_errors()]


def receiver_proc(tmp: Path, secret: Path, name: str = "receiver", extra: list[str] | None = None) -> ReceiverProc:
    """A receiver with its data in ``tmp/name`` and its log in ``tmp/name.log``; ``.port`` once started."""
    args = ["--data-dir", str(tmp / name), "--secret-file", str(secret)]
    return ReceiverProc(args + (extra or []), tmp / f"{name}.log")


class ShipperProc(Proc):
    """A shipper whose targets' ports are looked up when it starts (a receiver's port is known only then)."""

    def __init__(
        self, args: list[str], targets: Sequence[int | Listener], log_path: Path, extra: list[str] | None = None
    ) -> None:
        super().__init__("shipper", args, log_path)
        self.targets = list(targets)
        self.extra = extra or []

    def argv(self) -> list[str]:
        args = list(self.args)
        for t in self.targets:
            port = t if isinstance(t, int) else t.port
            assert port, f"target {t!r} has no port yet: start it before the shipper"
            args += ["--target", f"127.0.0.1:{port}"]
        return args + self.extra


_STATE_DIRS = itertools.count(1)


def shipper_proc(
    tmp: Path,
    stream: str,
    source: Path,
    targets: Sequence[int | Listener],
    secret: Path,
    extra: list[str] | None = None,
) -> ShipperProc:
    """A shipper of ``stream`` from ``source`` to 127.0.0.1 ``targets`` (ports, receivers or proxies)."""
    args = ["--stream", stream, "--source", str(source), "--secret-file", str(secret)]
    # Each shipper its own state dir: a test may run two shippers of one stream at once.
    args += ["--state-dir", str(tmp / f"st-{stream}-{next(_STATE_DIRS)}")]
    return ShipperProc(args, targets, tmp / f"shipper-{stream}.log", extra)
