"""The receiver's disk fills up: it reports it, keeps what it has, acknowledges nothing it did not
write, and resumes when space returns.

The copy lives on a small tmpfs the test mounts (root only; skipped, saying why, elsewhere). Space
returns by remounting the tmpfs larger. Unmounted in a finally, whatever happens.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from tests.faults.common import DiskChecker, FaultFigures, highest_acked, record
from tests.helpers.copies import assert_copy_converged, partial_matches_prefix
from tests.helpers.procs import Proc, ReceiverProc, shipper_proc
from tests.helpers.source import SourceWriter, sealed_in_source
from tests.helpers.waiting import wait_until


def _mount(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)


def test_disk_full_then_space_returns(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs for the receiver (mount -t tmpfs)")
    small = tmp_path / "small"
    small.mkdir()
    mounted = _mount(["-t", "tmpfs", "-o", "size=6m,mode=0755", "tmpfs", str(small)])
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    t0 = time.monotonic()
    try:
        _run(tmp_path, small, secret, procs, t0)
    finally:
        for p in procs:
            p.stop(timeout=5)
        if subprocess.run(["umount", str(small)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(small)], capture_output=True, timeout=30)


def _run(tmp_path: Path, small: Path, secret: Path, procs: list[Proc], t0: float) -> None:
    rnd = random.Random(31)
    source = tmp_path / "src"
    source.mkdir()
    # Its log outside the small file system, which is about to fill up.
    receiver = ReceiverProc(
        ["--data-dir", str(small / "data"), "--secret-file", str(secret)], tmp_path / "receiver.log"
    )
    shipper = shipper_proc(
        tmp_path, "full", source, [receiver], secret, ["--log-level", "DEBUG", "--chunk-size", "64k"]
    )
    procs += [receiver.start(), shipper.start()]
    copy = small / "data" / "full"
    disk = DiskChecker(source, copy)
    sizes = [rnd.randint(100_000, 700_000) for _ in range(40)]  # ~16 MB into 6 MB
    writer = SourceWriter(source, sizes, rate=6e6, seed=37).start()
    try:
        wait_until(lambda: receiver.count("storage failed") >= 1, 60, what="the receiver to report a full disk")
        # While full: whatever was acknowledged is on disk, whatever is in log/ is intact; the
        # receiver keeps serving (and failing) without acknowledging what it could not write.
        full_checks = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            disk.check_acked(shipper.log_text())
            assert partial_matches_prefix(source, copy)
            full_checks += 1
            time.sleep(0.3)
        assert receiver.alive(), "the receiver died of a full disk"
        acked_while_full = highest_acked(shipper.log_text())
        assert acked_while_full is not None
        assert writer.done_full.wait(60)
        hits = receiver.count("storage failed")
        grown = _mount(["-o", "remount,size=64m", str(small)])
        assert grown.returncode == 0, grown.stderr
        disk.wait_converged(90, "convergence once space returned")
        total = assert_copy_converged(source, copy, sealed_in_source(source))
        disk.check_acked(shipper.log_text())
    finally:
        writer.stop()
    assert receiver.starts == 1 and receiver.alive()
    seconds = round(time.monotonic() - t0, 1)
    record(
        "disk_full",
        [
            FaultFigures(
                "receiver disk full (6 MiB tmpfs, then remounted 64 MiB)",
                hits,
                total,
                0,
                0,
                seconds,
                {
                    "acked_checks_while_full": full_checks,
                    "acked_while_full": f"{acked_while_full.segment}@{acked_while_full.offset}",
                },
            )
        ],
    )
    print(
        f"\nfigures: enospc={hits} checks={full_checks} acked_while_full={acked_while_full} bytes={total} s={seconds}"
    )
