"""kill -9 of either side and a hostile link: the copy converges byte-identical, nothing corrupt is installed."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from tests.helpers.copies import assert_copy_converged, check_no_corrupt, partial_matches_prefix, wait_converged
from tests.helpers.procs import Proc, receiver_proc, shipper_proc
from tests.helpers.proxies import FaultProxy, ProxyThread
from tests.helpers.source import SourceWriter, sealed_in_source, segment_name
from tests.helpers.waiting import wait_until

KILLS_EACH = int(os.environ.get("LOGSHIP_KILLS_EACH", "10"))


def test_kill9_receiver_and_shipper_at_random_moments(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    rnd = random.Random(int(os.environ.get("LOGSHIP_SEED", "4242")))
    sizes = [rnd.randint(1024, 2 * 1024 * 1024) for _ in range(44)]
    source = tmp_path / "src"
    source.mkdir()
    receiver = receiver_proc(tmp_path, secret)
    # The receiver restarts after each kill on the port its first start reported (see ReceiverProc).
    shipper = shipper_proc(tmp_path, "crash", source, [receiver], secret)
    procs += [receiver.start(), shipper.start()]
    copy = tmp_path / "receiver" / "crash"
    # Slow enough that the kills land while segments are still being written and shipped.
    writer = SourceWriter(source, sizes, rate=3e6, seed=3).start()
    seen: dict[str, str] = {}
    victims = ["receiver"] * KILLS_EACH + ["shipper"] * KILLS_EACH
    rnd.shuffle(victims)
    try:
        for victim in victims:
            time.sleep(rnd.uniform(0.05, 0.7))
            proc = receiver if victim == "receiver" else shipper
            proc.kill9()
            # Whatever the moment of death, what is in log/ is verified and the partial is a true prefix.
            check_no_corrupt(source, copy, seen)
            if victim == "receiver":
                assert partial_matches_prefix(source, copy)
            time.sleep(rnd.uniform(0, 0.3))
            proc.start()
        assert writer.done_full.wait(120)
        expect = [segment_name(i) for i in range(1, len(sizes) + 1)]
        wait_converged(source, copy, expect, seen, 90)
    finally:
        writer.stop()
    total = assert_copy_converged(source, copy, sealed_in_source(source))
    assert total == sum(sizes)
    assert partial_matches_prefix(source, copy)
    cut = receiver.count("unverified bytes from the tail")
    print(
        f"\nfigures: segments={len(sizes)} bytes={total} receiver_kills={receiver.starts - 1} "
        f"shipper_kills={shipper.starts - 1} torn_tails_cut={cut}"
    )
    assert receiver.starts - 1 >= KILLS_EACH and shipper.starts - 1 >= KILLS_EACH


def test_fault_proxy_cuts_and_flips_converge_without_corruption(
    tmp_path: Path, secret: Path, procs: list[Proc]
) -> None:
    rnd = random.Random(99)
    # More segments than the faults need: the writer must still be rolling segments (so SEALs still
    # flow) when the last fault is queued, however fast or slow this machine is; it is stopped after.
    sizes = [rnd.randint(64 * 1024, 1024 * 1024) for _ in range(400)]
    source = tmp_path / "src"
    source.mkdir()
    receiver = receiver_proc(tmp_path, secret)
    procs.append(receiver.start())
    copy = tmp_path / "receiver" / "faulty"
    seen: dict[str, str] = {}
    with ProxyThread(FaultProxy(receiver)) as proxy:
        shipper = shipper_proc(tmp_path, "faulty", source, [proxy.port], secret, ["--chunk-size", "128k"])
        procs.append(shipper.start())
        # Slow enough that every fault (two need a SEAL) fires before the last full segment is written,
        # also with the receiver replaying what it copies.
        writer = SourceWriter(source, sizes, rate=2e6, seed=5).start()
        faults = ["flip_data", "cut_mid_frame", "flip_seal", "flip_data", "cut_mid_frame", "flip_data"] * 2
        try:
            for fault in faults:
                proxy.pending.append(fault)
                wait_until(lambda: not proxy.pending, 30, interval=0.02, what=f"fault {fault} to fire")
                check_no_corrupt(source, copy, seen)
                time.sleep(rnd.uniform(0.1, 0.4))
            assert not writer.done_full.is_set(), "the writer ran out of segments before the faults fired"
        finally:
            writer.stop()
        expect = sealed_in_source(source)
        wait_converged(source, copy, expect, seen, 60)
        total = assert_copy_converged(source, copy, expect)
    resends = receiver.count("asking for a resend")
    quarantined = len([p for p in (copy / "quarantine").iterdir() if not p.name.endswith(".reason")])
    print(
        f"\nfigures: faults={len(proxy.done)} connections={proxy.connections} resends={resends} "
        f"quarantined={quarantined} bytes={total}"
    )
    flips = proxy.done.count("flip_data")
    # A flip in the first chunk of a segment drops the connection instead of asking for a resend
    # (the chunk digest binds the segment name, and a damaged name must not be named back).
    assert resends + receiver.count("(bad-digest); closing") >= flips
    # A flipped SEAL digest is header damage: the frame fails its tag (protocol v3) and the connection
    # closes before the SEAL is looked at, so nothing is quarantined; the shipper resumes and seals again.
    assert receiver.count("refused a frame") >= proxy.done.count("flip_seal")
    assert quarantined == 0
    assert proxy.connections >= 1 + proxy.done.count("cut_mid_frame")
