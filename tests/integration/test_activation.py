"""Activation with real processes: through a running receiver and offline after a kill -9; the old
shipper is fenced and none of its later bytes reach the activated replica; the replica then feeds a
shipper in the reverse direction at the new epoch."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.cli import activate, receiver_cli
from tests.helpers.copies import digest_file
from tests.helpers.procs import Proc, receiver_proc, shipper_proc
from tests.helpers.source import ROOT, segment_name, write_segment
from tests.helpers.waiting import wait_until


def snapshot(directory: Path) -> dict[str, str]:
    """Name -> digest of every file under ``directory`` (recursively)."""
    return {str(p.relative_to(directory)): digest_file(p) for p in sorted(directory.rglob("*")) if p.is_file()}


def shipper_row(shipper: Proc) -> dict:
    """The one status row of a one-target shipper, from `python -m shipper status`."""
    state_dir = shipper.args[shipper.args.index("--state-dir") + 1]
    done = subprocess.run(
        [sys.executable, "-m", "shipper", "status", "--state-dir", state_dir, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    # 0 Healthy, 1 not (Fenced, Disconnected): status's exit code is for scripts (issue 18).
    assert done.returncode in (0, 1), done.stderr
    (row,) = json.loads(done.stdout)["copies"]
    return row


def test_activate_running_receiver_fences_old_shipper_then_reverse(
    tmp_path: Path, secret: Path, procs: list[Proc]
) -> None:
    rnd = random.Random(11)
    source = tmp_path / "primary"
    source.mkdir()
    # A delayed standby: nothing is replayed before the activation, which must ignore the lag.
    receiver = receiver_proc(tmp_path, secret, name="standby", extra=["--replay-lag", "1h"])
    procs.append(receiver.start())
    shipper = shipper_proc(tmp_path, "db1", source, [receiver], secret)
    procs.append(shipper.start())
    for i in range(1, 6):
        write_segment(source / segment_name(i), rnd.randbytes(rnd.randint(10_000, 400_000)))
    active = source / segment_name(6)
    with open(active, "wb") as f:
        f.write(rnd.randbytes(123_457))
    data = tmp_path / "standby"
    copy = data / "db1"
    partial = copy / "incoming" / f"{active.name}.partial"
    wait_until(lambda: len(os.listdir(copy / "log")) == 5 if (copy / "log").exists() else False, 30)
    wait_until(lambda: partial.exists() and partial.stat().st_size == active.stat().st_size, 30, what="tail")
    assert not (copy / "replica").exists() or not os.listdir(copy / "replica")
    # The shipper learns the replay position from the ACKs: its replay queue for this target is 5.
    wait_until(lambda: shipper_row(shipper)["replay_queue_segments"] == 5, 20, what="replay queue at the shipper")

    hook_out = tmp_path / "hook.out"
    t0 = time.monotonic()
    rc, report = activate(data, "db1", "--on-activate", f"echo $LOGSHIP_EPOCH {{stream}} $LOGSHIP_TAIL > {hook_out}")
    took = time.monotonic() - t0
    assert rc == 0, report
    assert report["epoch"] == 1 and report["missing_acknowledged"] == []
    assert report["last_replayed"] == segment_name(5) and report["replay_result"] == "complete"
    assert report["unsealed_tail_bytes"] == 123_457
    assert report["hook_exit"] == 0
    tail = copy / "replica" / f"{active.name}.partial"
    assert hook_out.read_text().split() == ["1", "db1", str(tail)]
    for i in range(1, 6):
        assert digest_file(copy / "replica" / segment_name(i)) == digest_file(source / segment_name(i))
    assert tail.read_bytes() == active.read_bytes()
    assert json.loads((copy / "state.json").read_text())["epoch"] == 1
    rows = {
        r["stream"]: r for r in json.loads(receiver_cli("status", "--data-dir", str(data), "--json").stdout)["copies"]
    }
    assert rows["db1"]["state"] == "Activated" and rows["db1"]["replay_queue_segments"] == 0

    # The old primary goes on writing; its shipper is fenced at its next handshake and stops.
    before = snapshot(copy)
    with open(active, "ab") as f:
        f.write(b"written by the old primary after the activation" * 100)
    write_segment(source / segment_name(7), rnd.randbytes(50_000))
    write_segment(source / segment_name(8), rnd.randbytes(50_000))
    wait_until(lambda: shipper.count("fenced") >= 1, 20, what="the shipper's fenced error")
    time.sleep(3)  # time for retries, if the shipper wrongly kept trying
    fenced_lines = [line for line in shipper.log_text().splitlines() if "this shipper is fenced" in line]
    assert len(fenced_lines) == 1 and "ERROR" in fenced_lines[0], fenced_lines
    assert receiver.count("refused stream db1: activated") == 1
    assert shipper_row(shipper)["state"] == "Fenced"
    assert snapshot(copy) == before, "bytes of the fenced primary reached the activated copy"
    # A restarted old shipper (the old primary coming back) is fenced at once, too.
    shipper.stop()
    procs.append(shipper.start())
    wait_until(lambda: receiver.count("refused stream db1: activated") == 2, 20, what="second fencing")
    assert snapshot(copy) == before

    # Reverse: the activated replica is the source of a new shipper at the new epoch, to a receiver on
    # the old primary's side. The new primary's own writes (a different segment 6) go that way.
    replica = copy / "replica"
    write_segment(replica / segment_name(6), rnd.randbytes(70_000))
    write_segment(replica / segment_name(7), rnd.randbytes(20_000))
    back = receiver_proc(tmp_path, secret, name="back")
    procs.append(back.start())
    reverse = Proc(
        "shipper",
        [
            *("--stream", "db1", "--source", str(replica), "--secret-file", str(secret)),
            *("--target", back.address, "--epoch", str(report["epoch"])),
        ],
        tmp_path / "reverse.log",
    )
    procs.append(reverse.start())
    back_copy = tmp_path / "back" / "db1"
    expect = [segment_name(i) for i in range(1, 7)]
    wait_until(
        lambda: (back_copy / "replica").exists() and sorted(os.listdir(back_copy / "replica")) == expect,
        30,
        what="reverse copy replayed",
    )
    for name in expect:
        assert digest_file(back_copy / "replica" / name) == digest_file(replica / name), name
    assert json.loads((back_copy / "state.json").read_text())["epoch"] == 1
    assert not any(n.endswith(".partial") for n in os.listdir(back_copy / "log"))
    # A shipper of the old epoch pointed at the old primary's side is fenced there too.
    stale = Proc(
        "shipper",
        [
            *("--stream", "db1", "--source", str(source), "--secret-file", str(secret)),
            *("--target", back.address),
        ],
        tmp_path / "stale.log",
    )
    procs.append(stale.start())
    wait_until(lambda: stale.count("fenced") >= 1, 20, what="stale shipper fenced at the reverse target")
    print(f"\nfigures: activate (running receiver, 5 segments + 123457-byte tail, 1h lag ignored) took {took:.2f}s")


def test_activate_offline_after_kill9(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    rnd = random.Random(12)
    source = tmp_path / "primary"
    source.mkdir()
    receiver = receiver_proc(tmp_path, secret, name="standby")
    procs.append(receiver.start())
    # After the kill -9 below the receiver comes back on the port its first start reported.
    shipper = shipper_proc(tmp_path, "db2", source, [receiver], secret)
    procs.append(shipper.start())
    for i in range(1, 4):
        write_segment(source / segment_name(i), rnd.randbytes(200_000))
    active = source / segment_name(4)
    active.write_bytes(rnd.randbytes(77_777))
    data = tmp_path / "standby"
    copy = data / "db2"
    partial = copy / "incoming" / f"{active.name}.partial"
    wait_until(lambda: partial.exists() and partial.stat().st_size == 77_777, 30, what="tail received")
    # Suspended replay must not stop an activation either.
    assert receiver_cli("suspend", "--data-dir", str(data), "--stream", "db2").returncode == 0
    receiver.kill9()
    rc, report = activate(data, "db2")
    assert rc == 0, report
    assert report["epoch"] == 1 and report["missing_acknowledged"] == []
    assert report["last_replayed"] == segment_name(3)
    assert report["unsealed_tail_bytes"] == 77_777
    for i in range(1, 4):
        assert digest_file(copy / "replica" / segment_name(i)) == digest_file(source / segment_name(i))
    assert (copy / "replica" / f"{active.name}.partial").read_bytes() == active.read_bytes()
    # The receiver comes back: the old shipper is fenced, nothing more enters the copy.
    before = snapshot(copy)
    procs.append(receiver.start())
    wait_until(lambda: shipper.count("fenced") >= 1, 30, what="fenced after restart")
    with open(active, "ab") as f:
        f.write(b"late")
    time.sleep(1)
    assert snapshot(copy) == before
    row = json.loads(receiver_cli("status", "--data-dir", str(data), "--json").stdout)["copies"][0]
    assert (row["state"], row["epoch"]) == ("Activated", 1)


def test_activation_reports_missing_acknowledged_data_and_skips_the_hook(
    tmp_path: Path, secret: Path, procs: list[Proc]
) -> None:
    source = tmp_path / "primary"
    source.mkdir()
    receiver = receiver_proc(tmp_path, secret, name="standby", extra=["--replay-lag", "1h"])
    procs.append(receiver.start())
    procs.append(shipper_proc(tmp_path, "db3", source, [receiver], secret).start())
    for i in range(1, 5):
        write_segment(source / segment_name(i), os.urandom(100_000))
    copy = tmp_path / "standby" / "db3"
    wait_until(lambda: (copy / "log" / segment_name(3)).exists(), 30, what="3 segments copied")
    assert receiver.stop() == 0
    # A segment the primary had acknowledged goes bad on the standby's disk before the activation.
    bad = bytearray((copy / "log" / segment_name(2)).read_bytes())
    bad[10] ^= 1
    (copy / "log" / segment_name(2)).write_bytes(bytes(bad))
    hook = tmp_path / "hook-ran"
    rc, report = activate(tmp_path / "standby", "db3", "--on-activate", f"touch {hook}", "--replay-retries", "0")
    assert rc == 1
    assert report["last_replayed"] == segment_name(1)
    missing = " ".join(report["missing_acknowledged"])
    assert segment_name(2) in missing and segment_name(3) in missing
    assert "xxh3_128" in report["replay_result"]
    assert not hook.exists() and "not run" in report["hook_output"]
    assert not (copy / "replica" / segment_name(2)).exists()
    assert any(p.name.startswith(segment_name(2)) for p in (copy / "quarantine").iterdir())
    text = receiver_cli(
        "activate", "--data-dir", str(tmp_path / "standby"), "--stream", "db3", "--replay-retries", "0"
    ).stdout
    assert "acknowledged data missing: YES" in text
