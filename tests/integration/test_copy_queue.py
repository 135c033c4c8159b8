"""The receiver shows a copy queue: the shipper sends its source head and its copy queue in every
HEARTBEAT (every heartbeat interval, busy or idle), so the copy's side knows how far behind it is
during a catch-up, and shows 0 once it has everything."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers.cli import logship
from tests.helpers.procs import Proc, receiver_proc, shipper_proc
from tests.helpers.source import segment_name
from tests.helpers.waiting import wait_until

SEGMENTS, SIZE = 8, 100_000


def rows(port: int) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as resp:
        return list(json.loads(resp.read())["copies"])


def test_receiver_copy_queue_during_catch_up(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for i in range(1, SEGMENTS + 1):
        (source / segment_name(i)).write_bytes(bytes([i]) * SIZE)
    receiver = receiver_proc(tmp_path, secret, extra=["--admin", "127.0.0.1:0"]).start()
    # 1mbit: the 800 kB take about 6 s; --ack-timeout 3s makes the heartbeat interval 1 s.
    extra = ["--admin", "127.0.0.1:0", "--rate-limit", "1mbit", "--ack-timeout", "3s", "--seal-idle", "1"]
    shipper = shipper_proc(tmp_path, "db1", source, [receiver], secret, extra).start()
    procs += [receiver, shipper]
    port = receiver.admin_port()

    def behind() -> dict[str, Any] | None:
        found = rows(port)  # no row until the shipper attached
        return found[0] if found and found[0]["copy_queue_segments"] else None

    during = wait_until(behind, 30, interval=0.2, what="a copy queue on the receiver")
    assert 0 < during["copy_queue_bytes"] <= SEGMENTS * SIZE, during
    assert during["source_head"] == f"{segment_name(SEGMENTS)}@{SIZE}", during
    # The shipper's table shows the catch-up's rate and time to catch up meanwhile.
    state_dir = shipper.args[shipper.args.index("--state-dir") + 1]
    wait_until(lambda: ", ETA " in logship("status", "--state-dir", state_dir).stdout, 20, what="RATE / ETA")

    def caught_up() -> dict[str, Any] | None:
        row = rows(port)[0]
        return row if row["copy_queue_segments"] == 0 and row["last_copied"] == segment_name(SEGMENTS) else None

    done = wait_until(caught_up, 60, interval=0.3, what="the receiver's copy queue down to 0")
    assert done["copy_queue_bytes"] == 0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    assert 'logship_receiver_copy_queue_bytes{stream="db1"} 0' in metrics, metrics
    copied = tmp_path / "receiver" / "db1" / "log"
    for i in range(1, SEGMENTS + 1):
        assert (copied / segment_name(i)).read_bytes() == (source / segment_name(i)).read_bytes()


def test_shipper_copy_lag_survives_a_restart(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    # A target that is down: its copy lag is the age of the source's files, before and after a restart.
    source = tmp_path / "src"
    source.mkdir()
    for i in (1, 2):
        path = source / segment_name(i)
        path.write_bytes(bytes([i]) * 1000)
        os.utime(path, (time.time() - 600, time.time() - 600))
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    port = dead.getsockname()[1]
    try:
        for _ in range(2):
            shipper = shipper_proc(tmp_path, "db1", source, [port], secret, ["--admin", "127.0.0.1:0"]).start()
            procs.append(shipper)
            row = wait_until(lambda s=shipper: rows(s.admin_port())[0], 30, what="a status row")  # type: ignore[misc]
            assert row["state"] in ("Initializing", "Disconnected") and row["copy_lag_seconds"] >= 600, row
            shipper.stop()
    finally:
        dead.close()
