"""MariaDB binlog shipping against real servers: a primary with --log-bin and small --max-binlog-size, a
standby with no replication of its own, the receiver replaying each binlog with
``mariadb-binlog | mariadb`` and the shipper sealing with ``--seal closed``.

Rows are counted and checksummed in the real databases, copies compared byte for byte with the source
binlogs, and the receiver really killed (kill -9) while its replay command runs. LOGSHIP_HEAVY=1 makes
the kill test aim ten kills instead of three.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from receiver.replay_run import RUN_FILE, RunRecord, process_start
from tests.helpers.copies import digest_file
from tests.helpers.mariadb import MariaDB, why_unavailable
from tests.helpers.procs import ReceiverProc, ShipperProc, receiver_proc, shipper_proc
from tests.helpers.source import ROOT, make_secret
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.skipif(why_unavailable() is not None, reason=why_unavailable() or "")

STREAM = "mdb"
PATTERN = r"mysql-bin\.[0-9]{6}"
CHANGED = "changed on the source after it was sealed"
KILLS = 10 if os.environ.get("LOGSHIP_HEAVY") else 3


def replay_command(standby: MariaDB) -> str:
    # bash for pipefail: a mariadb-binlog that fails must fail the replay, not feed mariadb nothing.
    client = f"mariadb --no-defaults -uroot --socket={standby.socket}"
    return f"bash -o pipefail -c 'mariadb-binlog \"$LOGSHIP_PATH\" | {client}'"


@dataclass
class Rig:
    root: Path
    primary: MariaDB
    standby: MariaDB
    receiver: ReceiverProc
    shipper: ShipperProc
    rows: int = 0

    @property
    def copy_dir(self) -> Path:
        return self.root / "receiver" / STREAM

    def insert(self, rows: int, per_txn: int = 100) -> None:
        """Insert ``rows`` rows in transactions of ``per_txn`` through one client session."""
        sql = []
        for start in range(self.rows, self.rows + rows, per_txn):
            values = ",".join(
                f"({i}, 'row {i} {'x' * 40}')" for i in range(start, min(start + per_txn, self.rows + rows))
            )
            sql.append(f"BEGIN; INSERT INTO app.t VALUES {values}; COMMIT;")
        subprocess.run([*self.primary.client()], input="\n".join(sql), text=True, check=True, timeout=120)
        self.rows += rows

    def rotate(self) -> None:
        self.primary.query("FLUSH BINARY LOGS")

    def state(self) -> dict[str, object]:
        path = self.copy_dir / "state.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def converged(self) -> bool:
        return self.standby.try_query("SELECT COUNT(*) FROM app.t") == str(self.rows)

    def wait_converged(self, timeout: float = 60) -> float:
        began = time.monotonic()
        wait_until(self.converged, timeout, 0.1, f"{self.rows} rows on the standby")
        return time.monotonic() - began

    def check_same(self) -> None:
        assert self.standby.query("SELECT COUNT(*) FROM app.t") == self.primary.query("SELECT COUNT(*) FROM app.t")
        checksum = "CHECKSUM TABLE app.t"
        assert self.standby.query(checksum) == self.primary.query(checksum)
        assert not self.state().get("replay_failed"), self.state()

    def quarantined(self) -> list[str]:
        """What quarantine/ holds (each entry with its .reason file counted once)."""
        q = self.copy_dir / "quarantine"
        return sorted(p.name for p in q.iterdir() if not p.name.endswith(".reason")) if q.exists() else []

    def bytes_sent(self) -> int:
        port = self.shipper.admin_port()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as resp:
            return int(json.loads(resp.read())["copies"][0]["bytes_sent"])

    def source_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.primary.binlogs())

    def check_copies(self) -> int:
        """Every binlog in log/ equals its source byte for byte; return how many there are."""
        copies = sorted(p for p in (self.copy_dir / "log").iterdir() if re.fullmatch(PATTERN, p.name))
        for copy in copies:
            assert digest_file(copy) == digest_file(self.primary.binlog_dir / copy.name), copy.name  # type: ignore[operator]
        return len(copies)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    root = Path(tmp_path)
    primary = MariaDB(root, "primary", binlog_dir=root / "binlog", max_binlog_size=16384).install()
    standby = MariaDB(root, "standby").install()
    secret = make_secret(root / "secret")
    procs: list[ReceiverProc | ShipperProc] = []
    try:
        primary.start()
        standby.start()
        primary.query("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB")
        receiver = receiver_proc(
            root,
            secret,
            extra=["--replay", "command", "--replay-command", replay_command(standby), "--replay-retries", "4"],
        )
        procs.append(receiver.start())
        shipper = shipper_proc(
            root,
            STREAM,
            root / "binlog",
            [receiver],
            secret,
            extra=["--pattern", PATTERN, "--seal", "closed", "--admin", "127.0.0.1:0"],
        )
        procs.append(shipper.start())
        yield Rig(root, primary, standby, receiver, shipper)
    finally:
        for proc in reversed(procs):
            proc.stop()
        kill_wrappers(root / "receiver" / STREAM)
        primary.stop()
        standby.stop()


def kill_wrappers(copy_dir: Path) -> None:
    """End a replay wrapper a test left running (by the pid its run record names)."""
    rec = RunRecord.from_bytes((copy_dir / RUN_FILE).read_bytes()) if (copy_dir / RUN_FILE).exists() else None
    if rec is not None and rec.pid and rec.state == "running" and process_start(rec.pid) == rec.start:
        os.killpg(rec.pid, signal.SIGKILL)


def test_thousands_of_rows_over_many_rotations_match_and_copies_are_identical(rig: Rig) -> None:
    began = time.monotonic()
    rig.insert(3000)
    rig.rotate()
    took = rig.wait_converged()
    rig.check_same()
    copies = rig.check_copies()
    rotations = len(rig.primary.binlogs()) - 1
    assert rotations >= 10, rotations
    assert copies >= rotations
    assert rig.shipper.count(CHANGED) == 0
    assert rig.quarantined() == []
    print(
        f"\n3000 rows, {rotations} rotations, {copies} copies identical; converged {took:.1f}s after the last "
        f"insert ({time.monotonic() - began:.1f}s in all)"
    )


def wait_for_a_replay_running(rig: Rig, after: tuple[str, int] | None, timeout: float = 30) -> RunRecord:
    """Return the run record once a replay command other than ``after`` has started (polled every 5 ms)."""
    run_file = rig.copy_dir / RUN_FILE

    def running() -> RunRecord | None:
        try:
            rec = RunRecord.from_bytes(run_file.read_bytes())
        except FileNotFoundError:
            return None
        if rec is None or rec.state != "running" or (rec.segment, rec.attempt) == after:
            return None
        return rec

    return wait_until(running, timeout, 0.005, "a replay command to start")


def test_kill_9_of_the_receiver_during_replay_commands_applies_no_binlog_twice(rig: Rig) -> None:
    last: tuple[str, int] | None = None
    aimed = 0
    began = time.monotonic()
    for _ in range(KILLS):
        rig.insert(300)
        rig.rotate()
        rec = wait_for_a_replay_running(rig, last)
        rig.receiver.kill9()
        last = (rec.segment, rec.attempt)
        # Aimed: the command was running when the receiver died (it goes on under its wrapper).
        aimed += process_start(rec.pid or 0) == rec.start
        rig.receiver.start()
    took = rig.wait_converged(90)
    rig.check_same()
    rig.check_copies()
    quarantined = rig.quarantined()
    assert quarantined == []  # a restarted receiver still takes the rewrites: the shipper remembers what it sent
    log = rig.receiver.log_text()
    assert "Duplicate entry" not in log and "replay Failed" not in log
    assert aimed >= 1, "no kill landed while a replay command ran"
    # Each of those commands was waited for or its recorded result taken, never run a second time.
    assert log.count("finished while no receiver watched it (exit 0); taking its result") >= aimed
    print(
        f"\n{KILLS} kills of the receiver ({aimed} during a running replay command), {rig.rows} rows; "
        f"converged {took:.1f}s after the last restart ({time.monotonic() - began:.1f}s in all); "
        f"{rig.receiver.count('rewritten in the copy')} rewritten at rotation, {len(quarantined)} quarantined"
    )


def test_a_standby_down_for_5s_is_waited_for_with_back_off(rig: Rig) -> None:
    rig.insert(300)
    rig.rotate()
    rig.wait_converged()
    rig.standby.stop()
    down = time.monotonic()
    for _ in range(3):
        rig.insert(200)
        rig.rotate()
        time.sleep(0.5)
    time.sleep(max(0.0, 5.0 - (time.monotonic() - down)))
    rig.standby.start()
    took = rig.wait_converged(60)
    rig.check_same()
    copies = rig.check_copies()
    # Binlogs shipped while they grew had their in-use flag cleared at rotation: rewritten in the copy
    # before their SEAL, not quarantined and fetched again (issue 20).
    assert rig.quarantined() == []
    rewritten = rig.receiver.count("rewritten in the copy")
    sent, source = rig.bytes_sent(), rig.source_bytes()
    log = rig.receiver.log_text()
    attempts = [int(n) for n in re.findall(r"failed \(attempt (\d+) of 5\)", log)]
    assert attempts, "the replay never met the stopped standby"
    assert max(attempts) <= 4 and "replay Failed" not in log
    assert sent <= source * 1.35, (sent, source)  # binlogs of 16 KiB: a 4 KiB rewrite is a quarter of one
    print(
        f"\nstandby down {time.monotonic() - down - took:.1f}s: {len(attempts)} failed attempts (at most "
        f"{max(attempts)} for one binlog), converged {took:.1f}s after it came back; {copies} binlogs in log/, "
        f"{len(rig.primary.binlogs()) - 1} rotations, {rewritten} rewritten at rotation, 0 quarantined; "
        f"bytes_sent {sent} for {source} source bytes ({sent / source:.2f}x)"
    )


def test_activation_makes_the_standby_writable_with_every_committed_row(rig: Rig) -> None:
    rig.standby.query("SET GLOBAL read_only = ON")
    rig.insert(500)
    rig.rotate()
    rig.wait_converged()
    rig.insert(150)  # in the active binlog only: it reaches the receiver as the partial
    active = rig.primary.binlogs()[-1]
    partial = rig.copy_dir / "incoming" / f"{active.name}.partial"
    wait_until(lambda: partial.exists() and partial.stat().st_size == active.stat().st_size, 30, 0.05, "the partial")
    rig.primary.popen.kill()  # type: ignore[union-attr]  # the primary is lost
    rig.primary.popen.wait(10)  # type: ignore[union-attr]
    rig.shipper.stop()
    rig.receiver.stop()
    client = f"mariadb --no-defaults -uroot --socket={rig.standby.socket}"
    hook = (
        f'bash -o pipefail -c \'mariadb-binlog "$LOGSHIP_TAIL" | {client} && {client} -e "SET GLOBAL read_only = OFF"\''
    )

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "receiver",
            "activate",
            "--data-dir",
            str(rig.root / "receiver"),
            "--stream",
            STREAM,
            "--replay",
            "command",
            "--replay-command",
            replay_command(rig.standby),
            "--on-activate",
            hook,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert rig.standby.query("SELECT COUNT(*) FROM app.t") == str(rig.rows)
    assert rig.standby.query("SELECT @@read_only") == "0"
    rig.standby.query("INSERT INTO app.t VALUES (1000000, 'written on the new primary')")
    assert rig.standby.query("SELECT COUNT(*) FROM app.t") == str(rig.rows + 1)
