"""Status survives a shipper restart (kill -9 or SIGTERM): with its target down, a restarted shipper at
once shows the target's LAST COPIED (with its time), COPY QUEUE and REPLAY position from the state dir,
and its copy-queue series stay in /metrics; once the target answers, its own word replaces them."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers.copies import log_names
from tests.helpers.procs import Proc, ShipperProc, receiver_proc, shipper_proc
from tests.helpers.source import segment_name
from tests.helpers.waiting import wait_until

SIZE = 20_000


def fetch(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return str(resp.read().decode())


def row(shipper: ShipperProc) -> dict[str, Any]:
    return dict(json.loads(fetch(shipper.admin_port(), "/status"))["copies"][0])


def write(source: Path, first: int, last: int) -> None:
    for i in range(first, last + 1):
        (source / segment_name(i)).write_bytes(bytes([i]) * SIZE)


def test_status_survives_shipper_restart(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    source = tmp_path / "src"
    source.mkdir()
    write(source, 1, 3)
    receiver = receiver_proc(tmp_path, secret).start()
    shipper = shipper_proc(tmp_path, "db1", source, [receiver], secret, ["--admin", "127.0.0.1:0", "--seal-idle", "1"])
    procs += [receiver, shipper.start()]
    wait_until(lambda: len(log_names(tmp_path / "receiver" / "db1")) == 3, 30, what="3 segments copied")
    before = wait_until(
        lambda: (r := row(shipper))["last_copied"] == segment_name(3) and r["last_copied_at"] and r, 20, what="ACK"
    )
    state_file = Path(shipper.args[shipper.args.index("--state-dir") + 1]) / "status.json"
    wait_until(lambda: state_file.exists() and segment_name(3) in state_file.read_text(), 10, what="status kept")

    # The target goes down and the source grows: two segments queue up.
    receiver.stop()
    write(source, 4, 5)
    wait_until(lambda: row(shipper)["copy_queue_segments"] == 2, 20, what="a copy queue of 2")

    for how in ("kill -9", "SIGTERM"):
        shipper.kill9() if how == "kill -9" else shipper.stop()
        shipper.start()
        after = row(shipper)  # the first answer of the new process, before any target answered
        assert after["state"] in ("Initializing", "Disconnected"), (how, after)
        assert after["acked_proven"] is False, (how, after)
        assert after["last_copied"] == segment_name(3), (how, after)
        assert after["last_copied_at"] == before["last_copied_at"], (how, after)
        assert (after["copy_queue_segments"], after["copy_queue_bytes"]) == (2, 2 * SIZE), (how, after)
        metrics = fetch(shipper.admin_port(), "/metrics")
        line = f'logship_shipper_copy_queue_bytes{{stream="db1",target="{receiver.address}"}} {float(2 * SIZE)}'
        assert line in metrics, (how, metrics)
        assert after["copy_lag_seconds"] > 0, (how, after)

    # The target is back: its own ACKs replace the kept view, and the next restart keeps the new one.
    receiver.start()
    done = wait_until(
        lambda: (r := row(shipper))["last_copied"] == segment_name(5) and r["copy_queue_segments"] == 0 and r,
        30,
        what="caught up",
    )
    assert done["acked_proven"] is True
    wait_until(lambda: segment_name(5) in state_file.read_text(), 10, what="the new status kept")
    receiver.stop()
    shipper.kill9()
    shipper.start()
    again = row(shipper)
    assert again["last_copied"] == segment_name(5) and again["copy_queue_segments"] == 0, again
    assert again["last_copied_at"] == done["last_copied_at"], again
    # Start-up lines: a new data dir is announced at its first start only; each shipper start names its state dir.
    assert receiver.count("created new data dir") == 1 and receiver.starts == 2
    assert shipper.count(f"state dir {state_file.parent} (control socket") == shipper.starts == 4


def test_damaged_status_file_is_ignored(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    # The kept status is a display: a damaged file costs a warning and '-' cells, never the shipper.
    source = tmp_path / "src"
    source.mkdir()
    write(source, 1, 1)
    receiver = receiver_proc(tmp_path, secret).start()
    shipper = shipper_proc(tmp_path, "db1", source, [receiver], secret, ["--admin", "127.0.0.1:0"])
    state_dir = Path(shipper.args[shipper.args.index("--state-dir") + 1])
    state_dir.mkdir(mode=0o700)
    (state_dir / "status.json").write_text('{"targets": [{"stream": "db1"}]')
    procs += [receiver, shipper.start()]
    wait_until(lambda: row(shipper)["state"] == "Healthy", 20, what="Healthy")
    assert "ignoring the kept status" in shipper.log_text()
