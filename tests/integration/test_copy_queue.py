"""The receiver shows a copy queue: the shipper sends its source head and its copy queue in every
HEARTBEAT (every heartbeat interval, busy or idle), so the copy's side knows how far behind it is
during a catch-up, and shows 0 once it has everything."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

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

    def caught_up() -> dict[str, Any] | None:
        row = rows(port)[0]
        return row if row["copy_queue_segments"] == 0 and row["last_copied"] == segment_name(SEGMENTS) else None

    done = wait_until(caught_up, 60, interval=0.3, what="the receiver's copy queue down to 0")
    assert done["copy_queue_bytes"] == 0
    copied = tmp_path / "receiver" / "db1" / "log"
    for i in range(1, SEGMENTS + 1):
        assert (copied / segment_name(i)).read_bytes() == (source / segment_name(i)).read_bytes()
