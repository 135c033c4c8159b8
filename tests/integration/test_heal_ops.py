"""An operator clears what the service cannot heal by itself (issue 13), with real processes: ``resume``
clears a copy-level Failed, so the next shipper connection is accepted and the copy converges."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers.cli import receiver_cli, status
from tests.helpers.copies import assert_copy_converged, log_names, remove_under_a_writer
from tests.helpers.procs import Proc, receiver_proc, shipper_proc
from tests.helpers.source import ROOT, sealed_in_source, write_segments
from tests.helpers.waiting import wait_until


def test_resume_clears_a_failed_copy_and_the_shipper_gets_in(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    source = tmp_path / "src"
    source.mkdir()
    first = write_segments(source, 1, 3)
    receiver = receiver_proc(tmp_path, secret)
    procs.append(receiver.start())
    shipper = shipper_proc(tmp_path, "db1", source, [receiver], secret)
    procs.append(shipper.start())
    copy = tmp_path / "receiver" / "db1"
    wait_until(lambda: log_names(copy) == first[:-1], 30, what="the first sealed segments copied")
    # state.json is first written when a replay batch ends, which may come after the installs.
    state_path = copy / "state.json"
    wait_until(state_path.exists, 30, what="the copy's state.json")

    # The copy as a receiver leaves it after repeated SEAL digest failures: Failed, persisted. (Damage on
    # the wire cannot produce one any more: the frame tags refuse a flipped SEAL first.)
    receiver.stop()
    doc = json.loads(state_path.read_text())
    reason = f"{first[1]}: segment digest mismatch (3 times)"
    state_path.write_text(json.dumps({**doc, "failed": reason}))
    receiver.start()
    wait_until(lambda: receiver.count("is Failed") >= 2, 60, what="two refused connections")
    more = write_segments(source, 4, 2)
    assert log_names(copy) == first[:-1]
    out = receiver_cli("status", "--data-dir", str(tmp_path / "receiver"), "--json")
    assert out.returncode == 1, out.stdout + out.stderr
    assert json.loads(out.stdout)["copies"][0]["state"] == "Failed"

    resumed_at = time.monotonic()
    out = receiver_cli("resume", "--stream", "db1", "--data-dir", str(tmp_path / "receiver"))
    assert out.returncode == 0, out.stderr
    assert f"copy failure cleared ({reason})" in out.stdout
    assert "by the running receiver" in out.stdout
    expect = sealed_in_source(source)
    assert expect == [*first, *more[:-1]]
    wait_until(lambda: log_names(copy) == expect, 60, what="the copy converged after resume", interval=0.05)
    print(f"\nfigures: converged {time.monotonic() - resumed_at:.1f}s after resume")
    assert_copy_converged(source, copy, expect)
    assert json.loads(state_path.read_text())["failed"] is None
    assert receiver.count("copy failure cleared") == 1


def test_resume_with_no_receiver_running_clears_the_failure_on_disk(tmp_path: Path) -> None:
    copy = tmp_path / "data" / "db1"
    (copy / "log").mkdir(parents=True)
    (copy / "state.json").write_text(json.dumps({"epoch": 1, "failed": "E1: segment digest mismatch (3 times)"}))
    out = receiver_cli("resume", "--stream", "db1", "--data-dir", str(tmp_path / "data"))
    assert out.returncode == 0, out.stderr
    assert "copy failure cleared" in out.stdout and "no receiver running" in out.stdout
    state = json.loads((copy / "state.json").read_text())
    assert (state["failed"], state["epoch"]) == (None, 1)


def test_a_receiver_whose_data_dir_vanished_exits_and_rebuilds_when_restarted(
    tmp_path: Path, secret: Path, procs: list[Proc]
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    first = write_segments(source, 1, 3)
    receiver = receiver_proc(tmp_path, secret)
    procs.append(receiver.start())
    procs.append(shipper_proc(tmp_path, "db1", source, [receiver], secret).start())
    data = tmp_path / "receiver"
    copy = data / "db1"
    wait_until(lambda: log_names(copy) == first[:-1], 30, what="the first sealed segments copied")

    remove_under_a_writer(data)
    gone_at = time.monotonic()
    assert receiver.popen is not None
    code = receiver.popen.wait(20)
    print(f"\nfigures: exited {time.monotonic() - gone_at:.1f}s after the data dir was removed")
    assert code == 1
    text = receiver.log_text()
    errors = [line for line in text.splitlines() if " ERROR " in line]
    assert errors == [errors[0]] and f"data dir {data} was deleted: exiting" in errors[0], errors
    assert "Traceback" not in text

    # Restarted by the service manager: it makes a fresh data dir and the shipper fills it again.
    more = write_segments(source, 4, 2)
    restarted_at = time.monotonic()
    receiver.start()
    expect = sealed_in_source(source)
    assert expect == [*first, *more[:-1]]
    wait_until(lambda: log_names(copy) == expect, 60, what="the copy rebuilt after the restart", interval=0.05)
    print(f"figures: rebuilt {time.monotonic() - restarted_at:.1f}s after the restart")
    assert_copy_converged(source, copy, expect)
    assert "Traceback" not in receiver.log_text()


def metric_lines(port: int, prefix: str) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return [line for line in resp.read().decode().splitlines() if line.startswith(prefix)]


def test_a_vanished_source_dir_shows_failed_everywhere_and_recovers(
    tmp_path: Path, secret: Path, procs: list[Proc]
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    first = write_segments(source, 1, 3)
    receiver = receiver_proc(tmp_path, secret)
    procs.append(receiver.start())
    shipper = shipper_proc(tmp_path, "db1", source, [receiver], secret, ["--admin", "127.0.0.1:0"])
    procs.append(shipper.start())
    admin = shipper.admin_port()
    state_dir = Path(shipper.args[shipper.args.index("--state-dir") + 1])
    copy = tmp_path / "receiver" / "db1"
    wait_until(lambda: log_names(copy) == first[:-1], 30, what="the first sealed segments copied")
    wait_until(lambda: status(state_dir)["copies"][0]["state"] == "Healthy", 30, what="Healthy")

    away = tmp_path / "src.away"
    source.rename(away)
    gone_at = time.monotonic()
    reason = f"cannot read source directory {source}: No such file or directory"

    def failed_row() -> dict[str, Any] | None:
        row = status(state_dir)["copies"][0]
        return row if row["state"] == "Failed" else None

    row = wait_until(failed_row, 30, what="the shipper's status Failed", interval=0.05)
    print(f"\nfigures: status Failed {time.monotonic() - gone_at:.1f}s after the source dir went")
    assert row["failure"] == reason
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=10) as resp:
        page = json.loads(resp.read())
    assert (page["copies"][0]["state"], page["copies"][0]["failure"]) == ("Failed", reason)
    assert any(
        'state="Failed"' in line and line.endswith(" 1.0") for line in metric_lines(admin, "logship_shipper_state")
    )
    out = subprocess.run(
        [sys.executable, "-m", "shipper", "status", "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert out.returncode == 1 and "cannot read source directory" in out.stdout, out.stdout + out.stderr
    # A wait for bytes that cannot come while the source is gone says so at once, not at its timeout.
    asked_at = time.monotonic()
    wait = ["wait", "--state-dir", str(state_dir), "--stream", "db1", "--segment", first[-1], "--sealed"]
    out = subprocess.run(
        [sys.executable, "-m", "shipper", *wait, "--timeout", "60s"],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
    )
    answered = time.monotonic() - asked_at
    print(f"figures: shipper wait answered {answered:.1f}s after it was asked (timeout 60s)")
    assert out.returncode == 1 and answered < 20, (answered, out.stdout, out.stderr)
    assert f"source: {reason}" in out.stdout and f"Failed: {reason}" in out.stdout, out.stdout

    # Back (a remount, an rsync finished): status is Healthy again and new segments flow.
    away.rename(source)
    back_at = time.monotonic()
    more = write_segments(source, 4, 2)
    wait_until(lambda: status(state_dir)["copies"][0]["state"] == "Healthy", 30, what="Healthy again", interval=0.05)
    print(f"figures: Healthy {time.monotonic() - back_at:.1f}s after it came back")
    expect = sealed_in_source(source)
    assert expect == [*first, *more[:-1]]
    wait_until(lambda: log_names(copy) == expect, 60, what="the copy caught up after the source came back")
    assert_copy_converged(source, copy, expect)
    text = shipper.log_text()
    assert text.count("cannot read source directory") == 1, text
    assert text.count(f"source directory {source} can be read again") == 1
    assert "Traceback" not in text
