"""A long activation says how far its replay is: the receiver logs `activation replaying: done X of Y
(N%), S seg left, RATE, ETA` every 5 s while the replay runs (a slow replay command, real processes)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers.cli import logship
from tests.helpers.copies import log_names
from tests.helpers.procs import Proc, receiver_proc, shipper_proc
from tests.helpers.source import segment_name
from tests.helpers.waiting import wait_until

SEGMENTS, SIZE = 6, 50_000


def test_activation_logs_its_replay_progress(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for i in range(1, SEGMENTS + 1):
        (source / segment_name(i)).write_bytes(os.urandom(SIZE))
    # Nothing replays before the activation (1h lag); then each segment takes 1.5 s: about 9 s in all.
    replay = ["--replay", "command", "--replay-command", "sleep 1.5; test -f {path}", "--replay-lag", "1h"]
    receiver = receiver_proc(tmp_path, secret, extra=replay).start()
    shipper = shipper_proc(tmp_path, "db1", source, [receiver], secret, ["--seal-idle", "1"])
    procs += [receiver, shipper.start()]
    wait_until(lambda: len(log_names(tmp_path / "receiver" / "db1")) == SEGMENTS, 30, what="the copy")
    shipper.stop()

    done = logship("activate", "--data-dir", str(tmp_path / "receiver"), "--stream", "db1", "--yes", timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [line for line in receiver.log_text().splitlines() if "activation replaying: done" in line]
    assert lines, receiver.log_text()
    assert all(f"of {SEGMENTS * SIZE / 1024:.1f} KiB" in line and "seg left" in line for line in lines), lines
    assert any("/s, ETA " in line for line in lines), lines
