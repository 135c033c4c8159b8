"""``status`` on both sides with real processes: the same columns, ``--stream``, ``--watch`` and the exit
status scripts use (0 all Healthy, 1 any not, 2 cannot tell)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers.cli import COLUMNS, logship
from tests.helpers.copies import log_names
from tests.helpers.procs import ROOT, Proc, receiver_proc, shipper_proc
from tests.helpers.source import segment_name
from tests.helpers.waiting import wait_until


def test_status_exit_codes_filter_and_watch(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for i in (1, 2):
        (source / segment_name(i)).write_bytes(bytes([i]) * 10_000)
    receiver = receiver_proc(tmp_path, secret, extra=["--replay-lag", "1h30m"]).start()
    shipper = shipper_proc(tmp_path, "db1", source, [receiver], secret).start()
    procs += [receiver, shipper]
    state_dir, data = shipper.args[shipper.args.index("--state-dir") + 1], str(tmp_path / "receiver")
    wait_until(lambda: log_names(tmp_path / "receiver" / "db1") == [segment_name(1)], 30, what="the copy")
    wait_until(lambda: logship("status", "--state-dir", state_dir).returncode == 0, 20, what="shipper Healthy")
    wait_until(lambda: logship("status", "--data-dir", data).returncode == 0, 20, what="receiver Healthy")

    # The same column names on both sides; the receiver shows its configured replay lag beside the wait.
    ship, recv = logship("status", "--state-dir", state_dir), logship("status", "--data-dir", data)
    for out in (ship, recv):
        header = next(line for line in out.stdout.splitlines() if line.startswith("STREAM"))
        assert all(column in header for column in COLUMNS), out.stdout
    assert "(lag 1h30m)" in recv.stdout and "1 seg, 9.8 KiB" in recv.stdout, recv.stdout

    # --stream: a stream that is not there is "cannot tell".
    assert logship("status", "--state-dir", state_dir, "--stream", "db1").returncode == 0
    other = logship("status", "--data-dir", data, "--stream", "nosuch")
    assert other.returncode == 2 and "no copy of stream 'nosuch'" in other.stderr
    assert logship("status", "--state-dir", state_dir, "--stream", "nosuch").returncode == 2

    # --watch with --count: that many looks, then the last exit status (not a terminal: a line per look).
    watched = logship("status", "--state-dir", state_dir, "--watch", "200ms", "--count", "3")
    assert watched.returncode == 0 and watched.stdout.count("stream=db1 ") == 3, watched.stdout
    # Ctrl-C ends an endless --watch cleanly.
    live = subprocess.Popen(
        [sys.executable, "-m", "logship.command", "status", "--data-dir", data, "--watch", "0.2"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: live.poll() is None and (Path(data) / "control.sock").exists(), 10, what="watch running")
    try:
        live.stdout.readline()  # type: ignore[union-attr]
        live.send_signal(signal.SIGINT)
        out, err = live.communicate(timeout=10)
    finally:
        live.kill()
    assert live.returncode == 0 and "Traceback" not in err, err

    # A suspended target is not Healthy: exit 1, with the reason in the REASON column.
    assert logship("suspend", "--state-dir", state_dir, "--stream", "db1", "--target", receiver.address).returncode == 0
    suspended = logship("status", "--state-dir", state_dir)
    assert suspended.returncode == 1 and "suspended: (no comment)" in suspended.stdout, suspended.stdout
    # No shipper: cannot tell. A receiver whose shipper went away: its copy is Disconnected.
    assert shipper.stop() == 0
    assert logship("status", "--state-dir", state_dir).returncode == 2
    wait_until(lambda: logship("status", "--data-dir", data).returncode == 1, 20, what="receiver Disconnected")
    assert receiver.stop() == 0
    offline = logship("status", "--data-dir", data)
    assert offline.returncode == 1 and "Disconnected" in offline.stdout and "no receiver running" in offline.stdout
    assert logship("status", "--data-dir", str(tmp_path / "nosuch")).returncode == 2
