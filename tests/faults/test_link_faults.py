"""A damaging link between shipper and receiver: cuts, stalls, bit flips in headers and payloads,
truncated and duplicated frames, in both directions. No corrupt segment is ever installed; the copy
converges; the shipper counts as acknowledged only positions the receiver really acknowledged.

LOGSHIP_FAULT_LINK sets faults per kind and direction (default 8; LOGSHIP_HEAVY=1: 40).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from tests.faults.common import HEAVY, Acked, DiskChecker, FaultFigures, acked_lines, record
from tests.helpers.copies import assert_copy_converged, partial_matches_prefix
from tests.helpers.procs import Proc, receiver_proc, shipper_proc
from tests.helpers.proxies import KINDS, DamagingLink
from tests.helpers.source import SourceWriter, sealed_in_source
from tests.helpers.waiting import wait_until

EACH = int(os.environ.get("LOGSHIP_FAULT_LINK") or (40 if HEAVY else 8))
BACK_NAMES = {
    "cut": "cut",
    "truncate": "truncate",
    "stall": "stall",
    "flip_header": "flip header",
    "flip_payload": "flip ACK position",
    "duplicate": "duplicate",
}


def test_damaging_link_never_installs_corruption(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    t0 = time.monotonic()
    rnd = random.Random(int(os.environ.get("LOGSHIP_SEED", "17")))
    source = tmp_path / "src"
    source.mkdir()
    # A short idle timeout, so that the longer stalls also exercise the receiver dropping a silent peer.
    receiver = receiver_proc(tmp_path, secret, extra=["--idle-timeout", "2.5"])
    procs.append(receiver.start())
    copy = tmp_path / "receiver" / "link"
    disk = DiskChecker(source, copy)
    link = DamagingLink(receiver, seed=rnd.randrange(1 << 30))
    sizes = [rnd.randint(1, 400 * 1024) for _ in range(4000)]
    writer = SourceWriter(source, sizes, rate=1.5e6, seed=23).start()
    try:
        shipper = shipper_proc(
            tmp_path, "link", source, [link.proxy.port], secret, ["--log-level", "DEBUG", "--chunk-size", "64k"]
        )
        procs.append(shipper.start())
        plan = [(kind, back) for kind in KINDS for back in (False, True) for _ in range(EACH)]
        rnd.shuffle(plan)
        for kind, back in plan:
            link.arm(kind, back)
            wait_until(lambda: not link.armed(), 60, interval=0.02, what=f"fault {kind} (back={back}) to fire")
            disk.check_log()
            time.sleep(rnd.uniform(0.05, 0.3))
        writer.stop()
        disk.wait_converged(120, "convergence through the damaging link")
        total = assert_copy_converged(source, copy, sealed_in_source(source))
        shipper_log = shipper.log_text()
        disk.check_acked(shipper_log)
        # Damaged ACKs (and WELCOMEs) must never count: every position the shipper took as
        # acknowledged is one the receiver sent, as it left the receiver.
        sent = {Acked(seg, off, sealed) for seg, off, sealed in link.receiver_acked()}
        taken = acked_lines(shipper_log)
        invented = sorted({a for a in taken if a not in sent})
        assert not invented, f"the shipper counted positions the receiver never acknowledged: {invented[:5]}"
        assert taken
        assert partial_matches_prefix(source, copy)
    finally:
        writer.stop()
        link.close()
    fired, fired_back = dict(link.proxy.fired), dict(link.proxy.fired_back)
    assert all(fired.get(k, 0) >= EACH for k in KINDS), fired
    assert all(fired_back.get(k, 0) >= EACH for k in KINDS), fired_back
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
    back_rows = [
        FaultFigures(f"link, receiver to shipper: {BACK_NAMES[kind]}", fired_back.get(kind, 0), total, 0, 0, seconds)
        for kind in KINDS
    ]
    back_rows[0].notes = {
        "acked_positions_checked": len(taken),
        "refused_by_digest": shipper_log.count("digest mismatch"),
        **{f"hit_{t.lower()}": n for t, n in sorted(link.proxy.hit_back.items())},
    }
    record("link", rows + back_rows)
    print(
        f"\nfigures: fired={fired} back={fired_back} hit={dict(link.proxy.hit_back)} bytes={total} "
        f"segments={len(disk.verified)} {notes} {back_rows[0].notes} s={seconds}"
    )
