"""A long catch-up shows progress: ``status --watch`` draws a live bar on a terminal (a real pty, redrawn
in place) and prints one parseable ``key=value`` line per target otherwise, with the rate and ETA the
rate limit implies; the shipper logs a progress line every few seconds and one when caught up."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shlex
import struct
import sys
import termios
import time
from pathlib import Path

from tests.helpers.cli import logship
from tests.helpers.procs import ROOT, Proc, receiver_proc, shipper_proc
from tests.helpers.source import segment_name
from tests.helpers.waiting import wait_until

SEGMENTS, SIZE = 6, 200_000
RATE = 125_000  # 1mbit in bytes per second: the catch-up takes about 10 s


def on_pty(args: list[str], timeout: float = 30) -> tuple[int, str]:
    """Run ``logship ARGS`` on a 160-column pseudo-terminal; return its exit code and output."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: become the command
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "logship.command", *args])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    out, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def parse(text: str) -> list[dict[str, str]]:
    return [dict(word.split("=", 1) for word in shlex.split(line)) for line in text.splitlines() if line]


def test_watch_and_progress_lines_during_a_catch_up(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for i in range(1, SEGMENTS + 1):
        (source / segment_name(i)).write_bytes(os.urandom(SIZE))  # random: nothing compresses
    receiver = receiver_proc(tmp_path, secret).start()
    # --ack-timeout 3s: a heartbeat every second, so the receiver follows the copy queue closely.
    extra = ["--rate-limit", "1mbit", "--seal-idle", "1", "--ack-timeout", "3s"]
    shipper = shipper_proc(tmp_path, "db1", source, [receiver], secret, extra)
    procs += [receiver, shipper.start()]
    state_dir = shipper.args[shipper.args.index("--state-dir") + 1]
    wait_until(lambda: "connected" in shipper.log_text(), 20, what="the shipper connected")

    # Not a terminal: one line per target and look, every field a key=value word.
    plain = logship("status", "--state-dir", state_dir, "--watch", "0.7", "--count", "4")
    looks = parse(plain.stdout)
    assert len(looks) == 4 and all(look["stream"] == "db1" for look in looks), plain.stdout
    assert all(look["target"] == receiver.address and look["state"] == "Healthy" for look in looks), plain.stdout
    queues = [int(look["copy_queue_bytes"]) for look in looks]
    assert queues == sorted(queues, reverse=True) and queues[0] > queues[-1] > 0, plain.stdout
    last = looks[-1]
    assert int(last["copied_bytes"]) + int(last["copy_queue_bytes"]) == int(last["of_bytes"]), last
    rate = float(last["rate_bytes_per_second"])
    assert 0.5 * RATE < rate < 1.6 * RATE, last  # what the rate limit allows, not the window's burst estimate
    assert abs(float(last["eta_seconds"]) - int(last["copy_queue_bytes"]) / rate) < 1.0, last

    # A terminal: rich draws the table and bar, and redraws it in place (cursor up, erase line).
    code, drawn = on_pty(["status", "--state-dir", state_dir, "--watch", "0.5", "--count", "3"])
    assert code == 0, drawn
    assert "CATCH-UP" in drawn and "━" in drawn and "% of " in drawn and "ETA" in drawn, drawn
    assert drawn.count("\x1b[1A") >= 2 and "Traceback" not in drawn, drawn
    # The receiver's side reads alike (its copy queue from the shipper's heartbeats).
    recv = parse(logship("status", "--data-dir", str(tmp_path / "receiver"), "--watch", "0.2", "--count", "2").stdout)
    assert [look["stream"] for look in recv] == ["db1", "db1"], recv

    # The shipper's journal: a progress line every 5 s while behind, then one when caught up.
    wait_until(lambda: "caught up:" in shipper.log_text(), 40, what="the caught-up line")
    lines = [line for line in shipper.log_text().splitlines() if "catching up: copied" in line]
    assert lines and all(" of " in line and "seg left" in line for line in lines), shipper.log_text()
    assert any("KiB/s, ETA" in line for line in lines), lines
    # The receiver's journal too (it knows the queue from the shipper's heartbeats, about once a second).
    assert "stream db1: catching up: copied" in receiver.log_text(), receiver.log_text()
    copied = tmp_path / "receiver" / "db1" / "log"
    for i in range(1, SEGMENTS + 1):
        assert (copied / segment_name(i)).read_bytes() == (source / segment_name(i)).read_bytes()
