"""A brand-new PostgreSQL standby seeded through logship (issue 17): the receiver's copy is reseeded before
any shipper came, the shipper's seed_command is ``pg_basebackup -D - -Ft -X none``, the image travels over
the shipper's connection, the WAL after it (from the backup_label's start segment) follows, and the
standby built from ``base/`` becomes a hot standby serving the primary's rows, with no other connection
between the two hosts (no primary_conninfo, no WAL receiver, no replication client on the primary but
the one pg_basebackup of the seed_command, which runs on the primary's host)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.pgcluster import (
    WAL_PATTERN,
    Cluster,
    archive_dir,
    as_pg_user,
    make_standby,
    scratch_fixture,
    why_unavailable,
)
from tests.helpers.procs import Proc, receiver_proc, unexpected_log_lines
from tests.helpers.source import ROOT, make_secret
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.skipif(why_unavailable() is not None, reason=why_unavailable() or "")


root = scratch_fixture("logship-pgseed-")


def test_a_new_standby_seeded_by_pg_basebackup_through_logship_serves_the_primarys_rows(root: Path) -> None:
    archive = archive_dir(root)
    secret = make_secret(root / "secret")
    primary = Cluster.under(root, "primary", 5442)
    standby = Cluster.under(root, "standby", 5443)
    procs: list[Proc] = []
    try:
        primary.init_primary(archive)
        primary.start()
        primary.psql("CREATE TABLE shipped (id int PRIMARY KEY)")
        primary.psql("INSERT INTO shipped SELECT generate_series(1, 5000)")

        data = root / "receiver"
        receiver = receiver_proc(root, secret, extra=["--umask", "022"]).start()
        procs.append(receiver)
        # A brand-new standby: reseeded before any shipper came.
        out = subprocess.run(
            [sys.executable, "-m", "receiver", "reseed", "--data-dir", str(data), "--stream", "pg"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert out.returncode == 0, out.stderr

        seed = shlex.join(as_pg_user([*primary.base_backup_argv(), "-D", "-", "-Ft", "-X", "none", "-c", "fast"]))
        config = root / "shipper.toml"
        config.write_text(
            f'state_dir = "{root / "shipper-state"}"\n\n[[stream]]\nname = "pg"\nsource = "{archive}"\n'
            f'secret_file = "{secret}"\nseal = "immediate"\npattern = \'{WAL_PATTERN}\'\n'
            f'seed_command = {json.dumps(seed)}\n\n[[stream.target]]\naddress = "127.0.0.1:{receiver.port}"\n'
        )
        shipper = Proc("shipper", ["--config", str(config)], root / "shipper.log").start()
        procs.append(shipper)

        copy = data / "pg"
        wait_until(lambda: "SEEDED" in receiver.log_text(), 120, what="the base backup installed")
        label = (copy / "base" / "backup_label").read_text()
        start = label.split("(file ")[1].split(")")[0]
        assert f"copying continues at {start}" in receiver.log_text()
        # The WAL after the backup comes through logship, from the backup's start segment on.
        primary.psql("INSERT INTO shipped SELECT generate_series(5001, 6000)")
        wait_until(lambda: (copy / "replica" / start).exists(), 60, what=f"{start} replayed into replica/")
        assert min(os.listdir(copy / "log")) == start

        make_standby(copy / "base", standby, copy / "replica")
        standby.start()
        assert standby.psql("SELECT pg_is_in_recovery()") == "t"
        primary.psql("INSERT INTO shipped SELECT generate_series(6001, 6100)")
        wait_until(
            lambda: standby.try_psql("SELECT count(*) FROM shipped") == "6100", 90, what="every row on the standby"
        )
        assert standby.psql("SHOW primary_conninfo") == ""
        assert standby.psql("SELECT count(*) FROM pg_stat_wal_receiver") == "0"
        assert primary.psql("SELECT count(*) FROM pg_stat_replication") == "0"
        assert not unexpected_log_lines(procs)
    finally:
        for cluster in (standby, primary):
            cluster.stop()
        for proc in procs:
            proc.stop(timeout=10)
