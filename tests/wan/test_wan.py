"""Real processes on two hosts (network namespaces): shipper in dc1, receiver in dc2, across a capped,
delayed link. Every sealed segment in the copy is compared with the source by digest."""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

from tests.helpers.copies import assert_copy_converged, check_no_corrupt, partial_matches_prefix, wait_converged
from tests.helpers.procs import Proc
from tests.helpers.source import SourceWriter, run_loadgen, sealed_in_source, segment_name
from tests.helpers.waiting import wait_until
from tests.wan.conftest import wan_receiver, wan_shipper
from tests.wan.lab import DEV, Wan


def _tx_bytes(wan: Wan, host: str) -> int:
    """Bytes sent on the host's end of the link: proof that the traffic crossed the veth pair."""
    out = subprocess.run(
        wan.cmd(host, ["cat", f"/sys/class/net/{DEV}/statistics/tx_bytes"]),
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


def test_growing_log_ships_across_the_link(wan: Wan, tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    rnd = random.Random(11)
    sizes = [rnd.randint(64 * 1024, 1536 * 1024) for _ in range(12)]
    source = tmp_path / "src"
    source.mkdir()
    receiver = wan_receiver(wan, tmp_path, secret)
    shipper = wan_shipper(wan, tmp_path, "wan", source, secret)
    tx_before = _tx_bytes(wan, "dc1")
    procs += [receiver.start(), shipper.start()]
    # Below the link rate, so the copy follows the writer as it would in production.
    writer = SourceWriter(source, sizes, rate=2e6, seed=11).start()
    copy = tmp_path / "receiver" / "wan"
    seen: dict[str, str] = {}
    try:
        assert writer.done_full.wait(60)
        wait_converged(source, copy, [segment_name(i) for i in range(1, len(sizes) + 1)], seen, 60)
    finally:
        writer.stop()
    total = assert_copy_converged(source, copy, sealed_in_source(source))
    assert total == sum(sizes)
    assert partial_matches_prefix(source, copy)
    crossed = _tx_bytes(wan, "dc1") - tx_before
    print(f"\nfigures: segments={len(sizes)} bytes={total} veth_tx_bytes={crossed}")
    assert crossed >= total


def test_kill9_on_both_hosts(wan: Wan, tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    rnd = random.Random(12)
    sizes = [rnd.randint(64 * 1024, 1024 * 1024) for _ in range(16)]
    source = tmp_path / "src"
    source.mkdir()
    receiver = wan_receiver(wan, tmp_path, secret)
    shipper = wan_shipper(wan, tmp_path, "crash", source, secret)
    procs += [receiver.start(), shipper.start()]
    writer = SourceWriter(source, sizes, rate=1.5e6, seed=12).start()
    copy = tmp_path / "receiver" / "crash"
    seen: dict[str, str] = {}
    victims = ["receiver", "shipper"] * 3
    rnd.shuffle(victims)
    try:
        for victim in victims:
            time.sleep(rnd.uniform(0.3, 1.0))
            proc = receiver if victim == "receiver" else shipper
            proc.kill9()
            check_no_corrupt(source, copy, seen)
            if victim == "receiver":
                assert partial_matches_prefix(source, copy)
            proc.start()
        assert writer.done_full.wait(60)
        wait_converged(source, copy, [segment_name(i) for i in range(1, len(sizes) + 1)], seen, 90)
    finally:
        writer.stop()
    total = assert_copy_converged(source, copy, sealed_in_source(source))
    assert total == sum(sizes)
    print(f"\nfigures: segments={len(sizes)} bytes={total} kills={len(victims)}")
    assert receiver.starts == 4 and shipper.starts == 4


def test_link_cut_and_restored(wan: Wan, tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    rnd = random.Random(13)
    sizes = [rnd.randint(64 * 1024, 1024 * 1024) for _ in range(14)]
    source = tmp_path / "src"
    source.mkdir()
    receiver = wan_receiver(wan, tmp_path, secret)
    # A short ack timeout, so that a cut longer than it makes the shipper drop the dead connection
    # and reconnect once the link is back (the receiver's new connection takes over the old one).
    shipper = wan_shipper(wan, tmp_path, "cut", source, secret, ["--ack-timeout", "2"])
    procs += [receiver.start(), shipper.start()]
    writer = SourceWriter(source, sizes, rate=1.5e6, seed=13).start()
    copy = tmp_path / "receiver" / "cut"
    seen: dict[str, str] = {}
    cuts = 2
    try:
        for n in range(cuts):
            # Cut only a live connection (not one still being set up), and only while data flows.
            wait_until(lambda n=n: shipper.count("connected, ") >= n + 1, 60, what="shipper connected")
            time.sleep(rnd.uniform(0.3, 1.0))
            wan.set_link(False)
            try:
                time.sleep(3.5)
                check_no_corrupt(source, copy, seen)
            finally:
                wan.set_link(True)
        wait_until(lambda: shipper.count("connected, ") >= 1 + cuts, 60, what="reconnect after the cut")
        assert writer.done_full.wait(60)
        wait_converged(source, copy, [segment_name(i) for i in range(1, len(sizes) + 1)], seen, 90)
    finally:
        wan.set_link(True)
        writer.stop()
    total = assert_copy_converged(source, copy, sealed_in_source(source))
    assert total == sum(sizes)
    connects = shipper.count("connected, ")
    print(f"\nfigures: segments={len(sizes)} bytes={total} cuts={cuts} shipper_connections={connects}")
    # Each cut outlasted the ack timeout: the shipper noticed and reconnected after each.
    assert connects >= 1 + cuts


def test_compressed_log_crosses_the_link_in_fewer_bytes(
    wan: Wan, tmp_path: Path, secret: Path, procs: list[Proc]
) -> None:
    source = tmp_path / "src"
    names = run_loadgen(source, 8, 1 << 20, "--seed", "9")
    receiver = wan_receiver(wan, tmp_path, secret)
    shipper = wan_shipper(wan, tmp_path, "zs", source, secret, ["--seal", "immediate", "--compress", "zstd"])
    tx_before = _tx_bytes(wan, "dc1")
    procs += [receiver.start(), shipper.start()]
    copy = tmp_path / "receiver" / "zs"
    wait_converged(source, copy, names, {}, 60)
    total = assert_copy_converged(source, copy, names)
    crossed = _tx_bytes(wan, "dc1") - tx_before
    print(f"\nfigures: log-like bytes={total} veth_tx_bytes={crossed} ratio={total / crossed:.2f}")
    assert crossed < total / 2
