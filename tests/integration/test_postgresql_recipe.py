"""docs/postgresql.md followed as written: its shell blocks run verbatim, with the doc's variables set
to a scratch directory and 127.0.0.1 addresses. A change to the recipe that breaks it fails here.

Only what the recipe leaves to the reader is done outside it: a primary to start from, the checks,
and the listening address (the recipe's 0.0.0.0:7400 becomes 127.0.0.1:0; the port the receiver reports
becomes $RECEIVER for the blocks after it).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.pgcluster import Cluster, find_pg_bin, scratch_dir, why_unavailable
from tests.helpers.recipe import Recipe
from tests.helpers.recipe import sh_blocks as recipe_blocks
from tests.helpers.source import ROOT
from tests.helpers.waiting import wait_until

DOC = ROOT / "docs" / "postgresql.md"

pytestmark = pytest.mark.skipif(why_unavailable() is not None, reason=why_unavailable() or "")


def sh_blocks(heading: str) -> list[str]:
    return recipe_blocks(DOC, heading)


def is_daemon(line: str) -> bool:
    return line.startswith(("$PY -m receiver --listen", "$PY -m shipper --config"))


@pytest.fixture
def scratch() -> Iterator[Path]:
    root = scratch_dir("logship-pg-recipe-")
    try:
        yield root
    finally:
        if not os.environ.get("LOGSHIP_KEEP_PG"):
            shutil.rmtree(root, ignore_errors=True)


def test_the_recipe_as_written(scratch: Path) -> None:
    pg_bin = find_pg_bin()
    assert pg_bin is not None
    root = scratch
    # Unix sockets only, in root: the ports just name each cluster's socket there (see pgcluster).
    primary = Cluster(pg_bin, root / "primary", 5432, root)
    standby = Cluster(pg_bin, root / "standby", 5433, root)
    recipe = Recipe(
        root,
        DOC,
        {
            "PGRUN": '"runuser -u postgres --"' if os.geteuid() == 0 else "",
            "PGBIN": str(pg_bin),
            "PY": sys.executable,
            "PGDATA": str(primary.data),
            "ARCHIVE": str(root / "wal-archive"),
            "SECRET": str(root / "logship.secret"),
            "SHIPPER_CONF": str(root / "logship-shipper.toml"),
            "STANDBY": str(standby.data),
            "DATA_DIR": str(root / "logship"),
            "RECEIVER": "127.0.0.1:0",  # set to the receiver's port once it reports it
            "PRIMARY_HOST": str(root),
            "PRIMARY_PORT": str(primary.port),
            # The shipper's state dir (not the recipe's business; the default one is shared by tests).
            "LOGSHIP_SHIPPER_STATE_DIR": str(root / "shipper-state"),
        },
        is_daemon,
    )
    try:
        # The primary the recipe starts from.
        primary.initdb()
        primary.configure(primary.base_settings())
        primary.start()

        recipe.run(sh_blocks("## The variables")[1])  # the secret
        for section in ("## 1.", "## 2.", "## 3.", "## 4."):
            for block in sh_blocks(section):
                recipe.run(block)
        # The standby's port: a socket name here (see pgcluster), the test's rather than the recipe's 5433.
        (block,) = sh_blocks("## 5.")
        recipe.run(block.replace("port = 5433", f"port = {standby.port}"))

        primary.psql("CREATE TABLE recipe (id int)")
        primary.psql("INSERT INTO recipe VALUES (1)")
        primary.psql("SELECT pg_switch_wal()")
        wait_until(lambda: standby.try_psql("SELECT count(*) FROM recipe") == "1", 90, what="the row on the standby")
        assert standby.psql("SELECT pg_is_in_recovery()") == "t"
        backups = [p.name for p in (root / "wal-archive").glob("*.backup")]
        assert backups and (root / "logship" / "pg-backup" / "log" / backups[0]).exists()

        primary.psql("INSERT INTO recipe VALUES (2)")
        primary.psql("SELECT pg_switch_wal()")
        wait_until(lambda: standby.try_psql("SELECT count(*) FROM recipe") == "2", 90, what="row 2 on the standby")
        (block,) = sh_blocks("## 7.")
        report = recipe.run(block)
        assert "acknowledged data missing: NO" in report, report
        wait_until(lambda: standby.try_psql("SELECT pg_is_in_recovery()") == "f", 60, what="the standby promoted")
        standby.psql("INSERT INTO recipe VALUES (3)")

        primary.psql("INSERT INTO recipe VALUES (4)")
        segment = primary.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
        primary.psql("SELECT pg_switch_wal()")
        wait_until(lambda: (root / "wal-archive" / segment).exists(), 90, what=f"{segment} archived")
        wait_until(lambda: "fenced" in recipe.daemon_logs(), 30, what="the shipper fenced")
        assert not (root / "logship" / "pg" / "replica" / segment).exists()
        assert not (root / "logship" / "pg" / "log" / segment).exists()
    finally:
        standby.stop()
        primary.stop()
        recipe.stop()
