"""A damaging link between shipper and receiver: cuts, stalls, bit flips in headers and payloads,
truncated and duplicated frames. No corrupt segment is ever installed; the copy converges.

LOGSHIP_FAULT_LINK sets faults per kind (default 8; LOGSHIP_HEAVY=1: 40).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from tests.faults.common import DiskChecker, FaultFigures, converged_bytes, record
from tests.faults.proxy import KINDS, ProxyInThread
from tests.harness import (
    Proc,
    SourceWriter,
    free_port,
    partial_matches_prefix,
    receiver_proc,
    sealed_in_source,
    shipper_proc,
    wait_until,
)

HEAVY = os.environ.get("LOGSHIP_HEAVY") == "1"
EACH = int(os.environ.get("LOGSHIP_FAULT_LINK") or (40 if HEAVY else 8))


def test_damaging_link_never_installs_corruption(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    t0 = time.monotonic()
    rnd = random.Random(int(os.environ.get("LOGSHIP_SEED", "17")))
    source = tmp_path / "src"
    source.mkdir()
    port = free_port()
    # A short idle timeout, so that the longer stalls also exercise the receiver dropping a silent peer.
    receiver = receiver_proc(tmp_path, port, secret, extra=["--idle-timeout", "2.5"])
    procs.append(receiver.start())
    copy = tmp_path / "receiver" / "link"
    disk = DiskChecker(source, copy)
    link = ProxyInThread(port, seed=rnd.randrange(1 << 30))
    sizes = [rnd.randint(1, 400 * 1024) for _ in range(4000)]
    writer = SourceWriter(source, sizes, rate=1.5e6, seed=23).start()
    try:
        shipper = shipper_proc(
            tmp_path, "link", source, [link.proxy.port], secret, ["--log-level", "DEBUG", "--chunk-size", "64k"]
        )
        procs.append(shipper.start())
        plan = [kind for kind in KINDS for _ in range(EACH)]
        rnd.shuffle(plan)
        for kind in plan:
            link.arm(kind)
            wait_until(lambda: not link.proxy.armed, 60, interval=0.02, what=f"fault {kind} to fire")
            disk.check_log()
            time.sleep(rnd.uniform(0.05, 0.3))
        writer.stop()
        wait_until(
            lambda: (disk.check_log() or True) and sorted(disk.verified) == sealed_in_source(source),
            120,
            what="convergence through the damaging link",
        )
        total = converged_bytes(source, copy, sealed_in_source(source))
        disk.check_acked(shipper.log_text())
        assert partial_matches_prefix(source, copy)
    finally:
        writer.stop()
        link.close()
    fired = dict(link.proxy.fired)
    assert all(fired.get(k, 0) >= EACH for k in KINDS), fired
    assert receiver.count("Failed") == 0
    quarantine = copy / "quarantine"
    quarantined = len([p for p in quarantine.iterdir() if not p.name.endswith(".reason")]) if quarantine.exists() else 0
    notes = {
        "connections": link.proxy.connections,
        "resends": receiver.count("asking for a resend"),
        "errors_closed": receiver.count("; closing"),
        "quarantined": quarantined,
    }
    seconds = round(time.monotonic() - t0, 1)
    rows = [FaultFigures(f"link: {kind.replace('_', ' ')}", fired.get(kind, 0), total, 0, 0, seconds) for kind in KINDS]
    rows[0].notes = notes
    record("link", rows)
    print(f"\nfigures: fired={fired} bytes={total} segments={len(disk.verified)} {notes} s={seconds}")
