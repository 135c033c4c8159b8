"""The HA fields in the shipper's own status, with a real 3-member etcd, real receivers and agents, and
the shipper a's agent runs while a leads (docs/failover.md "HA fields in status").

a's agent passes its view file's path to its shipper (``LOGSHIP_HA_VIEW``). While the agent publishes,
``python -m shipper status`` (table and ``--json``), the shipper's ``/status`` and its ``/metrics``
show the agent's block: role, leader, epoch, lease age, sync set, eligibility; the same as the
agent's own ``/status`` says. After a kill -9 of a's agent alone (its shipper goes on shipping, as
it must) the shipper says the agent is not reporting, and its role gauges go away.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.etcd import EtcdCluster, etcd_missing
from tests.helpers.hanode import HaNode, shipper_wait, start_ha_nodes, write_segment
from tests.helpers.source import ROOT, segment_name
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.skipif(etcd_missing() is not None, reason=str(etcd_missing()))
TTL = 3


def shipper_status(node: HaNode, *more: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "shipper", "status", "--state-dir", str(node.ship_dir), *more]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=ROOT)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def ha_gauges(url: str) -> dict[str, float]:
    families = text_string_to_metric_families(get(url + "/metrics"))
    return {s.name: s.value for f in families for s in f.samples if "_ha_" in s.name and s.labels["stream"] == "sg1"}


def test_the_shipper_shows_its_agents_view(tmp_path: Path, etcd: EtcdCluster, secret: Path) -> None:
    nodes = start_ha_nodes(
        tmp_path, etcd.endpoints, secret, ("a", "b"), TTL, admin="127.0.0.1:0", shipper={"admin": "127.0.0.1:0"}
    )
    a, _ = nodes
    assert a.source is not None
    try:
        write_segment(a.source / segment_name(1), b"1" * 30_000)
        write_segment(a.source / segment_name(2), b"2" * 100)
        done = shipper_wait(a, segment_name(1), "--sealed")
        assert done.returncode == 0, done.stdout + done.stderr
        wait_until(lambda: (a.ha_status() or {}).get("sync") == ["b"], 15, what="b in a's sync set")
        url = a.shipper_admin_url()
        assert url is not None, a.log_text()[-2000:]

        # The table: one HA line under the targets, as the agent sees it.
        wait_until(lambda: "HA sg1: primary e1, lease " in shipper_status(a).stdout, 10, what="the HA line")
        out = shipper_status(a).stdout
        assert out.splitlines()[-1].startswith("HA sg1: primary e1, lease ") and out.endswith(", sync b\n"), out
        # --json and /status: the agent's own fields, the same as its /status says.
        agent = a.ha_status()
        assert agent is not None
        for doc in (json.loads(shipper_status(a, "--json").stdout), json.loads(get(url + "/status"))):
            block = doc["ha"]["sg1"]
            assert block["reporting"] and block["primary"] and block["eligible"] and block["ineligible"] is None
            for key in ("node", "role", "leader", "epoch", "sync"):
                assert block[key] == agent[key], (key, block, agent)
            assert 0 <= block["lease_age_seconds"] < TTL and block["age_seconds"] <= TTL, block
        # /metrics: the shipper's HA gauges.
        gauges = ha_gauges(url)
        assert gauges["logship_shipper_ha_reporting"] == 1 and gauges["logship_shipper_ha_primary"] == 1, gauges
        assert gauges["logship_shipper_ha_epoch"] == 1 and gauges["logship_shipper_ha_eligible"] == 1, gauges
        assert 0 <= gauges["logship_shipper_ha_lease_age_seconds"] < TTL, gauges

        # The agent dies alone: its shipper goes on, and says within a TTL that the agent is silent.
        pid = a.shipper_pid()
        a.kill_agent()
        killed = time.monotonic()
        stale = lambda: not json.loads(get(url + "/status"))["ha"]["sg1"]["reporting"]  # noqa: E731
        wait_until(stale, 2 * TTL, what="the shipper says the agent is not reporting")
        assert time.monotonic() - killed <= TTL + 1.5
        assert a.shipper_pid() == pid  # the same shipper: nobody restarted it
        block = json.loads(get(url + "/status"))["ha"]["sg1"]
        assert block["last"]["role"] == "primary" and not block["stopped"] and "role" not in block, block
        assert "HA sg1: agent not reporting for " in shipper_status(a).stdout
        gauges = ha_gauges(url)
        assert gauges["logship_shipper_ha_reporting"] == 0 and "logship_shipper_ha_primary" not in gauges, gauges
        assert gauges["logship_shipper_ha_view_age_seconds"] > TTL, gauges
    finally:
        for n in nodes:
            n.stop()
