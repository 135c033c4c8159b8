"""Two real ``python -m logship.ha`` agents against a real 3-member etcd: election, kill -9 of the
leader's agent, and a leader cut off from etcd that demotes on its own clock (no split brain).

No receiver or shipper yet (fence / activate --epoch / wait come with issues 14 and 15): the agents
only run their hooks, which record the role in files the test samples.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.etcd import EtcdCluster, etcd_missing
from tests.helpers.procs import stop_popen
from tests.helpers.proxies import ProxyThread, Relay
from tests.helpers.source import ROOT
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.skipif(etcd_missing() is not None, reason=str(etcd_missing()))


def agent(tmp_path: Path, node: str, endpoints: list[str]) -> subprocess.Popen[bytes]:
    d = tmp_path / node
    d.mkdir(exist_ok=True)
    eps = ", ".join(f'"{e}"' for e in endpoints)
    (d / "node.toml").write_text(
        f"""[ha]
cluster = "c1"
node = "{node}"
stream = "sg1"
etcd = [{eps}]
ttl = 3
dial = "best"
on_promote = "touch {d}/primary; echo promote >> {d}/roles"
on_demote = "rm -f {d}/primary; echo demote >> {d}/roles"
on_follow = "echo follow {{primary}} >> {d}/roles"
"""
    )
    log = open(d / "agent.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "logship.ha", "--config", str(d / "node.toml")], stdout=log, stderr=log, cwd=ROOT
    )


def primaries(tmp_path: Path) -> list[str]:
    return [n for n in ("a", "b") if (tmp_path / n / "primary").exists()]


def roles(tmp_path: Path, node: str) -> str:
    p = tmp_path / node / "roles"
    return p.read_text() if p.exists() else ""


def test_election_and_kill_of_the_leader(tmp_path: Path, etcd: EtcdCluster) -> None:
    a = agent(tmp_path, "a", etcd.endpoints)
    try:
        wait_until(lambda: primaries(tmp_path) == ["a"], 30, what="a promoted")
        b = agent(tmp_path, "b", etcd.endpoints)
        try:
            wait_until(lambda: "follow a" in roles(tmp_path, "b"), 30, what="b follows a")
            assert primaries(tmp_path) == ["a"]
            a.kill()  # kill -9 of the leader's agent, by pid
            a.wait(10)
            killed = time.monotonic()
            wait_until(lambda: (tmp_path / "b" / "primary").exists(), 30, what="b promoted")
            rto = time.monotonic() - killed
            print(f"RTO kill -9 -> on_promote done: {rto:.2f}s")
            assert rto < 3 + 5, rto  # TTL plus a busy machine's slack
        finally:
            stop_popen(b)
    finally:
        stop_popen(a)


def test_leader_cut_off_from_etcd_demotes_no_split_brain(tmp_path: Path, etcd: EtcdCluster) -> None:
    link = ProxyThread(Relay(etcd.members[0].client_port))
    a = agent(tmp_path, "a", [f"http://127.0.0.1:{link.proxy.port}"])
    b = None
    try:
        wait_until(lambda: primaries(tmp_path) == ["a"], 30, what="a promoted")
        b = agent(tmp_path, "b", etcd.endpoints)
        wait_until(lambda: "follow a" in roles(tmp_path, "b"), 30, what="b follows a")
        link.close()  # a's only way to etcd is gone; a itself keeps running
        cut = time.monotonic()
        both = 0
        while time.monotonic() - cut < 30 and not (tmp_path / "b" / "primary").exists():
            both += primaries(tmp_path) == ["a", "b"]
            time.sleep(0.02)
        assert (tmp_path / "b" / "primary").exists(), "b never promoted"
        assert "demote" in roles(tmp_path, "a")
        assert both == 0
        wait_until(lambda: primaries(tmp_path) == ["b"], 10, what="only b primary")
    finally:
        for p in (a, b):
            if p is not None:
                stop_popen(p)


def test_majority_of_etcd_lost_nobody_promoted_primary_demotes(tmp_path: Path, etcd: EtcdCluster) -> None:
    a = agent(tmp_path, "a", etcd.endpoints)
    b = None
    try:
        wait_until(lambda: primaries(tmp_path) == ["a"], 30, what="a promoted")
        b = agent(tmp_path, "b", etcd.endpoints)
        wait_until(lambda: "follow a" in roles(tmp_path, "b"), 30, what="b follows a")
        etcd.kill(1)
        etcd.kill(2)
        wait_until(lambda: primaries(tmp_path) == [], 15, what="a demoted (the safe default)")
        held = time.monotonic()
        while time.monotonic() - held < 8:  # several TTLs: still nobody promoted
            assert primaries(tmp_path) == []
            time.sleep(0.05)
        assert "promote" not in roles(tmp_path, "b")
    finally:
        for p in (a, b):
            if p is not None:
                stop_popen(p)
