"""End to end with real processes: a shipper tails a growing log, a receiver keeps a verified copy."""

from __future__ import annotations

import random
import time
from pathlib import Path

from tests.helpers.copies import assert_copy_converged, digest_file, partial_matches_prefix, wait_converged
from tests.helpers.procs import Proc, receiver_proc, shipper_proc
from tests.helpers.proxies import ProxyThread, Relay
from tests.helpers.source import SourceWriter, sealed_in_source, segment_name
from tests.helpers.waiting import wait_until


def test_growing_log_converges_with_active_segment_streaming(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    rnd = random.Random(20261125)
    sizes = [rnd.randint(1024, 2 * 1024 * 1024) for _ in range(42)]
    source = tmp_path / "src"
    source.mkdir()
    receiver = receiver_proc(tmp_path, secret).start()
    procs.append(receiver)
    shipper = shipper_proc(tmp_path, "db1", source, [receiver], secret).start()
    procs.append(shipper)
    writer = SourceWriter(source, sizes, rate=40e6, seed=7).start()
    copy = tmp_path / "receiver" / "db1"
    seen: dict[str, str] = {}
    try:
        assert writer.done_full.wait(60)
        expect = [segment_name(i) for i in range(1, len(sizes) + 1)]
        wait_converged(source, copy, expect, seen, 60)
        # The active segment streams as it grows: its partial copy trails the source by little.
        active = source / segment_name(len(sizes) + 1)
        partial = copy / "incoming" / f"{active.name}.partial"
        wait_until(lambda: partial.exists() and partial.stat().st_size > 0, 10, what="active segment streaming")
        time.sleep(0.5)
        src_size = active.stat().st_size
        wait_until(lambda: partial.stat().st_size >= src_size, 5, interval=0.02, what="partial catching up")
        assert partial_matches_prefix(source, copy)
    finally:
        writer.stop()
    total = assert_copy_converged(source, copy, sealed_in_source(source))
    assert total == sum(sizes)
    assert receiver.stop() == 0
    assert shipper.stop() == 0
    print(f"\nfigures: segments={len(sizes)} bytes={total} partial={partial.stat().st_size}")


def test_immediate_seal_and_segment_size_and_idle(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    receiver = receiver_proc(tmp_path, secret).start()
    procs.append(receiver)
    archive = tmp_path / "archive"
    archive.mkdir()
    # An archive directory filled by rename: files are complete on sight, temp names never ship.
    for i in range(1, 4):
        tmp = archive / f".{segment_name(i)}.tmp"
        tmp.write_bytes(random.randbytes(100_000 * i))
        tmp.rename(archive / segment_name(i))
    (archive / "half-written.tmp").write_bytes(b"x" * 10)
    procs.append(shipper_proc(tmp_path, "arch", archive, [receiver], secret, ["--seal", "immediate"]).start())
    copy = tmp_path / "receiver" / "arch"
    expect = [segment_name(i) for i in range(1, 4)]
    wait_until(lambda: (copy / "log").exists() and sorted(p.name for p in (copy / "log").iterdir()) == expect, 20)
    assert_copy_converged(archive, copy, expect)

    # --segment-size seals the newest segment once it reaches the size; --seal-idle after quiet.
    sized = tmp_path / "sized"
    sized.mkdir()
    (sized / segment_name(1)).write_bytes(random.randbytes(65536))
    procs.append(shipper_proc(tmp_path, "sized", sized, [receiver], secret, ["--segment-size", "64k"]).start())
    idle = tmp_path / "idle"
    idle.mkdir()
    (idle / segment_name(1)).write_bytes(random.randbytes(5000))
    procs.append(shipper_proc(tmp_path, "idle", idle, [receiver], secret, ["--seal-idle", "1"]).start())
    root = tmp_path / "receiver"
    wait_until(lambda: (root / "sized" / "log" / segment_name(1)).exists(), 20, what="size seal")
    wait_until(lambda: (root / "idle" / "log" / segment_name(1)).exists(), 20, what="idle seal")
    assert digest_file(root / "idle" / "log" / segment_name(1)) == digest_file(idle / segment_name(1))


def test_several_targets_each_get_their_own_copy(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    source = tmp_path / "src"
    source.mkdir()
    r1 = receiver_proc(tmp_path, secret, name="r1").start()
    procs.append(r1)
    r2 = receiver_proc(tmp_path, secret, name="r2")
    # r2 is not up yet, so it has no port: the shipper ships to a relay the test owns (on port 0),
    # which turns connections away until r2 listens and then forwards them to it.
    with ProxyThread(Relay(r2)) as late:
        procs.append(shipper_proc(tmp_path, "multi", source, [r1, late], secret).start())
        for i in range(1, 6):
            (source / segment_name(i)).write_bytes(random.randbytes(300_000))
        copy1 = tmp_path / "r1" / "multi"
        wait_until(lambda: (copy1 / "log").exists() and len(list((copy1 / "log").iterdir())) == 4, 20)
        # The second target comes up late; it gets everything from the start through its own cursor.
        procs.append(r2.start())
        copy2 = tmp_path / "r2" / "multi"
        wait_until(lambda: (copy2 / "log").exists() and len(list((copy2 / "log").iterdir())) == 4, 30)
    expect = [segment_name(i) for i in range(1, 5)]
    assert_copy_converged(source, copy1, expect)
    assert_copy_converged(source, copy2, expect)


def test_sealed_segment_changed_on_source_is_reported_and_not_overwritten(
    tmp_path: Path, secret: Path, procs: list[Proc]
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    receiver = receiver_proc(tmp_path, secret).start()
    procs.append(receiver)
    shipper = shipper_proc(tmp_path, "chg", source, [receiver], secret)
    procs.append(shipper.start())
    first = random.randbytes(200_000)
    (source / segment_name(1)).write_bytes(first)
    (source / segment_name(2)).write_bytes(b"a" * 1000)
    copy = tmp_path / "receiver" / "chg"
    wait_until(lambda: (copy / "log" / segment_name(1)).exists(), 20)
    with open(source / segment_name(1), "ab") as f:
        f.write(b"late bytes that should never have been written")
    (source / segment_name(3)).write_bytes(b"b" * 1000)
    wait_until(lambda: (copy / "log" / segment_name(2)).exists(), 20)
    wait_until(lambda: shipper.count("changed on the source") >= 1, 20, what="the loud report")
    assert (copy / "log" / segment_name(1)).read_bytes() == first
    # A restarted shipper has no memory of what it shipped, but the receiver tells it the size of the
    # last sealed segment at resume: a change there is reported too.
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / segment_name(1)).write_bytes(b"c" * 5000)
    again = shipper_proc(tmp_path, "chg2", archive, [receiver], secret, ["--seal", "immediate"])
    procs.append(again.start())
    copy2 = tmp_path / "receiver" / "chg2"
    wait_until(lambda: (copy2 / "log" / segment_name(1)).exists(), 20)
    again.stop()
    with open(archive / segment_name(1), "ab") as f:
        f.write(b"more")
    procs.append(again.start())
    wait_until(lambda: again.count("changed after it was shipped") >= 1, 20, what="the report after restart")
    assert (copy2 / "log" / segment_name(1)).read_bytes() == b"c" * 5000
