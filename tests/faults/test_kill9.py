"""kill -9 of the receiver and of the shipper at random moments while a log grows.

After every kill the shipper's acknowledged positions (its DEBUG ``acked`` lines) are held against
the receiver's disk: no acknowledged byte may be missing, and nothing corrupt may sit in log/. At the
end the copy converges byte-identical. LOGSHIP_FAULT_KILLS sets kills per side (default 50);
LOGSHIP_HEAVY=1 makes it 200 each over a bigger log.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from tests.faults.common import HEAVY, DiskChecker, FaultFigures, highest_acked, record
from tests.helpers.copies import assert_copy_converged, partial_matches_prefix
from tests.helpers.procs import Proc, receiver_proc, shipper_proc
from tests.helpers.source import SourceWriter, sealed_in_source
from tests.helpers.waiting import wait_until

KILLS_EACH = int(os.environ.get("LOGSHIP_FAULT_KILLS") or (200 if HEAVY else 50))


def test_kill9_both_sides_no_acknowledged_byte_lost(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    t0 = time.monotonic()
    rnd = random.Random(int(os.environ.get("LOGSHIP_SEED", "7")))
    # Far more segments than the kills will take; the writer is stopped once the kills are done.
    sizes = [rnd.randint(1, 600 * 1024) for _ in range(4000)]
    source = tmp_path / "src"
    source.mkdir()
    receiver = receiver_proc(tmp_path, secret)
    # The receiver restarts after each kill on the port its first start reported (see ReceiverProc).
    shipper = shipper_proc(tmp_path, "k9", source, [receiver], secret, ["--log-level", "DEBUG", "--chunk-size", "256k"])
    procs += [receiver.start(), shipper.start()]
    copy = tmp_path / "receiver" / "k9"
    disk = DiskChecker(source, copy)
    writer = SourceWriter(source, sizes, rate=2e6, seed=11).start()
    victims = ["receiver"] * KILLS_EACH + ["shipper"] * KILLS_EACH
    rnd.shuffle(victims)
    acked_at_kill = {"receiver": 0, "shipper": 0}
    try:
        wait_until(lambda: highest_acked(shipper.log_text()) is not None, 60, what="a first ACK")
        for victim in victims:
            time.sleep(rnd.uniform(0.02, 0.5))
            proc = receiver if victim == "receiver" else shipper
            proc.kill9()
            # The moment of death is arbitrary: handshake, mid-write, mid-fsync, mid-rename.
            covered = disk.check_acked(shipper.log_text())
            acked_at_kill[victim] += 1 if covered else 0
            if victim == "receiver":
                assert partial_matches_prefix(source, copy), "a partial is not a prefix of its source segment"
            time.sleep(rnd.uniform(0, 0.2))
            proc.start()
    finally:
        writer.stop()
    disk.wait_converged(120, "convergence after the kills")
    total = assert_copy_converged(source, copy, sealed_in_source(source))
    disk.check_acked(shipper.log_text())
    assert partial_matches_prefix(source, copy)
    kills = {"receiver": receiver.starts - 1, "shipper": shipper.starts - 1}
    assert kills["receiver"] >= KILLS_EACH and kills["shipper"] >= KILLS_EACH
    # The checks had something to check: most kills came after some bytes were acknowledged.
    assert acked_at_kill["receiver"] + acked_at_kill["shipper"] >= KILLS_EACH
    cut = receiver.count("unverified bytes from the tail")
    seconds = round(time.monotonic() - t0, 1)
    record(
        "kill9",
        [
            FaultFigures(
                "kill -9 receiver",
                kills["receiver"],
                total,
                0,
                0,
                seconds,
                {"acked_checks": acked_at_kill["receiver"], "torn_tails_cut": cut},
            ),
            FaultFigures(
                "kill -9 shipper",
                kills["shipper"],
                total,
                0,
                0,
                seconds,
                {"acked_checks": acked_at_kill["shipper"], "segments": len(disk.verified)},
            ),
        ],
    )
    print(f"\nfigures: kills={kills} segments={len(disk.verified)} bytes={total} torn_tails_cut={cut} s={seconds}")
