"""A real kernel EIO under a running receiver (issue 13): the copy's file system (ext4 on a loop device)
is shut down while a shipper streams into it, so every write and fsync of it fails with EIO from the
kernel. The receiver answers ERROR storage-retry, the shipper backs off and shows Retrying (never
Failed), the receiver logs the episode once; once the file system is repaired and mounted again, the
same receiver and shipper converge with no restart and no command, and everything acknowledged before
the failure is on the device.

Why a shutdown: this machine has no device-mapper (``dmsetup`` cannot reach the kernel driver: "Failure
to communicate with kernel device-mapper driver") and no libfuse, so no device that fails for a while
and then heals can be made; ``EXT4_IOC_SHUTDOWN`` is the kernel's own "the device is gone" and needs
only a loop mount. Root only; skipped, saying why, elsewhere. tests/loopback/test_storage_eio.py covers
a transient EIO (one fsync, one write) at the store's seam.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from tests.faults.common import DiskChecker, highest_acked
from tests.helpers.copies import assert_copy_converged
from tests.helpers.procs import Proc, ReceiverProc, shipper_proc
from tests.helpers.source import SourceWriter, sealed_in_source
from tests.helpers.status_watch import StatusWatch, status
from tests.helpers.waiting import wait_until

EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
NOLOGFLUSH = 2
"""The device is gone: nothing more reaches it, not even the journal."""
HOLD = 8.0


def _sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60)


def _shutdown(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", NOLOGFLUSH))
    finally:
        os.close(fd)


def test_a_real_eio_backs_off_and_converges_once_the_storage_is_back(
    tmp_path: Path, secret: Path, procs: list[Proc]
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to loop-mount an ext4 image for the copy (mount -o loop)")
    if not (shutil.which("mkfs.ext4") and shutil.which("e2fsck")):
        pytest.skip("needs mkfs.ext4 and e2fsck (e2fsprogs)")
    image = tmp_path / "copy.img"
    with open(image, "wb") as f:
        f.truncate(96 << 20)
    made = _sh("mkfs.ext4", "-q", "-F", str(image))
    if made.returncode != 0:
        pytest.skip(f"cannot make an ext4 image here: {made.stderr.strip()}")
    data = tmp_path / "receiver"
    copy = data / "eio"
    copy.mkdir(parents=True, mode=0o700)
    data.chmod(0o700)
    mounted = _sh("mount", "-o", "loop", str(image), str(copy))
    if mounted.returncode != 0:
        pytest.skip(f"cannot loop-mount an ext4 image here: {mounted.stderr.strip()}")
    try:
        copy.chmod(0o700)
        _run(tmp_path, image, copy, secret, procs)
    finally:
        for p in procs:
            p.stop(timeout=5)
        if _sh("umount", str(copy)).returncode != 0:
            _sh("umount", "-l", str(copy))


def _run(tmp_path: Path, image: Path, copy: Path, secret: Path, procs: list[Proc]) -> None:
    source = tmp_path / "src"
    source.mkdir()
    receiver = ReceiverProc(
        [
            *("--data-dir", str(copy.parent), "--secret-file", str(secret), "--admin", "127.0.0.1:0"),
            # Replay stays out of it (a replay meeting EIO is tests/unit's): this is about the copy.
            *("--replay-lag", "1h"),
        ],
        tmp_path / "receiver.log",
    )
    shipper = shipper_proc(
        tmp_path, "eio", source, [receiver], secret, ["--log-level", "DEBUG", "--admin", "127.0.0.1:0"]
    )
    procs += [receiver.start(), shipper.start()]
    sizes = [300_000 + 7_919 * i for i in range(40)]
    writer = SourceWriter(source, sizes, rate=3e6, seed=41).start()
    try:
        wait_until(lambda: len(os.listdir(copy / "log")) >= 5 if (copy / "log").exists() else False, 60, what="5")
        with StatusWatch(shipper.admin_port(), receiver.admin_port()) as watch:
            _shutdown(copy)
            failed_at = time.monotonic()
            wait_until(lambda: receiver.count("storage failed (EIO)") >= 1, 30, what="the receiver to meet EIO")
            acked_before = highest_acked(shipper.log_text())  # acknowledged before (or as) the device went
            lines_before = len(receiver.log_text().splitlines())
            connects_before = shipper.count(": connected, ")
            time.sleep(HOLD)
            held = time.monotonic() - failed_at
            receiver_lines = len(receiver.log_text().splitlines()) - lines_before
            told = shipper.count("the target's storage failed (EIO)")
            connects = shipper.count(": connected, ") - connects_before
            assert receiver.alive(), "the receiver died of EIO"
            (row,) = status(receiver.admin_port())["copies"]
            # The device comes back: repaired and mounted again, under the same running receiver.
            healed = _sh("umount", str(copy))
            if healed.returncode != 0:
                _sh("umount", "-l", str(copy))
            fsck = _sh("e2fsck", "-f", "-y", str(image))
            assert fsck.returncode in (0, 1), fsck.stdout + fsck.stderr  # 1: errors corrected
            again = _sh("mount", "-o", "loop", str(image), str(copy))
            assert again.returncode == 0, again.stderr
            back_at = time.monotonic()
            # Everything acknowledged before the failure is on the device (read from a fresh mount).
            assert acked_before is not None
            assert DiskChecker(source, copy).lost_bytes(acked_before) == 0, acked_before
            assert writer.done_full.wait(60)
            disk = DiskChecker(source, copy)
            disk.wait_converged(90, "log/ converged once the storage was back")
            converged = time.monotonic() - back_at
            total = assert_copy_converged(source, copy, sealed_in_source(source))
            disk.check_acked(shipper.log_text())
            time.sleep(0.5)
    finally:
        writer.stop()
    print(
        f"\nfigures: held_s={held:.1f} receiver_log_lines_while_failing={receiver_lines} told_to_back_off={told} "
        f"connections_while_failing={connects} converged_after_remount_s={converged:.1f} bytes={total} "
        f"umount={'clean' if healed.returncode == 0 else 'lazy'}"
    )
    retrying = [f for s, f in watch.seen[0] if s == "Retrying" and f]
    assert [f for f in retrying if f.startswith("the target's storage failed (EIO) on stream eio")], set(retrying)
    assert "Failed" not in watch.states(0) | watch.states(1), (watch.distinct(0), watch.distinct(1))
    assert row["state"] == "Waiting" and (row["retrying"] or "").startswith("storage failed (EIO)"), row
    # Backed off (1, 2, 4, 8 s), each attempt a line at most: not a hot loop.
    assert 1 <= told <= 5, told
    assert receiver_lines < 10, receiver.log_text().splitlines()[lines_before:]
    assert receiver.starts == 1 and receiver.alive() and "Traceback" not in receiver.log_text()
    assert status(receiver.admin_port())["copies"][0]["state"] == "Healthy"
