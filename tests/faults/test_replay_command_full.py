"""A replay *command* that fails for lack of space waits for space instead of counting as a failure
(issue 13): the copy shows Waiting in its own row, never Failed, and replays everything once space
returns, with no restart and no command.

The command is ``cp {path} DIR/<stream>/replica/`` with replica/ a symlink to a 1 MiB tmpfs the test
mounts (root only; skipped, saying why, elsewhere): cp meets ENOSPC for real. Retries are few and
quick (``--replay-retries 2 --replay-backoff 0.2s``): counted as failures, three of them Failed the copy
within a second or two, well inside the time the disk is held full.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.helpers.copies import digest_file, log_names
from tests.helpers.disks import mount, umount
from tests.helpers.procs import Proc, ReceiverProc, shipper_proc
from tests.helpers.source import sealed_in_source, write_segments
from tests.helpers.status_watch import StatusWatch, metric, status
from tests.helpers.waiting import wait_until

HOLD = 8.0


def test_a_replay_command_that_meets_a_full_disk_waits_then_converges(
    tmp_path: Path, secret: Path, procs: list[Proc]
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs for the replay command's target (mount -t tmpfs)")
    dest = tmp_path / "dest"
    dest.mkdir()
    done = mount(["-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(dest)])
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        _run(tmp_path, dest, secret, procs)
    finally:
        for p in procs:
            p.stop(timeout=5)
        umount(dest)


def _run(tmp_path: Path, dest: Path, secret: Path, procs: list[Proc]) -> None:
    source = tmp_path / "src"
    source.mkdir()
    data = tmp_path / "receiver"
    copy = data / "cmd"
    copy.mkdir(parents=True, mode=0o700)
    data.chmod(0o700)
    (copy / "replica").symlink_to(dest)
    receiver = ReceiverProc(
        [
            *("--data-dir", str(data), "--secret-file", str(secret), "--admin", "127.0.0.1:0"),
            *("--replay", "command", "--replay-command", f"cp {{path}} {copy / 'replica'}/"),
            *("--replay-retries", "2", "--replay-backoff", "0.2s"),
        ],
        tmp_path / "receiver.log",
    )
    procs.append(receiver.start())
    # 8 segments of 300 kB: the fourth no longer fits on the 1 MiB tmpfs.
    write_segments(source, 1, 8, 300_000)
    shipper = shipper_proc(tmp_path, "cmd", source, [receiver], secret)
    procs.append(shipper.start())
    expect = sealed_in_source(source)
    wait_until(lambda: log_names(copy) == expect, 60, what="log/ to hold every segment")
    with StatusWatch(receiver.admin_port()) as watch:
        wait_until(lambda: receiver.count("replay waits for space") >= 1, 30, what="replay to meet the full disk")
        full_at = time.monotonic()
        lines_before = len(receiver.log_text().splitlines())
        time.sleep(HOLD)
        lines = len(receiver.log_text().splitlines()) - lines_before
        (row,) = status(receiver.admin_port())["copies"]
        gauge = metric(receiver.admin_port(), 'logship_receiver_waiting{stream="cmd"}')
        runs = len(list(dest.iterdir()))
        grown = mount(["-o", "remount,size=16m", str(dest)])
        assert grown.returncode == 0, grown.stderr
        grown_at = time.monotonic()
        wait_until(lambda: sorted(os.listdir(dest)) == expect, 60, what="the replay command to replay everything")
        converged = time.monotonic() - grown_at
        time.sleep(0.5)  # one more poll after convergence
    attempts = receiver.count("replay command failed")
    print(
        f"\nfigures: held_full_s={time.monotonic() - full_at - converged:.1f} receiver_log_lines_while_full={lines} "
        f"converged_after_space_s={converged:.1f} segments_in_dest_while_full={runs} failures_logged={attempts}"
    )
    for name in expect:
        assert digest_file(dest / name) == digest_file(source / name), name
    # Waiting in the copy's own row (and its gauge), with the reason; never Failed.
    assert row["state"] == "Waiting" and "lack of space" in (row["retrying"] or ""), row
    assert row["failure"] is None and row["waiting"] == 1, row
    assert gauge == 1.0
    assert "Failed" not in watch.states(), watch.distinct()
    assert receiver.count("replay Failed") == 0
    assert lines < 10, receiver.log_text().splitlines()[lines_before:]
    final = status(receiver.admin_port())["copies"][0]
    assert final["state"] == "Healthy" and final["waiting"] == 0, final
    assert "Traceback" not in receiver.log_text()
