"""SIGTERM stops a shipper promptly, even when it arrives while a connection is being torn down."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.helpers.procs import Proc, receiver_proc, shipper_proc
from tests.helpers.source import SourceWriter
from tests.helpers.waiting import wait_until

ROUNDS = 6


def test_sigterm_with_the_receiver_going_away_at_the_same_moment(
    tmp_path: Path, secret: Path, procs: list[Proc]
) -> None:
    # Both get SIGTERM together, as an init system stopping a host does: the shipper's connection
    # breaks while its own stop is under way. A swallowed cancellation left it reconnecting for ever.
    source = tmp_path / "src"
    source.mkdir()
    writer = SourceWriter(source, [4 << 20] * 200, rate=20e6, seed=11).start()
    try:
        for rnd in range(ROUNDS):
            receiver = receiver_proc(tmp_path, secret, name=f"receiver-{rnd}")
            procs.append(receiver.start())
            shipper = shipper_proc(tmp_path, "s", source, [receiver], secret)
            procs.append(shipper.start())
            wait_until(lambda r=receiver: "attached" in r.log_text(), 30, what="the shipper to attach")
            time.sleep(0.2 + 0.1 * rnd)  # somewhere in the middle of shipping
            assert receiver.popen is not None and shipper.popen is not None
            for p in (receiver, shipper):
                os.kill(p.pid, signal.SIGTERM)
            started = time.monotonic()
            try:
                code = shipper.popen.wait(10)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"round {rnd}: the shipper ignored SIGTERM for 10 s") from None
            assert code == 0, f"round {rnd}: shipper exit code {code}"
            assert time.monotonic() - started < 10
            receiver.popen.wait(10)
    finally:
        writer.stop()
