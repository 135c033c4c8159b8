"""The PostgreSQL figure of ``scripts/bench wait``: commits per second of a pgbench insert loop with
the recipe's plain atomic archive_command, then with the one that waits until the standby holds each
WAL file (docs/postgresql.md), archive_timeout 1 s, one cluster and one shipper in the same run."""

from __future__ import annotations

import re
import shutil
import time

from benchmarks.common import Receiver
from tests.helpers.pgcluster import (
    Cluster,
    atomic_archive_command,
    find_pg_bin,
    give_to_pg_user,
    quote,
    run,
    scratch_dir,
    why_unavailable,
)
from tests.helpers.pgwait import PgUserShipper, shipper_config, waiting_archive_command
from tests.helpers.procs import Proc
from tests.helpers.source import make_secret
from tests.helpers.waiting import wait_until

INSERT = "INSERT INTO t (v) VALUES (repeat('x', 100));\n"


def commits_per_second(seconds: int) -> tuple[list[tuple[str, str]], str | None]:
    """Return (figure rows, None) or ([], why it cannot run here)."""
    why = why_unavailable()
    if why is not None:
        return [], why
    pg_bin = find_pg_bin()
    assert pg_bin is not None
    root = scratch_dir("logship-bench-pgwait-")
    archive = root / "archive"
    archive.mkdir()
    give_to_pg_user(archive)
    secret = make_secret(root / "secret")
    give_to_pg_user(secret)
    primary = Cluster(pg_bin, root / "primary", 5450, root)
    procs: list[Proc] = []
    rows: list[tuple[str, str]] = []
    try:
        data = root / "receiver"
        receiver = Receiver(["--data-dir", str(data), "--secret-file", str(secret)], root / "receiver.log").start()
        procs.append(receiver)
        config = shipper_config(root, archive, secret, receiver.address)
        procs.append(PgUserShipper("shipper", ["--config", str(config)], root / "shipper.log").start())
        wait_until(lambda: (root / "shipper-state" / "control.sock").exists(), 30, what="the shipper")
        primary.initdb()
        plain = atomic_archive_command(archive)
        primary.configure(
            {**primary.base_settings(), "archive_mode": "on", "archive_command": plain, "archive_timeout": "1s"}
        )
        primary.start()
        primary.psql("CREATE TABLE t (id bigserial, v text)")
        script = root / "insert.sql"
        script.write_text(INSERT)
        give_to_pg_user(script)
        tps = {}
        waiting = waiting_archive_command(archive, config, 60)
        # Plain again at the end: the machine is shared, and the spread of the two plain runs says how
        # much of a difference is the machine's.
        for label, command in (("plain", plain), ("waiting", waiting), ("plain again", plain)):
            primary.psql(f"ALTER SYSTEM SET archive_command = {quote(command)}")
            primary.psql("SELECT pg_reload_conf()")
            before = _archiver(primary)
            argv = [primary.bin("pgbench"), "-n", "-T", str(seconds), "-c", "1", "-f", str(script)]
            argv += ["-h", str(root), "-p", str(primary.port), "-U", "postgres", "postgres"]
            out = run(argv, timeout=seconds + 120)
            m = re.search(r"tps = ([0-9.]+)", out)
            tps[label] = float(m.group(1)) if m else float("nan")
            # Archiving may lag the last switch: give it a moment, then count what it did in the run.
            time.sleep(2)
            after = _archiver(primary)
            rows.append(
                (
                    f"pgbench insert loop, {seconds} s, archive_command {label}",
                    f"{tps[label]:.0f} commits/s; archived {after[0] - before[0]} WAL files, "
                    f"{after[1] - before[1]} failures",
                )
            )
        base = (tps["plain"] + tps["plain again"]) / 2
        rows.append(
            ("commits/s with the waiting archive_command / plain (mean of both)", f"{tps['waiting'] / base:.2f} x")
        )
    finally:
        primary.stop()
        for proc in procs:
            proc.stop(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
    return rows, None


def _archiver(primary: Cluster) -> tuple[int, int]:
    archived, failed = primary.psql("SELECT archived_count, failed_count FROM pg_stat_archiver").split("|")
    return int(archived), int(failed)
