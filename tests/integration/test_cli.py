"""Command-line errors: one clear line on stderr, a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.procs import Proc, receiver_proc
from tests.helpers.source import ROOT, make_secret
from tests.helpers.waiting import wait_until


def run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=30, cwd=ROOT)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0], lines[0]


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    return make_secret(tmp_path / "secret")


def test_receiver_errors(tmp_path: Path, secret: Path) -> None:
    data = str(tmp_path / "data")
    assert_one_line_error(
        run("receiver", "--listen", "127.0.0.1:0", "--data-dir", data, "--secret-file", str(tmp_path / "nope")),
        "cannot read secret file",
    )
    assert_one_line_error(
        run("receiver", "--listen", "127.0.0.1", "--data-dir", data, "--secret-file", str(secret)), "bad address"
    )
    assert_one_line_error(
        run("receiver", "--listen", "127.0.0.1:99999", "--data-dir", data, "--secret-file", str(secret)),
        "bad address",
    )
    loose = tmp_path / "loose"
    loose.write_text("x" * 40)
    loose.chmod(0o644)
    assert_one_line_error(
        run("receiver", "--listen", "127.0.0.1:0", "--data-dir", data, "--secret-file", str(loose)), "chmod 600"
    )
    unreadable = tmp_path / "dir-secret"
    unreadable.mkdir()
    assert_one_line_error(
        run("receiver", "--listen", "127.0.0.1:0", "--data-dir", data, "--secret-file", str(unreadable)),
        "secret file",
    )


def test_second_receiver_on_same_data_dir_is_refused(tmp_path: Path, secret: Path) -> None:
    first = receiver_proc(tmp_path, secret, name="data").start()
    try:
        wait_until(lambda: "listening on" in first.log_text(), 15)
        second = run(
            "receiver",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(tmp_path / "data"),
            "--secret-file",
            str(secret),
        )
        assert_one_line_error(second, "another receiver is already using")
        assert first.alive()
    finally:
        assert first.stop() == 0


def test_receiver_port_in_use(tmp_path: Path, secret: Path) -> None:
    first = receiver_proc(tmp_path, secret, name="a").start()
    try:
        wait_until(lambda: "listening on" in first.log_text(), 15)
        second = run(
            "receiver", "--listen", first.address, "--data-dir", str(tmp_path / "b"), "--secret-file", str(secret)
        )
        assert second.returncode != 0
        assert "Traceback" not in second.stderr
        assert "cannot listen" in second.stderr
    finally:
        first.stop()


def test_shipper_errors(tmp_path: Path, secret: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    base = ["--stream", "s1", "--target", "127.0.0.1:7000", "--secret-file", str(secret)]
    assert_one_line_error(run("shipper", *base, "--source", str(tmp_path / "missing")), "does not exist")
    assert_one_line_error(
        run("shipper", "--stream", "s1", "--source", str(src), "--target", "nohost", "--secret-file", str(secret)),
        "bad address",
    )
    assert_one_line_error(
        run(
            "shipper",
            "--stream",
            "../etc",
            "--source",
            str(src),
            "--target",
            "127.0.0.1:1",
            "--secret-file",
            str(secret),
        ),
        "bad stream name",
    )
    assert_one_line_error(
        run("shipper", *base[:4], "--source", str(src), "--secret-file", "/nonexistent"), "cannot read secret file"
    )
    assert_one_line_error(run("shipper", *base, "--source", str(src), "--pattern", "(["), "bad pattern")
    assert_one_line_error(run("shipper", "--source", str(src)), "missing")


def test_sigterm_stops_both_cleanly(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    from tests.helpers.procs import shipper_proc

    src = tmp_path / "src"
    src.mkdir()
    (src / "E0000000001.log").write_bytes(b"x" * 100_000)
    receiver = receiver_proc(tmp_path, secret).start()
    shipper = shipper_proc(tmp_path, "t", src, [receiver], secret).start()
    procs += [receiver, shipper]
    partial = tmp_path / "receiver" / "t" / "incoming" / "E0000000001.log.partial"
    wait_until(lambda: partial.exists() and partial.stat().st_size == 100_000, 20)
    time.sleep(0.2)
    assert shipper.stop() == 0
    assert receiver.stop() == 0
    assert "stopped" in receiver.log_text() and "Traceback" not in receiver.log_text()
    assert "Traceback" not in shipper.log_text()
