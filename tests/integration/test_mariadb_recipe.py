"""docs/mariadb.md followed as written: its shell blocks run verbatim against real MariaDB servers, with
the doc's variables set to a scratch directory and 127.0.0.1 addresses.

Only what the recipe leaves to the reader is done outside it: the two servers' data directories
(installed empty, on unix sockets, see tests/helpers/mariadb.py), ``systemctl restart mariadb`` (the
test restarts its own server with the option file the block wrote), the listening address, the rows,
the kills and the checks. The recover command is tested for real: the receiver and the whole process
group of its replay command are killed part-way through a binlog of many transactions; the restarted
receiver runs the doc's recover command, and the standby ends with the primary's rows, checksum and
GTID position, then is activated and takes writes under its own server id.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from receiver.replay_run import RUN_FILE, RunRecord, process_start
from tests.helpers.copies import digest_file
from tests.helpers.mariadb import MariaDB, why_unavailable
from tests.helpers.recipe import Recipe, sh_blocks
from tests.helpers.source import ROOT
from tests.helpers.waiting import wait_until

DOC = ROOT / "docs" / "mariadb.md"
RESTART = "systemctl restart mariadb"
STREAM = "mdb"

pytestmark = pytest.mark.skipif(why_unavailable() is not None, reason=why_unavailable() or "")


def is_daemon(line: str) -> bool:
    return line.startswith(("$PY -m receiver --listen", "$PY -m shipper --stream"))


def blocks(heading: str) -> list[str]:
    return sh_blocks(DOC, heading)


def run_restarting(recipe: Recipe, block: str, server: MariaDB) -> None:
    """Run ``block`` with its ``systemctl restart mariadb`` line done by the test on ``server``."""
    assert RESTART in block, block
    recipe.run(block.replace(RESTART, ""))
    server.restart()


def insert(server: MariaDB, first: int, rows: int, per_txn: int) -> None:
    sql = []
    for start in range(first, first + rows, per_txn):
        values = ",".join(f"({i}, 'row {i}')" for i in range(start, min(start + per_txn, first + rows)))
        sql.append(f"INSERT INTO app.t VALUES {values};")
    subprocess.run(server.client(), input="\n".join(sql), text=True, check=True, timeout=300)


def count(server: MariaDB) -> int | None:
    found = server.try_query("SELECT COUNT(*) FROM app.t")
    return int(found) if found and found.isdigit() else None


def same(primary: MariaDB, standby: MariaDB) -> None:
    for sql in ("SELECT COUNT(*) FROM app.t", "CHECKSUM TABLE app.t", "SELECT @@gtid_binlog_pos"):
        assert standby.query(sql) == primary.query(sql), sql


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    yield Path(tmp_path)


def test_the_recipe_as_written_and_its_gtid_recover_command(scratch: Path) -> None:
    root = scratch
    primary = MariaDB(root, "primary", binlog_dir=root / "binlog", config=root / "primary.cnf").install()
    standby = MariaDB(root, "standby", config=root / "standby.cnf").install()
    data_dir = root / "logship"
    copy_dir = data_dir / STREAM
    recipe = Recipe(
        root,
        DOC,
        {
            "PY": sys.executable,
            "BINLOG_DIR": str(root / "binlog"),
            "PRIMARY_CNF": str(root / "primary.cnf"),
            "SECRET": str(root / "etc" / "mdb.secret"),
            "RECEIVER": "127.0.0.1:0",  # set to the receiver's port once it reports it
            "STANDBY_CNF": str(root / "standby.cnf"),
            "STANDBY_SOCKET": str(standby.socket),
            "DATA_DIR": str(data_dir),
            "APPLY": str(root / "mdb-apply"),
        },
        is_daemon,
        env={"LOGSHIP_SHIPPER_STATE_DIR": str(root / "shipper-state")},
    )
    try:
        recipe.run(blocks("## The variables")[1])  # the secret
        (block,) = blocks("## 1.")
        run_restarting(recipe, block, primary)
        (block,) = blocks("## 2.")
        run_restarting(recipe, block, standby)
        assert standby.query("SELECT @@read_only, @@gtid_strict_mode, @@log_bin, @@server_id") == "1\t1\t1\t2"
        for block in blocks("## 3."):
            recipe.run(block)
        receiver_line = recipe.daemon_lines[-1]
        (block,) = blocks("## 4.")
        recipe.run(block)

        primary.query("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB")
        insert(primary, 0, 500, per_txn=100)
        primary.query("FLUSH BINARY LOGS")
        wait_until(lambda: count(standby) == 500, 90, 0.1, "500 rows on the standby")
        same(primary, standby)

        # The interrupted run: one binlog of 2,000 one-row transactions, and the receiver plus the whole
        # process group of its replay command killed while the standby holds only part of it.
        insert(primary, 500, 2000, per_txn=1)
        binlog = primary.binlogs()[-1].name
        primary.query("FLUSH BINARY LOGS")
        run_file = copy_dir / RUN_FILE

        def running() -> RunRecord | None:
            rec = RunRecord.from_bytes(run_file.read_bytes()) if run_file.exists() else None
            ok = rec is not None and rec.segment == binlog and rec.state == "running"
            return rec if ok and 500 < (count(standby) or 0) < 2500 else None

        rec = wait_until(running, 90, 0.01, f"the replay of {binlog} half-way")
        recipe.daemons[0].kill()
        recipe.daemons[0].wait(10)
        assert rec.pid is not None and process_start(rec.pid) == rec.start
        os.killpg(rec.pid, signal.SIGKILL)
        wait_until(lambda: process_start(rec.pid or 0) != rec.start, 10, 0.05, "the replay command's group to end")
        applied = count(standby) or 0
        assert 500 < applied < 2500, applied  # part of the binlog: a plain rerun would give ERROR 1062
        began = time.monotonic()
        recipe.start_daemon(receiver_line)
        wait_until(lambda: count(standby) == 2500, 120, 0.1, "2500 rows on the standby")
        took = time.monotonic() - began
        same(primary, standby)
        log = recipe.daemon_logs()
        assert f"replay of {binlog} was interrupted" in log, log[-3000:]
        for bad in ("Duplicate entry", "ERROR 1950", "replay Failed", "changed on the source after it was sealed"):
            assert bad not in log, bad
        for copy in sorted((copy_dir / "log").glob("mysql-bin.0*")):
            assert digest_file(copy) == digest_file(root / "binlog" / copy.name), copy.name

        # Activation (section 5): the primary is lost with rows only in its active binlog.
        insert(primary, 2500, 100, per_txn=10)
        last_gtid = primary.query("SELECT @@gtid_binlog_pos")
        active = primary.binlogs()[-1]
        partial = copy_dir / "incoming" / f"{active.name}.partial"
        wait_until(
            lambda: partial.exists() and partial.stat().st_size == active.stat().st_size, 60, 0.05, "the partial"
        )
        primary.kill9()
        recipe.stop()
        (block,) = blocks("## 5.")
        report = recipe.run(block)
        assert "acknowledged data missing: NO" in report and re.search(r"on-activate hook:\s+exit 0", report), report
        assert count(standby) == 2600
        assert standby.query("SELECT @@gtid_binlog_pos") == last_gtid
        assert standby.query("SELECT @@read_only") == "0"
        standby.query("INSERT INTO app.t VALUES (1000000, 'written on the new primary')")
        seq = int(last_gtid.split("-")[2])
        assert standby.query("SELECT @@gtid_binlog_pos") == f"0-2-{seq + 1}"
        print(
            f"\nrecover: killed with {applied - 500} of 2000 transactions of {binlog} applied; the recover "
            f"command converged {took:.1f}s after the restart; activated at {last_gtid}, then 0-2-{seq + 1}"
        )
    finally:
        recipe.stop()
        rec = RunRecord.from_bytes(run_file.read_bytes()) if (run_file := copy_dir / RUN_FILE).exists() else None
        if rec is not None and rec.pid and rec.state == "running" and process_start(rec.pid) == rec.start:
            os.killpg(rec.pid, signal.SIGKILL)
        primary.stop()
        standby.stop()
