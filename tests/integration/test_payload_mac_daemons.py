"""The payload MAC with real processes: a shipper started with ``--payload-mac`` sends sealed segments'
chunks from their mappings with the MAC made before the digests (FrameSealer.premac), and a receiver
that checks every frame's GMAC keeps a byte-identical copy of each."""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers.copies import assert_copy_converged, wait_converged
from tests.helpers.procs import Proc, receiver_proc, shipper_proc
from tests.helpers.source import segment_name


def test_mapped_chunks_with_the_payload_mac_ahead_arrive_whole(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    source = tmp_path / "src"
    source.mkdir()
    # Sealed segments of several chunks (the default 4 MiB, and a tail shorter than the map threshold).
    sizes = [9 * 1024 * 1024 + 300_000, 4 * 1024 * 1024, 5 * 1024 * 1024 + 7, 64 * 1024]
    for i, size in enumerate(sizes, start=1):
        (source / segment_name(i)).write_bytes(os.urandom(size))
    receiver = receiver_proc(tmp_path, secret).start()
    procs.append(receiver)
    shipper = shipper_proc(tmp_path, "db1", source, [receiver], secret, ["--payload-mac"]).start()
    procs.append(shipper)
    copy = tmp_path / "receiver" / "db1"
    expect = [segment_name(i) for i in range(1, len(sizes))]  # the newest is the active one
    wait_converged(source, copy, expect, {}, 60)
    assert assert_copy_converged(source, copy, expect) == sum(sizes[:-1])
    assert shipper.stop() == 0
    assert receiver.stop() == 0
    # Every frame's MAC was checked and none refused: a refusal is logged and ends the connection.
    for proc in (shipper, receiver):
        assert "bad-mac" not in proc.log_text() and "nonce" not in proc.log_text()
        assert not proc.unexpected_errors()
