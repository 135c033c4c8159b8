"""docs/postgresql.md followed as written: its shell blocks run verbatim, with the doc's variables set
to a scratch directory and 127.0.0.1 addresses. A change to the recipe that breaks it fails here.

Only what the recipe leaves to the reader is done outside it: a primary to start from, the checks,
and the listening address (the recipe's 0.0.0.0:7400 becomes 127.0.0.1:0; the port the receiver reports
becomes $RECEIVER for the blocks after it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.pgcluster import Cluster, find_pg_bin, scratch_dir, why_unavailable
from tests.helpers.procs import LISTENING
from tests.helpers.source import ROOT
from tests.helpers.waiting import wait_until

DOC = ROOT / "docs" / "postgresql.md"

pytestmark = pytest.mark.skipif(why_unavailable() is not None, reason=why_unavailable() or "")


def sh_blocks(heading: str) -> list[str]:
    """Return the ```sh blocks of the doc section whose heading starts with ``heading``."""
    text = DOC.read_text()
    start = text.index(f"\n{heading}")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end >= 0 else len(text)]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def is_daemon(line: str) -> bool:
    return line.startswith(("$PY -m receiver --listen", "$PY -m shipper --config"))


class Recipe:
    """Run the doc's blocks with its variables, daemons in the background (ended by pid)."""

    def __init__(self, root: Path, overrides: dict[str, str]) -> None:
        self.root = root
        self.listen = "127.0.0.1:0"
        """Where a receiver of the recipe listens: port 0 until the first one reports its port."""
        self.doc_vars = sh_blocks("## The variables")[0]
        self.overrides = overrides
        self.daemons: list[subprocess.Popen[bytes]] = []

    @property
    def prelude(self) -> str:
        mine = "".join(f"{k}={v}\n" for k, v in self.overrides.items())
        return f"set -euo pipefail\n{self.doc_vars}\n{mine}"

    def run(self, block: str) -> str:
        """Run one block; daemon lines start in the background. Returns the rest's output."""
        block = block.replace("0.0.0.0:7400", self.listen)
        foreground = []
        for line in block.splitlines():
            if is_daemon(line):
                log_path = self.root / f"daemon-{len(self.daemons)}.log"
                with open(log_path, "ab") as log:
                    self.daemons.append(
                        subprocess.Popen(
                            ["bash", "-c", f"{self.prelude}\nexec {line}"], stdout=log, stderr=log, cwd=ROOT
                        )
                    )
                if line.startswith("$PY -m receiver") and self.listen.endswith(":0"):
                    self.listen = f"127.0.0.1:{self._reported_port(log_path)}"
                    self.overrides["RECEIVER"] = self.listen
            else:
                foreground.append(line)
        done = subprocess.run(
            ["bash", "-c", self.prelude + "\n".join(foreground)], capture_output=True, text=True, timeout=180, cwd=ROOT
        )
        assert done.returncode == 0, f"block failed ({done.returncode}):\n{block}\n{done.stdout}{done.stderr}"
        return done.stdout

    def _reported_port(self, log_path: Path) -> str:
        """Wait for the receiver just started to log the port it bound; raise with its log if it does not."""
        daemon = self.daemons[-1]

        def reported() -> str | None:
            m = LISTENING.search(log_path.read_text(errors="replace"))
            assert m or daemon.poll() is None, f"the receiver exited: {log_path.read_text(errors='replace')}"
            return m.group(2) if m else None

        return wait_until(reported, 30, interval=0.05, what=f"the receiver to listen (see {log_path})")

    def daemon_logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.root.glob("daemon-*.log")))

    def stop(self) -> None:
        for proc in self.daemons:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


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
