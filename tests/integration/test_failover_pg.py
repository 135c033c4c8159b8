"""PostgreSQL 15 fails over automatically through logship and etcd (issue 16).

Node a: a PostgreSQL primary whose archive_command copies each WAL file atomically into the archive
and then runs ``shipper wait --sealed`` (docs/postgresql.md "RPO 0"), and a ``logship ha`` agent that
ships the archive while a leads. The agent runs as the postgres user, so the archive_command can reach
its shipper's control socket (0600). Node b: a receiver, a hot standby restoring WAL only from the
receiver's replica (no streaming replication), and an agent whose ``on_promote`` is ``pg_ctl promote``.

a's host dies (kill -9 of its agent, its shipper and its postmaster): b's agent takes epoch 2,
activates the copy, promotes PostgreSQL; every row committed and archived before the kill is there and
b accepts writes. The old primary, restarted with its shipper, is fenced by b's receiver.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.etcd import EtcdCluster, etcd_missing
from tests.helpers.hanode import HaNode
from tests.helpers.pgcluster import (
    PG_USER,
    WAL_PATTERN,
    Cluster,
    archive_dir,
    as_pg_user,
    atomic_archive_command,
    give_to_pg_user,
    make_standby,
    scratch_fixture,
    why_unavailable,
)
from tests.helpers.pgwait import SYSTEM_PYTHON, pg_python
from tests.helpers.source import make_secret
from tests.helpers.waiting import wait_until

TTL = 3


def _why_skip() -> str | None:
    for why in (etcd_missing(), why_unavailable()):
        if why is not None:
            return why
    if os.geteuid() == 0 and not Path(SYSTEM_PYTHON).exists():
        return f"no {SYSTEM_PYTHON} for the postgres user to run the agent and shipper with"
    return None


pytestmark = pytest.mark.skipif(_why_skip() is not None, reason=_why_skip() or "")


root = scratch_fixture("logship-ha-pg-")


def archived(primary: Cluster) -> str:
    return primary.try_psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") or ""


def test_postgresql_fails_over_automatically(root: Path, etcd: EtcdCluster) -> None:
    secret = make_secret(root / "secret")
    give_to_pg_user(secret)
    archive = archive_dir(root)
    primary = Cluster.under(root, "pg-a", 5432)
    standby = Cluster.under(root, "pg-b", 5433)
    a = HaNode(root, "a", secret, source=archive, receiver_extra=["--umask", "022"])
    give_to_pg_user(a.root)
    promote = shlex.join(as_pg_user([standby.bin("pg_ctl"), "-D", str(standby.data), "-w", "-t", "60", "promote"]))
    b = HaNode(
        root,
        "b",
        secret,
        receiver_extra=["--umask", "022"],
        hooks={"on_promote": f"{promote} && touch {root}/b/primary && echo promote >> {root}/b/roles"},
    )
    # The standby's restore_command (postgres) reads b's replica: b's dir must be enterable whatever
    # umask this process was left with (an in-process main() may have set the daemons' private 077).
    b.root.chmod(0o755)
    old_shipper: subprocess.Popen[bytes] | None = None
    try:
        a.receiver.start()
        b.receiver.start()
        wal = {"pattern": WAL_PATTERN, "seal": "immediate"}
        a.write_config(etcd.endpoints, {"b": b.receiver.address}, TTL, shipper=wal)
        b.write_config(etcd.endpoints, {"a": a.receiver.address}, TTL, shipper=wal)
        give_to_pg_user(a.root / "node.toml")
        a.start_agent(pg_python(), PG_USER if os.geteuid() == 0 else None)
        wait_until(a.primary, 30, what="a bootstraps as the primary")
        b.start_agent()
        wait_until(lambda: "follow a" in b.roles(), 30, what="b follows a")

        py = " ".join(pg_python())
        wait = f"{py} -m shipper wait --state-dir {a.ship_dir} --stream sg1 --segment %f --sealed --timeout 60"
        # Backup history files are not in this stream (the recipe ships them as pg-backup): no wait.
        command = f"{{ {atomic_archive_command(archive)}; }} && case %f in *.backup) ;; *) {wait};; esac"
        primary.init_primary(archive, command)
        primary.start()
        base = root / "base"
        primary.base_backup(base)
        make_standby(base, standby, b.copy() / "replica")
        # Unwaited: on a loaded machine reaching consistency (WAL through the receiver) can exceed pg_ctl's -t.
        standby.start(wait=False)
        wait_until(lambda: standby.try_psql("SELECT 1") == "1", 180, interval=0.5, what="b's standby consistent")

        primary.psql("CREATE TABLE shipped (id int PRIMARY KEY)")
        for row in range(1, 201):
            primary.psql(f"INSERT INTO shipped VALUES ({row})")
        # Committed, then archived: the archive_command returned 0 only once b held the file sealed.
        segment = primary.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
        primary.psql("SELECT pg_switch_wal()")
        wait_until(lambda: archived(primary) >= segment, 60, what=f"{segment} archived (and waited for)")
        wait_until(lambda: standby.try_psql("SELECT count(*) FROM shipped") == "200", 60, what="rows on b")

        # a's host dies: its agent, its shipper and its PostgreSQL, all kill -9 at once.
        pid = primary.postmaster_pid()
        assert pid is not None
        a.kill_agent()
        assert a.kill_shipper()
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(b.primary, 60, what="b promoted by its agent")
        wait_until(lambda: standby.try_psql("SELECT pg_is_in_recovery()") == "f", 60, what="b's PostgreSQL writable")
        rto = time.monotonic() - killed
        print(f"\nfigure: kill -9 of a (agent, shipper, postmaster) -> b's PostgreSQL accepts writes: {rto:.2f} s")
        assert etcd.get("/logship/c1/sg1/epoch") == "2" and etcd.get("/logship/c1/sg1/leader") == "b"
        assert standby.psql("SELECT count(*) FROM shipped") == "200"
        standby.psql("INSERT INTO shipped VALUES (201)")
        assert standby.psql("SELECT max(id) FROM shipped") == "201"

        # The old primary restarted, with its shipper at epoch 1: b's receiver refuses it.
        primary.start()
        primary.psql("INSERT INTO shipped VALUES (999)")
        primary.psql("SELECT pg_switch_wal()")
        log = root / "old-shipper.log"
        with open(log, "wb") as out:
            old_shipper = subprocess.Popen(
                [*pg_python(), "-m", "shipper", "--config", str(a.ship_dir / "ha-shipper.toml")],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd="/",
                user=PG_USER if os.geteuid() == 0 else None,
            )
        wait_until(lambda: "fenced" in log.read_text(), 30, what="the old primary's shipper fenced")
        assert b.receiver.count("refused stream sg1: activated at epoch 2") >= 1
        assert standby.psql("SELECT count(*) FROM shipped WHERE id = 999") == "0"
    finally:
        if old_shipper is not None:
            old_shipper.kill()
            old_shipper.wait(10)
        for n in (a, b):
            n.stop()
        for c in (standby, primary):
            c.stop()
