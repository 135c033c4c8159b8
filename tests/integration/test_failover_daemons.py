"""Automatic failover with real daemons (issue 16): two nodes, each a receiver and a ``logship ha`` agent
that runs the shipper while its node leads, against a real 3-member etcd on 127.0.0.1, TTL 3 s.

a bootstraps (epoch 1) and ships its application's log to b. kill -9 of a's agent alone: its shipper
still acknowledges to b, so b does not take over. kill -9 of a's shipper too (and its receiver: the
host is gone): b is activated at epoch 2 by its agent, on_promote runs, b ships its replica; every
byte ``shipper wait`` confirmed is in b's replica; a's old shipper, restarted, is refused. a's agent
and receiver come back: a follows b as a standby and converges on b's bytes, including what b wrote.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.etcd import EtcdCluster, etcd_missing
from tests.helpers.hanode import HaNode, copy_state, readable, shipper_wait, start_ha_nodes, write_segment
from tests.helpers.proxies import ProxyThread, Relay
from tests.helpers.source import ROOT, segment_name
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.skipif(etcd_missing() is not None, reason=str(etcd_missing()))
TTL = 3


def etcd_get(etcd: EtcdCluster, key: str) -> str | None:
    return etcd.get(key)


def test_agent_driven_failover_fence_and_rejoin(tmp_path: Path, etcd: EtcdCluster, secret: Path) -> None:
    rnd = random.Random(16)
    nodes = start_ha_nodes(tmp_path, etcd.endpoints, secret, ttl=TTL)
    a, b = nodes
    src = tmp_path / "a" / "src"
    try:
        assert etcd_get(etcd, "/logship/c1/sg1/epoch") == "1"

        # The application writes on a: 1-3 sealed, 4 active; everything confirmed by `shipper wait`.
        data = {i: rnd.randbytes(rnd.randint(20_000, 120_000)) for i in range(1, 9)}
        for i in (1, 2, 3):
            write_segment(src / segment_name(i), data[i])
        with open(src / segment_name(4), "wb") as f:
            f.write(data[4][:10_000])
        done = shipper_wait(a, segment_name(3), "--sealed")
        assert done.returncode == 0, done.stdout + done.stderr
        done = shipper_wait(a, segment_name(4), "--offset", "10000")
        assert done.returncode == 0, done.stdout + done.stderr
        wait_until(lambda: json.loads(etcd_get(etcd, "/logship/c1/sg1/sync") or "{}").get("nodes") == ["b"], 15)

        # kill -9 of a's agent alone: the leader key expires, but a's shipper still acknowledges to b.
        a.kill_agent()
        gone = time.monotonic()
        wait_until(lambda: etcd_get(etcd, "/logship/c1/sg1/leader") is None, 3 * TTL, what="a's leader key expired")
        with open(src / segment_name(4), "ab") as f:
            f.write(data[4][10_000:])
        write_segment(src / segment_name(5), data[5][:5_000])
        done = shipper_wait(a, segment_name(4), "--sealed")
        assert done.returncode == 0, done.stdout + done.stderr  # the primary goes on working
        while time.monotonic() - gone < 2 * TTL + 1:
            assert not b.primary(), "b took over while a's shipper still acknowledged to it"
            time.sleep(0.1)
        assert "still attached and acknowledging" in b.log_text()

        # a's host dies: its shipper and receiver too. b takes epoch 2 and is activated by its agent.
        assert a.kill_shipper()
        a.receiver.kill9()
        killed = time.monotonic()
        wait_until(b.primary, 30, what="b promoted")
        print(f"kill -9 of the primary's shipper -> b's on_promote done: {time.monotonic() - killed:.2f}s")
        assert etcd_get(etcd, "/logship/c1/sg1/epoch") == "2"
        assert etcd_get(etcd, "/logship/c1/sg1/leader") == "b"
        row = copy_state(b)
        assert row["state"] == "Activated" and row["epoch"] == 2, row
        # Every confirmed byte is on the new primary: 1-4 whole in its replica (the new epoch), and
        # 5's first 5000 bytes (acknowledged, unsealed) beside it as the activation's partial.
        replica = b.copy() / "replica"
        for i in (1, 2, 3, 4):
            assert (replica / segment_name(i)).read_bytes() == data[i], i
        assert readable(replica / f"{segment_name(5)}.partial") == data[5][:5_000]

        # The old primary cannot write: its shipper, restarted at epoch 1, is refused by b.
        old = subprocess.Popen(
            [sys.executable, "-m", "shipper", "--config", str(a.ship_dir / "ha-shipper.toml")],
            stdout=open(tmp_path / "old-shipper.log", "wb"),
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        try:
            log = tmp_path / "old-shipper.log"
            wait_until(lambda: "fenced" in log.read_text(), 30, what="a's old shipper fenced")
            assert b.receiver.count("refused stream sg1: activated at epoch 2") >= 1
        finally:
            old.kill()
            old.wait(10)
        assert (replica / segment_name(4)).read_bytes() == data[4]

        # b's application writes on in the new epoch (its replica is the stream's log now).
        write_segment(replica / segment_name(5), data[6])
        write_segment(replica / segment_name(6), data[7])
        write_segment(replica / segment_name(7), data[8])

        # a comes back: it follows b as a standby and converges on b's history.
        a.receiver.start()
        a.start_agent()
        wait_until(lambda: a.roles().endswith("follow b\n"), 30, what="a follows b")
        assert not a.primary()
        want = {segment_name(i): (replica / segment_name(i)).read_bytes() for i in range(1, 7)}
        a_log = a.copy() / "log"
        wait_until(lambda: all(readable(a_log / n) == v for n, v in want.items()), 60, what="a converges on b's bytes")
        assert copy_state(a)["epoch"] == 2
        member = json.loads(etcd_get(etcd, "/logship/c1/sg1/members/a") or "{}")
        assert member["role"] == "standby" and member["epoch"] == 2, member
        assert b.primary() and not a.primary()
    finally:
        for n in nodes:
            n.stop()
    assert "Traceback" not in a.log_text() + b.log_text()


def test_agent_restarted_within_the_ttl_keeps_the_lead(tmp_path: Path, etcd: EtcdCluster, secret: Path) -> None:
    """kill -9 of the primary's agent and a restart before its lease ran out: the new agent rebinds the
    leader key to its own lease, replaces the orphan shipper, and nobody takes over (epoch stays 1)."""
    a, b = start_ha_nodes(tmp_path, etcd.endpoints, secret, ttl=TTL)
    src = tmp_path / "a" / "src"
    try:
        orphan = a.shipper_pid()
        assert orphan is not None
        a.kill_agent()
        a.start_agent()
        wait_until(lambda: a.shipper_pid() not in (None, orphan), 30, what="a's new agent ships again")
        wait_until(a.primary, 30, what="a leads again")
        write_segment(src / segment_name(1), b"1" * 40_000)
        write_segment(src / segment_name(2), b"2" * 10)
        done = shipper_wait(a, segment_name(1), "--sealed")
        assert done.returncode == 0, done.stdout + done.stderr
        time.sleep(2 * TTL)  # well past the old lease: still a's key, still epoch 1
        assert etcd_get(etcd, "/logship/c1/sg1/leader") == "a"
        assert etcd_get(etcd, "/logship/c1/sg1/epoch") == "1"
        assert not b.primary() and "promote" not in b.roles()
    finally:
        for n in (a, b):
            n.stop()


def test_three_nodes_the_other_standby_rewinds_and_follows(tmp_path: Path, etcd: EtcdCluster, secret: Path) -> None:
    """a ships to b and c (sync ALL); a's host dies with an acknowledged partial segment on both. The
    winner's activation forks at the end of its last sealed segment, so the other standby's copy is past
    the fork: it is fenced by its agent, rewinds the partial into quarantine/ and converges on the winner."""
    rnd = random.Random(163)
    nodes = start_ha_nodes(tmp_path, etcd.endpoints, secret, "abc", TTL, sync="ALL")
    a, b, c = nodes
    src = tmp_path / "a" / "src"
    try:
        data = {i: rnd.randbytes(rnd.randint(20_000, 100_000)) for i in range(1, 5)}
        for i in (1, 2, 3):
            write_segment(src / segment_name(i), data[i])
        with open(src / segment_name(4), "wb") as f:
            f.write(data[4][:30_000])
        done = shipper_wait(a, segment_name(4), "--offset", "30000")
        assert done.returncode == 0, done.stdout + done.stderr
        sync = lambda: json.loads(etcd_get(etcd, "/logship/c1/sg1/sync") or "{}").get("nodes")  # noqa: E731
        wait_until(lambda: sync() == ["b", "c"], 15, what="sync set b, c")

        a.kill_agent()
        assert a.kill_shipper()
        a.receiver.kill9()
        winner = wait_until(lambda: next((n for n in (b, c) if n.primary()), None), 30, what="a standby promoted")
        other = c if winner is b else b
        assert etcd_get(etcd, "/logship/c1/sg1/epoch") == "2"
        replica = winner.copy() / "replica"
        for i in (1, 2, 3):
            assert (replica / segment_name(i)).read_bytes() == data[i]
        # The other copy held 30000 bytes of 4 past the fork (end of 3): rewound into quarantine/.
        wait_until(lambda: other.receiver.count("REWOUND") >= 1, 30, what=f"{other.name} rewinds")
        quarantined = list((other.copy() / "quarantine").glob("rewind-epoch2-*/**/*"))
        assert any(p.name.startswith(segment_name(4)) for p in quarantined), quarantined
        # The winner's application writes its own 4' and 5 under the same names: the other converges.
        new4, new5 = rnd.randbytes(50_000), rnd.randbytes(20_000)
        write_segment(replica / segment_name(4), new4)
        write_segment(replica / segment_name(5), new5)
        write_segment(replica / segment_name(6), b"6")
        log = other.copy() / "log"
        want = {segment_name(1): data[1], segment_name(4): new4, segment_name(5): new5}
        wait_until(lambda: all(readable(log / k) == v for k, v in want.items()), 60, what="the other converges")
        wait_until(lambda: other.roles().endswith(f"follow {winner.name}\n"), 15, what="the other follows")
        assert not other.primary()
    finally:
        for n in nodes:
            n.stop()


def test_a_blip_shorter_than_the_ttl_changes_nothing(tmp_path: Path, etcd: EtcdCluster, secret: Path) -> None:
    """a's only link to etcd stalls for 1 s (every byte held, then delivered): within TTL - margin of
    its last keep-alive, so a neither demotes nor is replaced; b holds; the epoch stays 1."""
    src = tmp_path / "a" / "src"
    src.mkdir(parents=True)
    link = ProxyThread(Relay(etcd.members[0].client_port))
    a = HaNode(tmp_path, "a", secret, source=src)
    b = HaNode(tmp_path, "b", secret)
    try:
        a.receiver.start()
        b.receiver.start()
        a.write_config([f"http://127.0.0.1:{link.proxy.port}"], {"b": b.receiver.address}, TTL)
        b.write_config(etcd.endpoints, {"a": a.receiver.address}, TTL)
        a.start_agent()
        wait_until(a.primary, 30, what="a bootstraps as the primary")
        b.start_agent()
        wait_until(lambda: "follow a" in b.roles(), 30, what="b follows a")
        for _ in range(3):
            link.call_soon(link.proxy._open.clear)  # the blip: a's etcd traffic held
            time.sleep(1.0)
            link.call_soon(link.proxy._open.set)
            time.sleep(2 * TTL)  # well over a TTL between blips: the lease is renewed again
        assert a.primary() and not b.primary()
        assert a.roles() == "demote\npromote\n", a.roles()  # the start's demote, the bootstrap; nothing since
        assert "promote" not in b.roles()
        assert etcd_get(etcd, "/logship/c1/sg1/epoch") == "1" and etcd_get(etcd, "/logship/c1/sg1/leader") == "a"
    finally:
        for n in (a, b):
            n.stop()
        link.close()
