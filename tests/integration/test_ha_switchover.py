"""``logship ha switchover --to NODE`` there and back (the former primary rejoining), and ``failover
--to NODE --force``, end to end: real receivers, agents that run the shipper, a real 3-member etcd on
127.0.0.1 (issue 16).

Segments are written whole (rename) and shipped with ``seal = "immediate"``, as PostgreSQL's archive
is: the last segment the old primary wrote is sealed on the new one, so the new epoch's log holds
every byte, which the test compares.
"""

from __future__ import annotations

import json
import random
import re
import urllib.request
from pathlib import Path

import pytest

from tests.helpers.etcd import EtcdCluster, etcd_missing
from tests.helpers.hanode import ha, names, pair, start_agents, write_segment
from tests.helpers.source import segment_name
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.skipif(etcd_missing() is not None, reason=str(etcd_missing()))
TTL = 3


def test_switchover_there_and_back_zero_loss(tmp_path: Path, etcd: EtcdCluster, secret: Path) -> None:
    rnd = random.Random(161)
    a, b, src = pair(tmp_path, etcd.endpoints, secret)
    try:
        start_agents([a, b])
        for i in range(1, 5):
            write_segment(src / segment_name(i), rnd.randbytes(rnd.randint(20_000, 150_000)))

        done = ha(a, "switchover", "--to", "b")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "b leads at epoch 2 after" in done.stdout
        print(done.stdout.strip())
        assert b.primary() and not a.primary()
        assert etcd.get("/logship/c1/sg1/switchover") is None  # the takeover deleted the request
        b_replica = b.copy() / "replica"
        assert names(b_replica) == names(src)  # zero bytes lost: every segment a wrote, byte for byte
        wait_until(lambda: a.roles().endswith("demote\nfollow b\n"), 15, what="a follows b")

        # b's application writes in epoch 2; a (no copy before: it shipped its own log) follows as a standby.
        for i in range(5, 8):
            write_segment(b_replica / segment_name(i), rnd.randbytes(rnd.randint(20_000, 150_000)))
        wait_until(lambda: names(a.copy() / "log") == names(b_replica), 60, what="a holds b's log")

        # b's agent serves its HA side: role, leader, epoch, eligibility, as JSON and as metrics.
        port = re.search(r"ha admin endpoint on http://127.0.0.1:(\d+)/status", b.log_text())
        assert port is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/status", timeout=5) as r:
            mine = json.loads(r.read())
        assert mine["role"] == "primary" and mine["leader"] == "b" and mine["epoch"] == 2, mine
        with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/metrics", timeout=5) as r:
            prom = r.read().decode()
        assert 'logship_ha_primary{stream="sg1",node="b"} 1' in prom and 'leader="b"} 1' in prom, prom

        def status() -> dict[str, object]:
            return json.loads(ha(b, "status", "--json").stdout)

        # a becomes eligible once b's agent has published the sync set of epoch 2 (within a round or two).
        doc = wait_until(lambda: (d := status())["members"]["a"]["ineligible"] is None and d, 15, what="a eligible")
        assert doc["leader"] == "b" and doc["epoch"] == 2 and doc["sync"] == ["a"], doc

        done = ha(a, "switchover", "--to", "a")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "a leads at epoch 3 after" in done.stdout
        print(done.stdout.strip())
        assert a.primary() and not b.primary()
        assert names(a.copy() / "replica") == names(b_replica)  # zero bytes lost the other way
        # b's copy is the activated primary log of epoch 2: it rejoins epoch 3 as a standby, keeping what
        # it led (tests/integration/test_ha_rejoin.py goes on for two more switchovers).
        wait_until(lambda: "rejoined epoch 3 as a standby" in b.log_text(), 15, what="b rejoins")
        write_segment(a.copy() / "replica" / segment_name(8), rnd.randbytes(30_000))
        wait_until(lambda: names(b.copy() / "log") == names(a.copy() / "replica"), 30, what="b holds a's log")

        def status_text() -> str | None:
            text = ha(a, "status").stdout
            return text if "b: epoch 3" in text else None

        text = wait_until(status_text, 15, what="b a member at epoch 3")
        assert "epoch 3, leader a" in text, text
    finally:
        for n in (a, b):
            n.stop()
    assert "Traceback" not in a.log_text() + b.log_text()


def test_forced_failover_and_refusals(tmp_path: Path, etcd: EtcdCluster, secret: Path) -> None:
    a, b, src = pair(tmp_path, etcd.endpoints, secret)
    try:
        start_agents([a, b])
        write_segment(src / segment_name(1), b"x" * 50_000)

        refused = ha(a, "failover", "--to", "b")
        assert refused.returncode == 2 and "needs --force" in refused.stderr
        refused = ha(a, "switchover", "--to", "a")
        assert refused.returncode == 1 and "is the leader already" in refused.stderr
        refused = ha(a, "switchover", "--to", "zz")
        assert refused.returncode == 1 and "is not a member" in refused.stderr

        # Forced: b is promoted though the dial is not consulted and nothing is waited for.
        done = ha(a, "failover", "--to", "b", "--force")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "b leads at epoch 2 after" in done.stdout
        assert b.primary() and not a.primary()
        assert etcd.get("/logship/c1/sg1/failover") is None
    finally:
        for n in (a, b):
            n.stop()
