"""PostgreSQL archives a WAL file only once a standby holds it durably (docs/postgresql.md, "RPO 0").

The primary's archive_command copies atomically into the shipper's source and then runs
``python -m shipper wait --stream pg --segment %f --sealed``: with the receiver stopped the command
fails, ``pg_stat_archiver.failed_count`` grows and ``pg_wal`` keeps the WAL; with the receiver back,
archiving resumes by itself; and whenever PostgreSQL says a file is archived, it and every one before
it are already in the receiver's ``log/``, byte-identical.

The archive_command runs as the postgres user, so the shipper does too (tests/helpers/pgwait.py).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.copies import digest_file
from tests.helpers.pgcluster import (
    Cluster,
    find_pg_bin,
    give_to_pg_user,
    scratch_dir,
    why_unavailable,
)
from tests.helpers.pgwait import SYSTEM_PYTHON, PgUserShipper, shipper_config, waiting_archive_command
from tests.helpers.procs import Proc, ReceiverProc, receiver_proc
from tests.helpers.source import make_secret
from tests.helpers.waiting import wait_until

WAIT_TIMEOUT = 3
"""The archive_command's --timeout here (the recipe's 60 s would make the stopped-receiver phase slow)."""


def _why_skip() -> str | None:
    if (why := why_unavailable()) is not None:
        return why
    if os.geteuid() == 0 and not Path(SYSTEM_PYTHON).exists():
        return f"no {SYSTEM_PYTHON} for the postgres user to run the shipper with"
    return None


pytestmark = pytest.mark.skipif(_why_skip() is not None, reason=_why_skip() or "")


@dataclass
class Setup:
    root: Path
    archive: Path
    primary: Cluster
    receiver: ReceiverProc

    @property
    def log_dir(self) -> Path:
        return self.root / "receiver" / "pg" / "log"

    def archiver(self) -> tuple[int, int, str]:
        """(archived_count, failed_count, last_archived_wal) of pg_stat_archiver."""
        row = self.primary.psql(
            "SELECT archived_count, failed_count, coalesce(last_archived_wal, '') FROM pg_stat_archiver"
        )
        archived, failed, last = row.split("|")
        return int(archived), int(failed), last

    def write_and_switch(self, rows: int = 2000) -> str:
        """Write some WAL and switch to a new file; return the name of the file switched away from."""
        self.primary.psql(f"INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, {rows}) g")
        return self.primary.psql("SELECT pg_walfile_name(pg_switch_wal())")


@pytest.fixture
def pg() -> Iterator[Setup]:
    pg_bin = find_pg_bin()
    assert pg_bin is not None
    root = scratch_dir("logship-pgwait-")
    archive = root / "archive"
    archive.mkdir()
    give_to_pg_user(archive)
    secret = make_secret(root / "secret")
    give_to_pg_user(secret)
    primary = Cluster(pg_bin, root / "primary", 5440, root)
    procs: list[Proc] = []
    try:
        receiver = receiver_proc(root, secret).start()
        procs.append(receiver)
        state = root / "shipper-state"
        config = shipper_config(root, archive, secret, receiver.address)
        shipper = PgUserShipper("shipper", ["--config", str(config)], root / "shipper.log").start()
        procs.append(shipper)
        wait_until(lambda: (state / "control.sock").exists(), 30, what="the shipper's control socket")

        primary.initdb()
        primary.configure(
            {
                **primary.base_settings(),
                "archive_mode": "on",
                "archive_command": waiting_archive_command(archive, config, WAIT_TIMEOUT),
                "archive_timeout": "1s",
            }
        )
        primary.start()
        primary.psql("CREATE TABLE t (id int, v text)")
        yield Setup(root, archive, primary, receiver)
    finally:
        primary.stop()
        for proc in procs:
            proc.stop(timeout=10)
        if os.environ.get("LOGSHIP_KEEP_PG"):
            print(f"\nkept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def assert_archived_files_on_the_standby(pg: Setup) -> str:
    """Every WAL file up to last_archived_wal is in log/, byte-identical to the archive's; return it."""
    _, _, last = pg.archiver()
    assert last, "nothing archived yet"
    wal = re.compile(r"[0-9A-F]{24}")
    names = sorted(n for n in os.listdir(pg.archive) if wal.fullmatch(n) and n <= last)
    assert last in names
    for name in names:
        copy = pg.log_dir / name
        assert copy.exists(), f"{name} archived (last_archived_wal {last}) but not in the receiver's log/"
        assert digest_file(copy) == digest_file(pg.archive / name), name
    return last


def test_archiving_waits_for_the_standby(pg: Setup) -> None:
    # (b) A burst of writes and switches: at each moment PostgreSQL calls a file archived, it is on the standby.
    for _ in range(4):
        switched = pg.write_and_switch()
        wait_until(lambda s=switched: pg.archiver()[2] >= s, 60, interval=0.2, what=f"{switched} archived")
        assert_archived_files_on_the_standby(pg)

    # (a) Receiver stopped: the command fails, failures are counted, pg_wal keeps the file.
    pg.receiver.stop()
    _, failed_before, last_before = pg.archiver()
    held = pg.write_and_switch()
    wait_until(lambda: pg.archiver()[1] >= failed_before + 2, 90, interval=0.5, what="archive failures counted")
    _, _, last = pg.archiver()
    assert last == last_before and last < held, "a WAL file counted archived while the standby was down"
    assert (pg.primary.data / "pg_wal" / held).exists()
    assert (pg.primary.data / "pg_wal" / "archive_status" / f"{held}.ready").exists()
    assert not (pg.log_dir / held).exists()
    assert "shipper wait" in pg.primary.log_text() or "archive command failed" in pg.primary.log_text()

    # Receiver back: archiving resumes by itself, and what it archived is on the standby.
    pg.receiver.start()
    wait_until(
        lambda: pg.archiver()[2] >= held, 120, interval=0.5, what=f"{held} archived after the receiver came back"
    )
    assert_archived_files_on_the_standby(pg)
    assert (pg.log_dir / held).exists()
