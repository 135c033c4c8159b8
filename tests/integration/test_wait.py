"""``python -m shipper wait`` and ``POST /wait`` against real receiver and shipper processes: it returns
only once the receiver's disk holds the bytes, times out with the reasons when a target is down, and
refuses what cannot mean anything with exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers.procs import Proc, ReceiverProc, receiver_proc, shipper_proc
from tests.helpers.source import ROOT, segment_name


def wait_cli(state: Path, *args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "shipper", "wait", "--state-dir", str(state), "--stream", "db", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def post_wait(port: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/wait", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def setup(tmp: Path, secret: Path, procs: list[Proc], n: int = 2) -> tuple[Path, list[ReceiverProc], Path, int]:
    source = tmp / "src"
    source.mkdir()
    receivers = [receiver_proc(tmp, secret, name=f"r{i}").start() for i in range(n)]
    procs += receivers
    shipper = shipper_proc(tmp, "db", source, receivers, secret, extra=["--admin", "127.0.0.1:0"]).start()
    procs.append(shipper)
    state = Path(shipper.args[shipper.args.index("--state-dir") + 1])
    return source, receivers, state, shipper.admin_port()


def partial_or_log(receiver_dir: Path, name: str) -> bytes:
    for path in (receiver_dir / "db" / "log" / name, receiver_dir / "db" / "incoming" / f"{name}.partial"):
        if path.exists():
            return path.read_bytes()
    return b""


def test_wait_returns_when_the_bytes_are_on_the_receivers_disk(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    source, receivers, state, admin = setup(tmp_path, secret, procs)
    seg = segment_name(1)
    data = b""
    for i in range(5):
        chunk = os.urandom(4096 + i)
        with open(source / seg, "ab") as f:
            f.write(chunk)
        data += chunk
        out = wait_cli(state, "--segment", seg, "--offset", str(len(data)), "--require", "ALL", "--json")
        assert out.returncode == 0, out.stderr + out.stdout
        reply = json.loads(out.stdout)
        assert reply["outcome"] == "satisfied" and len(reply["satisfied_by"]) == 2
        # At the moment wait returned, each receiver's disk already held every byte waited for.
        for r in receivers:
            assert partial_or_log(tmp_path / r.log_path.stem, seg)[: len(data)] == data

    # A new segment renamed in: looked for, then waited for sealed (the next segment seals the first).
    seg2 = segment_name(2)
    tmp = source / ".new.tmp"
    tmp.write_bytes(os.urandom(10000))
    tmp.rename(source / seg2)
    out = wait_cli(state, "--segment", seg, "--sealed", "--require", "ANY 2")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "durable at" in out.stdout
    for r in receivers:
        assert (tmp_path / r.log_path.stem / "db" / "log" / seg).read_bytes() == data

    # POST /wait: the same request over HTTP.
    code, body = post_wait(admin, {"stream": "db", "segment": seg2, "offset": 10000, "timeout": 30})
    assert code == 200 and body["outcome"] == "satisfied", body
    code, body = post_wait(admin, {"stream": "db", "segment": seg2})
    assert code == 400 and "exactly one" in body["error"]


def test_wait_times_out_naming_the_missing_target(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    source, receivers, state, admin = setup(tmp_path, secret, procs)
    seg = segment_name(1)
    (source / seg).write_bytes(os.urandom(5000))
    assert wait_cli(state, "--segment", seg, "--offset", "5000", "--require", "ALL").returncode == 0
    receivers[1].stop()  # SIGTERM by pid, waited for
    with open(source / seg, "ab") as f:
        f.write(os.urandom(3000))
    # ANY 1 is met by the receiver still up; ALL is not, and says who is missing and by how much.
    assert wait_cli(state, "--segment", seg, "--offset", "8000", "--timeout", "30").returncode == 0
    out = wait_cli(state, "--segment", seg, "--offset", "8000", "--require", "ALL", "--timeout", "1")
    assert out.returncode == 1, out.stderr + out.stdout
    assert receivers[1].address in out.stdout
    assert "Disconnected" in out.stdout and "behind by 1 segment(s), 3000 byte(s)" in out.stdout
    code, body = post_wait(admin, {"stream": "db", "segment": seg, "offset": 8000, "require": "ALL", "timeout": 0.5})
    assert code == 408 and body["missing"][0]["target"] == receivers[1].address
    # FIRST 1 with the stopped target first: it is down, so the next one listed serves.
    policy = f"FIRST 1 ({receivers[1].address}, {receivers[0].address})"
    out = wait_cli(state, "--segment", seg, "--offset", "8000", "--require", policy, "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["satisfied_by"][0]["target"] == receivers[0].address
    # Back up: ALL is met again, by itself.
    receivers[1].start()
    out = wait_cli(state, "--segment", seg, "--offset", "8000", "--require", "ALL", "--timeout", "60")
    assert out.returncode == 0, out.stderr + out.stdout


def test_wait_usage_errors_exit_2(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    source, _, state, _ = setup(tmp_path, secret, procs, n=1)
    seg = segment_name(1)
    (source / seg).write_bytes(b"x" * 100)
    cases = [
        (["--segment", seg, "--offset", "10", "--require", "ANY 1 (127.0.0.1:1)"], "does not have"),
        (["--segment", seg, "--offset", "10", "--require", "SOME 1"], "bad sync policy"),
        (["--segment", segment_name(9), "--sealed", "--timeout", "1"], "no segment"),
        (["--segment", "../x", "--sealed"], "bad segment name"),
        (["--segment", seg], "one of the arguments --offset --sealed is required"),
    ]
    for args, text in cases:
        out = wait_cli(state, *args)
        assert out.returncode == 2 and text in out.stderr, (args, out.stderr)
    argv = [sys.executable, "-m", "shipper", "wait", "--state-dir", str(state), "--stream", "nope"]
    out = subprocess.run([*argv, "--segment", seg, "--sealed"], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert out.returncode == 2 and "no stream 'nope'" in out.stderr
    out = wait_cli(tmp_path / "no-such-state", "--segment", seg, "--sealed")
    assert out.returncode == 2 and "no shipper answers" in out.stderr
    # `logship wait` is the same command.
    argv = [sys.executable, "-m", "logship.command", "wait", "--state-dir", str(state), "--stream", "db"]
    out = subprocess.run(
        [*argv, "--segment", seg, "--offset", "100"], capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    # A segment sealed at 100 bytes never gets byte 200.
    (source / segment_name(2)).write_bytes(b"y")
    assert wait_cli(state, "--segment", seg, "--sealed").returncode == 0
    out = wait_cli(state, "--segment", seg, "--offset", "200")
    assert out.returncode == 2 and "never comes" in out.stderr
