"""A real PostgreSQL standby fed by logship alone, and promoted on activation (docs/postgresql.md).

One scenario, set up once for the module and walked through in order by the tests:
- the primary archives WAL with an atomic archive_command into an archive directory; one shipper ships
  that directory (--seal immediate) as two streams, ``pg`` (WAL segments and timeline history files) and
  ``pg-backup`` (backup history files), to two receivers: A replays at once, B with --replay-lag;
- standbys A and B are one pg_basebackup (-X none: every WAL byte they replay came through logship),
  with standby.signal and restore_command reading the receiver's replica, and no primary_conninfo;
- the primary was itself promoted once (timeline 2), so its archive has a 00000002.history file that the
  standbys need and fetch through logship.

Run with ``-s`` to see the figures (how long rows took to reach the standbys).
"""

from __future__ import annotations

import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.copies import digest_file
from tests.helpers.pgcluster import (
    BACKUP_PATTERN,
    WAL_PATTERN,
    Cluster,
    archive_dir,
    as_pg_user,
    make_standby,
    scratch,
    why_unavailable,
)
from tests.helpers.procs import Proc, receiver_proc
from tests.helpers.source import ROOT, make_secret
from tests.helpers.waiting import wait_until

REPLAY_LAG = 20.0
"""Replay lag of standby B, seconds: long enough to observe, short enough for the CI budget."""

pytestmark = pytest.mark.skipif(why_unavailable() is not None, reason=why_unavailable() or "")


@dataclass
class Scenario:
    root: Path
    archive: Path
    primary: Cluster
    standby_a: Cluster
    standby_b: Cluster
    receiver_a: Proc
    receiver_b: Proc
    shipper: Proc
    procs: list[Proc] = field(default_factory=list)
    figures: dict[str, list[float]] = field(default_factory=dict)

    def copy(self, receiver: str, stream: str, sub: str) -> Path:
        return self.root / receiver / stream / sub


def shipper_config(root: Path, archive: Path, secret: Path, ports: list[int]) -> Path:
    targets = "".join(f'\n[[stream.target]]\naddress = "127.0.0.1:{p}"\n' for p in ports)
    text = f'node = "pg-primary"\nstate_dir = "{root / "shipper-state"}"\n'
    for name, pattern in (("pg", WAL_PATTERN), ("pg-backup", BACKUP_PATTERN)):
        text += (
            f'\n[[stream]]\nname = "{name}"\nsource = "{archive}"\nsecret_file = "{secret}"\n'
            f"seal = \"immediate\"\npattern = '{pattern}'\n{targets}"
        )
    path = root / "shipper.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def pg() -> Iterator[Scenario]:
    with scratch("logship-pg-") as root:
        archive = archive_dir(root)
        secret = make_secret(root / "secret")
        # Unix sockets only, in root: the ports just name each cluster's socket there (see pgcluster).
        primary = Cluster.under(root, "primary", 5432)
        standby_a = Cluster.under(root, "standby-a", 5433)
        standby_b = Cluster.under(root, "standby-b", 5434)
        clusters = [primary, standby_a, standby_b]
        procs: list[Proc] = []
        try:
            receiver_a = receiver_proc(root, secret, name="receiver-a", extra=["--umask", "022"]).start()
            procs.append(receiver_a)
            lag = ["--replay-lag", f"{REPLAY_LAG:.0f}s"]
            receiver_b = receiver_proc(root, secret, name="receiver-b", extra=[*lag, "--umask", "022"]).start()
            procs.append(receiver_b)
            config = shipper_config(root, archive, secret, [receiver_a.port, receiver_b.port])
            shipper = Proc("shipper", ["--config", str(config)], root / "shipper.log").start()
            procs.append(shipper)

            primary.init_primary(archive)
            # Promote the fresh cluster once, so that its archive gets a timeline history file, like any
            # primary that was once a standby: 00000002.history, which the standbys must fetch.
            primary.touch("standby.signal")
            primary.start()
            primary.promote()
            wait_until(lambda: (archive / "00000002.history").exists(), 30, what="00000002.history archived")

            base = root / "base"
            primary.base_backup(base)
            make_standby(base, standby_a, root / "receiver-a" / "pg" / "replica")
            make_standby(base, standby_b, root / "receiver-b" / "pg" / "replica")
            standby_a.start()
            # pg_ctl -w would wait until B is consistent, which is REPLAY_LAG away: start it unwaited.
            standby_b.start(wait=False)
            yield Scenario(root, archive, primary, standby_a, standby_b, receiver_a, receiver_b, shipper, procs)
        finally:
            for cluster in reversed(clusters):
                cluster.stop()
            for proc in procs:
                proc.stop(timeout=10)


def insert_and_time(primary: Cluster, standby: Cluster, row: int, timeout: float) -> float:
    """Insert ``row`` on the primary; return the seconds from its commit until the standby shows it."""
    primary.psql(f"INSERT INTO shipped (id) VALUES ({row})")
    committed = time.monotonic()
    wait_until(
        lambda: standby.try_psql(f"SELECT count(*) FROM shipped WHERE id = {row}") == "1",
        timeout,
        interval=0.1,
        what=f"row {row} on the standby",
    )
    return time.monotonic() - committed


def test_rows_reach_the_hot_standby_through_logship_alone(pg: Scenario) -> None:
    primary, standby = pg.primary, pg.standby_a
    # No streaming replication anywhere: the standby has no primary_conninfo, no WAL receiver runs,
    # and the primary has no replication client.
    assert standby.psql("SHOW primary_conninfo") == ""
    assert standby.psql("SELECT pg_is_in_recovery()") == "t"
    primary.psql("CREATE TABLE shipped (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
    delays = [insert_and_time(primary, standby, row, timeout=90) for row in range(1, 9)]
    assert standby.psql("SELECT count(*) FROM pg_stat_wal_receiver") == "0"
    assert primary.psql("SELECT count(*) FROM pg_stat_replication") == "0"
    assert standby.psql("SELECT string_agg(id::text, ',' ORDER BY id) FROM shipped") == "1,2,3,4,5,6,7,8"
    pg.figures["rows to standby A, s"] = delays
    # logship's own part: from the archive_command's copy to the file in the standby's restore directory
    # (each file's mtime is its last write: the copy before its fsync and rename, at both ends).
    replica = pg.copy("receiver-a", "pg", "replica")
    hops = [
        (replica / name).stat().st_mtime - (pg.archive / name).stat().st_mtime
        for name in sorted(os.listdir(replica))
        if re.fullmatch(WAL_PATTERN, name)
    ]
    assert hops and min(hops) > -0.5
    print(
        f"\nfigure: commit on the primary -> visible on the hot standby through logship, {len(delays)} rows: "
        f"min {min(delays):.2f} s, median {statistics.median(delays):.2f} s, max {max(delays):.2f} s "
        f"(archive_timeout 1s, wal_retrieve_retry_interval 500ms)\n"
        f"figure: archived file -> verified, fsynced, in replica/ at the receiver, {len(hops)} files: "
        f"median {statistics.median(hops) * 1000:.0f} ms, max {max(hops) * 1000:.0f} ms"
    )


def test_history_and_backup_files_pass_through(pg: Scenario) -> None:
    # The timeline history file travels in the WAL stream and the standby fetched it from there.
    history = pg.copy("receiver-a", "pg", "replica") / "00000002.history"
    assert history.exists()
    assert digest_file(history) == digest_file(pg.archive / "00000002.history")
    assert 'restored log file "00000002.history" from archive' in pg.standby_a.log_text()
    # The backup history file of pg_basebackup travels in its own stream, byte for byte.
    backups = sorted(p.name for p in pg.archive.glob("*.backup"))
    assert len(backups) == 1, backups
    copy = wait_until(
        lambda: (p := pg.copy("receiver-a", "pg-backup", "log") / backups[0]).exists() and p,
        30,
        what=f"{backups[0]} in the pg-backup copy",
    )
    assert digest_file(copy) == digest_file(pg.archive / backups[0])
    # Every WAL segment and history file of the archive is in the copy, byte for byte, and the shipper
    # never saw a file arrive out of name order in either stream.
    wal = sorted(p.name for p in pg.archive.iterdir() if re.fullmatch(WAL_PATTERN, p.name))

    def caught_up() -> bool:
        names = {p.name for p in pg.copy("receiver-a", "pg", "log").iterdir()}
        return set(wal) <= names

    wait_until(caught_up, 30, what="every archived WAL file in receiver A's log/")
    for name in wal:
        assert digest_file(pg.copy("receiver-a", "pg", "log") / name) == digest_file(pg.archive / name), name
    assert "appeared after" not in pg.shipper.log_text()


def test_delayed_standby_does_not_see_rows_younger_than_the_lag(pg: Scenario) -> None:
    primary, standby = pg.primary, pg.standby_b
    # B becomes consistent only once the base backup's WAL has waited out the lag.
    wait_until(lambda: standby.try_psql("SELECT 1") == "1", REPLAY_LAG + 120, interval=0.5, what="standby B up")
    # Replay happens at least the lag after the segment was installed, which is after the commit, which
    # is after ``before``: a row seen when less than the lag has passed since ``before`` is a failure.
    before = time.monotonic()
    primary.psql("INSERT INTO shipped (id) VALUES (100)")
    while time.monotonic() - before < REPLAY_LAG:
        seen = standby.try_psql("SELECT count(*) FROM shipped WHERE id = 100") == "1"
        age = time.monotonic() - before
        assert not (seen and age < REPLAY_LAG), f"standby B showed the row {age:.1f} s after it was inserted"
        time.sleep(0.5)
    # Meanwhile the undelayed standby A has it, so the row did travel.
    wait_until(
        lambda: pg.standby_a.try_psql("SELECT count(*) FROM shipped WHERE id = 100") == "1", 30, what="row 100 on A"
    )
    wait_until(
        lambda: standby.try_psql("SELECT count(*) FROM shipped WHERE id = 100") == "1",
        90,
        interval=0.2,
        what="row 100 on the delayed standby after the lag",
    )
    delay = time.monotonic() - before
    pg.figures["row to delayed standby B, s"] = [delay]
    print(
        f"\nfigure: insert on the primary -> visible on the delayed standby "
        f"(--replay-lag {REPLAY_LAG:.0f}s): {delay:.2f} s"
    )


def test_activation_promotes_the_standby_and_fences_the_old_primary(pg: Scenario) -> None:
    primary, standby = pg.primary, pg.standby_a
    # The last row the primary committed before the switch-over reaches the standby first.
    insert_and_time(primary, standby, 200, timeout=90)
    promote = shlex.join(as_pg_user([standby.bin("pg_ctl"), "-D", str(standby.data), "-w", "promote"]))
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "receiver",
            "activate",
            *("--data-dir", str(pg.root / "receiver-a"), "--stream", "pg", "--on-activate", promote),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    print(f"\nactivate report:\n{done.stdout}")
    # The promoted standby accepts writes, and kept everything the primary had committed before.
    wait_until(lambda: standby.try_psql("SELECT pg_is_in_recovery()") == "f", 60, what="standby A promoted")
    promoted_after = time.monotonic() - started
    standby.psql("INSERT INTO shipped (id) VALUES (300)")
    # It writes a timeline of its own, after the primary's 2 (it looked for higher history files first).
    assert standby.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)") == "00000003"
    assert standby.psql("SELECT count(*) FROM shipped WHERE id IN (200, 300)") == "2"
    pg.figures["activate -> writable, s"] = [promoted_after]
    print(f"figure: activate + --on-activate promote -> standby A accepts writes: {promoted_after:.2f} s")

    # The old primary goes on writing: its next WAL segment is archived and shipped, but target A is
    # fenced. Target B (not activated) still receives it, which shows the segment was sent at all.
    primary.psql("INSERT INTO shipped (id) VALUES (400)")
    segment = primary.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    primary.psql("SELECT pg_switch_wal()")
    wait_until(lambda: (pg.archive / segment).exists(), 30, what=f"{segment} archived on the old primary")
    wait_until(lambda: "fenced" in pg.shipper.log_text().lower(), 30, what="the shipper logging FENCED")
    wait_until(lambda: (pg.copy("receiver-b", "pg", "log") / segment).exists(), 30, what=f"{segment} at receiver B")
    for sub in ("replica", "log", "incoming"):
        where = pg.copy("receiver-a", "pg", sub)
        assert not (where / segment).exists(), f"{segment} reached {where}"
        assert not (where / f"{segment}.partial").exists(), f"{segment} reached {where}"
    assert standby.psql("SELECT count(*) FROM shipped WHERE id = 400") == "0"
