"""Retention waits for replay where the target replays, and the shipper's status shows each
target's replay queue from the replayed position in its ACKs (real processes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.helpers.cli import row, shipper_cli
from tests.helpers.copies import log_names
from tests.helpers.procs import Proc, receiver_proc, shipper_proc
from tests.helpers.source import segment_name, write_recorded
from tests.helpers.waiting import wait_until


def test_retention_waits_for_replay_and_status_shows_the_replay_queue(
    tmp_path: Path, secret: Path, procs: list[Proc]
) -> None:
    quick = receiver_proc(tmp_path, secret, name="quick").start()
    # The delayed standby replays nothing for an hour: it holds the source's segments. It is restarted
    # below, on the port its first start reported.
    delayed = receiver_proc(tmp_path, secret, name="delayed", extra=["--replay-lag", "1h"]).start()
    procs += [quick, delayed]
    ports = [quick.port, delayed.port]
    source, state_dir = tmp_path / "src", tmp_path / "state"
    source.mkdir()
    digests: dict[str, str] = {}
    write_recorded(source, digests, 1, 4)
    procs.append(
        shipper_proc(tmp_path, "db1", source, ports, secret, ["--state-dir", str(state_dir), "--retain"]).start()
    )
    t_quick, t_delayed = (f"127.0.0.1:{p}" for p in ports)
    sealed = [segment_name(i) for i in range(1, 4)]
    for name in ("quick", "delayed"):
        wait_until(lambda n=name: log_names(tmp_path / n / "db1") == sealed, 30, what=f"{name} copy")  # type: ignore[misc]

    def replayed(target: str, segment: str | None, queue: int) -> bool:
        out = shipper_cli("status", "--state-dir", str(state_dir), "--json")
        if out.returncode not in (0, 1):
            return False
        r = row(json.loads(out.stdout), "db1", target)
        return r["last_replayed"] == segment and r["replay_queue_segments"] == queue

    wait_until(lambda: replayed(t_quick, segment_name(3), 0), 30, what="quick replayed, as its ACKs say")
    wait_until(lambda: replayed(t_delayed, None, 3), 30, what="delayed's replay queue of 3")
    r = row(json.loads(shipper_cli("status", "--state-dir", str(state_dir), "--json").stdout), "db1", t_delayed)
    assert r["retention"] == "holds: not yet replayed there" and r["replay_queue_bytes"] == 3 * 150_000, r
    assert sorted(os.listdir(source)) == [segment_name(i) for i in range(1, 5)]
    # The delayed standby, restarted without its lag, replays; then the source lets the segments go.
    delayed.stop()
    delayed.args = delayed.args[: delayed.args.index("--replay-lag")]
    procs.append(delayed.start())
    wait_until(lambda: sorted(os.listdir(source)) == [segment_name(4)], 30, what="retention after replay")
    assert sorted(os.listdir(tmp_path / "delayed" / "db1" / "replica")) == sealed
