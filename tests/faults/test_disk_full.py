"""The receiver's disk fills up: it tells the shipper to back off (ERROR no-space), keeps what it has,
acknowledges nothing it did not write, and everything converges once space returns, with no restart and
no command (issue 13).

The copy's data dir and its replica/ each live on a small tmpfs the test mounts (root only; skipped,
saying why, elsewhere): replica/ is a symlink to the second one, so that replay copies (instead of
hard-linking) and meets the full disk too. Space returns by remounting both larger. Unmounted in a
finally, whatever happens. ``LOGSHIP_HEAVY=1`` holds the disk full for 20 s (12 s otherwise) with a
backlog of ~100 MiB (~24 MB otherwise).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from tests.faults.common import DiskChecker, FaultFigures, highest_acked, record
from tests.helpers.copies import assert_copy_converged, digest_file, partial_matches_prefix
from tests.helpers.disks import mount, umount
from tests.helpers.procs import Proc, ReceiverProc, shipper_proc
from tests.helpers.source import SourceWriter, sealed_in_source
from tests.helpers.status_watch import StatusWatch, metric, status
from tests.helpers.waiting import wait_until

HEAVY = bool(os.environ.get("LOGSHIP_HEAVY"))
HOLD = 20.0 if HEAVY else 12.0
SEGMENTS = 170 if HEAVY else 40
"""~100 MiB of backlog (heavy) or ~24 MB, into an 8 MiB data dir."""
GROWN = "256m" if HEAVY else "64m"


def test_disk_full_backs_off_then_converges(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs for the receiver (mount -t tmpfs)")
    small, replica = tmp_path / "small", tmp_path / "replica"
    mounted: list[Path] = []
    try:
        # replica/ smaller than the data dir: replay meets its full disk while log/ still has room.
        for where, size in ((small, "8m"), (replica, "2m")):
            where.mkdir()
            done = mount(["-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)])
            if done.returncode != 0:
                pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
            mounted.append(where)
        _run(tmp_path, small, replica, secret, procs)
    finally:
        for p in procs:
            p.stop(timeout=5)
        for where in mounted:
            umount(where)


def _run(tmp_path: Path, small: Path, replica: Path, secret: Path, procs: list[Proc]) -> None:
    t0 = time.monotonic()
    rnd = random.Random(31)
    source = tmp_path / "src"
    source.mkdir()
    copy = small / "data" / "full"
    copy.mkdir(parents=True, mode=0o700)
    (small / "data").chmod(0o700)
    (copy / "replica").symlink_to(replica)
    # Its log outside the small file system, which is about to fill up.
    receiver = ReceiverProc(
        [
            *("--data-dir", str(small / "data"), "--secret-file", str(secret)),
            *("--min-free", "512KiB", "--admin", "127.0.0.1:0"),
        ],
        tmp_path / "receiver.log",
    )
    shipper = shipper_proc(
        tmp_path,
        "full",
        source,
        [receiver],
        secret,
        ["--log-level", "DEBUG", "--chunk-size", "64k", "--admin", "127.0.0.1:0"],
    )
    procs += [receiver.start(), shipper.start()]
    disk = DiskChecker(source, copy)
    sizes = [rnd.randint(300_000, 900_000) for _ in range(SEGMENTS)]
    writer = SourceWriter(source, sizes, rate=30e6 if HEAVY else 12e6, seed=37).start()
    with StatusWatch(shipper.admin_port(), receiver.admin_port()) as watch:
        try:
            wait_until(lambda: receiver.count("receiver disk full") >= 1, 60, what="the receiver to see a full disk")
            full_at = time.monotonic()
            lines_before = len(receiver.log_text().splitlines())
            connects_before = shipper.count(": connected, ")
            told_before = shipper.count("the target's disk is full")
            # While full: whatever was acknowledged is on disk, whatever is in log/ is intact; the
            # receiver keeps answering without acknowledging what it could not write.
            checks = 0
            while time.monotonic() - full_at < HOLD:
                disk.check_acked(shipper.log_text())
                assert partial_matches_prefix(source, copy)
                checks += 1
                time.sleep(0.5)
            held = time.monotonic() - full_at
            full_gauge = metric(receiver.admin_port(), "logship_receiver_disk_full")
            waiting_gauge = metric(receiver.admin_port(), 'logship_receiver_waiting{stream="full"}')
            assert receiver.alive(), "the receiver died of a full disk"
            receiver_lines = len(receiver.log_text().splitlines()) - lines_before
            connects = shipper.count(": connected, ") - connects_before
            attempts = shipper.count("the target's disk is full") - told_before
            acked_while_full = highest_acked(shipper.log_text())
            assert writer.done_full.wait(60)
            grown_at = time.monotonic()
            for where in (small, replica):
                grown = mount(["-o", f"remount,size={GROWN}", str(where)])
                assert grown.returncode == 0, grown.stderr
            disk.wait_converged(90, "log/ converged once space returned")
            expect = sealed_in_source(source)
            wait_until(lambda: sorted(os.listdir(replica)) == expect, 90, what="replica/ converged")
            converged = time.monotonic() - grown_at
            total = assert_copy_converged(source, copy, expect)
            disk.check_acked(shipper.log_text())
            replay_waits = receiver.count("replay waits for space")
        finally:
            writer.stop()
        time.sleep(0.5)  # one more poll of both, after convergence
    seconds = round(time.monotonic() - t0, 1)
    figures = {
        "held_full_s": round(held, 1),
        "receiver_log_lines_while_full": receiver_lines,
        "connections_while_full": connects,
        "told_to_back_off": attempts,
        "attempts_per_s_while_full": round((attempts + connects) / held, 2),
        "converged_after_space_s": round(converged, 1),
        "acked_checks_while_full": checks,
        "replay_waits_for_space": replay_waits,
        "state_saves_retried": receiver.count("cannot save"),
        "acked_while_full": f"{acked_while_full.segment}@{acked_while_full.offset}" if acked_while_full else "-",
    }
    fault = f"receiver disk full (8 MiB tmpfs + 2 MiB replica, {SEGMENTS} segments, then {GROWN})"
    record(
        "disk_full",
        [FaultFigures(fault, attempts, total, 0, 0, seconds, figures)],
    )
    print("\nfigures: " + " ".join(f"{k}={v}" for k, v in figures.items()) + f" bytes={total}")
    assert full_gauge == 1.0
    assert metric(receiver.admin_port(), "logship_receiver_disk_full") == 0.0
    assert metric(receiver.admin_port(), "logship_receiver_refused_no_space_total") >= 1
    for name in expect:
        assert digest_file(replica / name) == digest_file(source / name), name
    # Told to back off, not cycling: a handful of attempts over the whole period, each one line at most.
    assert receiver_lines < 20, receiver.log_text().splitlines()[lines_before:]
    assert connects <= 6, f"{connects} connections in {held:.0f}s of full disk"
    retrying = [f for s, f in watch.seen[0] if s == "Retrying" and f and "disk is full" in f]
    assert retrying, f"the shipper never showed Retrying for the full disk: {watch.distinct(0)}"
    assert "Failed" not in watch.states(0), watch.distinct(0)
    assert not [s for s in watch.distinct(1) if s[0] == "Failed" or "Failed" in (s[1] or "")], watch.distinct(1)
    # The copy's own row said so too (not only the top-level space block), and its gauge.
    waiting = [r.get("retrying") or "" for r in watch.rows[1] if r["state"] == "Waiting"]
    assert [w for w in waiting if w.startswith("disk full (") and "free, min_free 524288 bytes)" in w], waiting
    assert waiting_gauge == 1.0
    rows = status(receiver.admin_port())["copies"]
    assert rows[0]["state"] == "Healthy" and rows[0]["waiting"] == 0 and not rows[0].get("replay_failed"), rows
    assert receiver.starts == 1 and receiver.alive()
    assert "Traceback" not in receiver.log_text()
    assert replay_waits >= 1, "replay never met the full replica disk: the test did not test it"
