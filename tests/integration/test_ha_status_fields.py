"""The HA fields in the receiver's own status (issue 16): ``python -m receiver status`` (table and
--json), its ``/status`` and ``/metrics`` show the node's agent's role, leader, epoch, lease age, sync
set and eligibility (with the reason), from the view the agent publishes (receiver/ha_view.py), only
while that view is fresh. Real receivers, agents and a 3-member etcd on 127.0.0.1, TTL 3 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.etcd import EtcdCluster, etcd_missing
from tests.helpers.hanode import HaNode, shipper_wait, start_ha_nodes, write_segment
from tests.helpers.procs import stop_popen
from tests.helpers.source import ROOT, segment_name
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.skipif(etcd_missing() is not None, reason=str(etcd_missing()))
TTL = 3


def status(node: HaNode, *flags: str) -> str:
    argv = [sys.executable, "-m", "receiver", "status", "--data-dir", str(node.data_dir), *flags]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=ROOT).stdout


def ha_of(node: HaNode) -> dict[str, Any]:
    return json.loads(status(node, "--json")).get("ha", {}).get("sg1", {})


def gauges(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {
        s.name: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name.startswith("logship_receiver_ha_") and s.labels == {"stream": "sg1"}
    }


def test_receiver_status_shows_the_agents_view_while_fresh(tmp_path: Path, etcd: EtcdCluster, secret: Path) -> None:
    a, b = start_ha_nodes(tmp_path, etcd.endpoints, secret, ttl=TTL, receiver_extra=["--admin", "127.0.0.1:0"])
    src = tmp_path / "a" / "src"
    try:
        write_segment(src / segment_name(1), b"1" * 30_000)
        write_segment(src / segment_name(2), b"2" * 100)
        done = shipper_wait(a, segment_name(1), "--sealed")
        assert done.returncode == 0, done.stdout + done.stderr

        # b: a standby in the sync set, eligible; its copy row carries the same block.
        wait_until(lambda: ha_of(b).get("in_sync"), 15, what="b's view: in the sync set")
        doc = json.loads(status(b, "--json"))
        ha = doc["ha"]["sg1"]
        assert ha["reporting"] and ha["role"] == "standby" and not ha["primary"], ha
        assert ha["leader"] == "a" and ha["epoch"] == 1 and ha["sync"] == ["b"] and ha["eligible"], ha
        assert ha["ineligible"] is None and ha["age_seconds"] < TTL and ha["lease_age_seconds"] < TTL, ha
        assert doc["copies"][0]["ha"] == ha
        table = status(b)
        assert " HA " in table.splitlines()[1] and "standby e1 (leader a), eligible, in sync" in table, table
        b_port, a_port = b.receiver.admin_port(), a.receiver.admin_port()
        g = gauges(b_port)
        assert g["logship_receiver_ha_reporting"] == 1 and g["logship_receiver_ha_primary"] == 0, g
        assert g["logship_receiver_ha_epoch"] == 1 and g["logship_receiver_ha_in_sync"] == 1, g
        assert g["logship_receiver_ha_eligible"] == 1 and g["logship_receiver_ha_lease_age_seconds"] < TTL, g
        with urllib.request.urlopen(f"http://127.0.0.1:{b_port}/status", timeout=10) as r:
            assert json.loads(r.read())["ha"]["sg1"]["role"] == "standby"

        # a: the primary ships its application's own log, so it has no copy row: a line says it.
        ha = ha_of(a)
        assert ha["role"] == "primary" and ha["primary"] and ha["leader"] == "a" and ha["epoch"] == 1, ha
        assert "HA sg1 (no copy here): primary e1, lease " in status(a) and "sync b" in status(a)
        g = gauges(a_port)
        assert g["logship_receiver_ha_primary"] == 1 and g["logship_receiver_ha_epoch"] == 1, g

        # The reason a member is not eligible: b's copy suspended.
        argv = [sys.executable, "-m", "receiver", "suspend", "--data-dir", str(b.data_dir), "--stream", "sg1"]
        subprocess.run(argv, check=True, capture_output=True, timeout=30, cwd=ROOT)
        wait_until(lambda: ha_of(b).get("ineligible") == "copy is Suspended", 10, what="b: not eligible")
        assert "not eligible: copy is Suspended" in status(b)
        assert gauges(b_port)["logship_receiver_ha_eligible"] == 0

        # kill -9 of b's agent: once its view is older than the TTL, b's receiver says so and shows no role.
        b.kill_agent()
        wait_until(lambda: ha_of(b).get("reporting") is False, 2 * TTL, 0.2, "b's view stale")
        ha = ha_of(b)
        assert ha["age_seconds"] > TTL and not ha["stopped"] and ha["last"]["role"] == "standby", ha
        assert "role" not in ha and "primary" not in ha
        assert "agent not reporting for " in status(b) and "(last: standby e1)" in status(b)
        g = gauges(b_port)
        assert g["logship_receiver_ha_reporting"] == 0 and "logship_receiver_ha_primary" not in g, g

        # a's agent stopped cleanly: it demotes and marks its view stopped at once.
        assert a.agent is not None
        stop_popen(a.agent)
        ha = ha_of(a)
        assert ha["reporting"] is False and ha["stopped"] and ha["last"]["role"] == "standby", ha
        assert "agent stopped " in status(a)
        # With no receiver running, status reads the same view from the data dir.
        a.receiver.stop(timeout=5)
        assert json.loads(status(a, "--json"))["ha"]["sg1"]["stopped"] is True
    finally:
        for n in (a, b):
            n.stop()
