"""A former primary rejoins a later epoch as a standby (issue 16): real receivers, agents that run the
shipper, a real 3-member etcd on 127.0.0.1, TTL 3 s.

- Four planned switchovers a->b->a->b->a: each node leads from its activated copy, then rejoins the next
  epoch without a reseed (``rejoin = "auto"``: what it led up to the new epoch's fork is kept, checked
  by the fork's digest). Every segment any primary wrote is, byte for byte, in every later primary's
  log and in the last standby's; nothing is quarantined (nothing was past a fork).
- A failover after a switchover: b leads epoch 2 from its activated copy; its host dies (kill -9 of
  agent, shipper and receiver) with a segment a never received; a takes epoch 3. b, restarted, rejoins:
  that segment moves to quarantine/ (the very bytes b's application wrote), b converges on a.
- ``rejoin = "reseed"``: the same rejoin through a full reseed from the new leader's seed_command.

Segments are written whole (rename) and shipped with ``seal = "immediate"``.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from protocol.digest import segment_digest
from receiver.manifest import chain_problem, parse_base, parse_manifest
from tests.helpers.etcd import EtcdCluster, etcd_missing
from tests.helpers.hanode import HaNode, copy_state, ha, names, pair, start_agents, start_ha_nodes, write_segment
from tests.helpers.source import segment_name
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.skipif(etcd_missing() is not None, reason=str(etcd_missing()))
TTL = 3


def digests(d: Path) -> dict[str, bytes]:
    """Each segment's xxh3_128, recomputed from its bytes."""
    return {n: segment_digest(v) for n, v in names(d).items()}


def chain_ok(node: HaNode) -> None:
    """The copy's manifest is one chain, and every record's digest is its log/ file's, recomputed."""
    data = (node.copy() / "manifest").read_bytes()
    records = parse_manifest(data)
    assert chain_problem(records, base=parse_base(data)) == "", records
    for r in records:
        assert segment_digest((node.copy() / "log" / r.name).read_bytes()) == r.digest, r.name


def quarantined(node: HaNode) -> list[Path]:
    q = node.copy() / "quarantine"
    return sorted(p for p in q.rglob("*") if p.is_file()) if q.exists() else []


def eligible(leader: HaNode, node: HaNode, epoch: int) -> bool:
    """The leader's agent published epoch ``epoch``'s sync set and ``node`` may take over."""
    doc = json.loads(ha(leader, "status", "--json").stdout)
    return doc["epoch"] == epoch and doc["members"][node.name]["ineligible"] is None


def switchover(frm: HaNode, to: HaNode, epoch: int) -> None:
    done = ha(frm, "switchover", "--to", to.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{to.name} leads at epoch {epoch} after" in done.stdout, done.stdout
    print(done.stdout.strip())
    assert to.primary() and not frm.primary()


def test_four_switchovers_each_node_rejoins_without_a_reseed(tmp_path: Path, etcd: EtcdCluster, secret: Path) -> None:
    rnd = random.Random(1616)
    a, b, src = pair(tmp_path, etcd.endpoints, secret)
    written: dict[str, bytes] = {}
    n = 0

    def write(d: Path, count: int) -> None:
        nonlocal n
        for _ in range(count):
            n += 1
            data = rnd.randbytes(rnd.randint(20_000, 120_000))
            write_segment(d / segment_name(n), data)
            written[segment_name(n)] = data

    try:
        start_agents([a, b])
        write(src, 3)
        started = time.monotonic()
        order = [(a, b), (b, a), (a, b), (b, a)]
        for epoch, (frm, to) in enumerate(order, start=2):
            # The new primary's bytes are eligible once its copy holds the last one and it is in sync.
            rejoins = frm.log_text().count("as a standby at")
            switchover(frm, to, epoch)
            handed = time.monotonic()
            replica = to.copy() / "replica"
            assert names(replica) == written, f"epoch {epoch}: bytes lost in the switchover"
            if epoch > 2:  # at epoch 1 a shipped its application's own log: it had no copy to rejoin with
                wait_until(lambda f=frm, r=rejoins: f.log_text().count("as a standby at") > r, 20, what="rejoin")
                print(f"epoch {epoch}: {frm.name} rejoined {time.monotonic() - handed:.2f}s after the hand-over")
            write(replica, 2)
            # The old primary rejoins as a standby of the new epoch and receives what the new one writes.
            wait_until(lambda f=frm: names(f.copy() / "log") == written, 30, what=f"{frm.name} converges")
            row = copy_state(frm)
            assert row["epoch"] == epoch and row["state"] in ("Healthy", "Disconnected"), row
            wait_until(lambda f=frm, t=to, e=epoch: eligible(t, f, e), 20, what=f"{frm.name} eligible at {epoch}")
        print(f"four switchovers with writes between them: {time.monotonic() - started:.1f}s")
        # a leads epoch 5; b is a converged standby; every byte written is everywhere, digests recomputed.
        assert a.primary() and not b.primary()
        want = {k: segment_digest(v) for k, v in written.items()}
        assert digests(a.copy() / "replica") == want
        assert digests(b.copy() / "log") == want
        wait_until(lambda: digests(b.copy() / "replica") == want, 30, what="b's replica replayed")
        for node in (a, b):
            chain_ok(node)
            assert quarantined(node) == [], f"{node.name}: nothing was past a fork, nothing quarantined"
        # a shipped its application's own log at epoch 1 (no copy to rejoin with); it rejoined epoch 4,
        # b epochs 3 and 5; none by a reseed.
        assert a.log_text().count("as a standby at") == 1 and b.log_text().count("as a standby at") == 2
        assert a.receiver.count("REJOINED epoch 4") == 1 and b.receiver.count("REJOINED epoch 5") == 1
        assert "reseed" not in (a.copy() / "state.json").read_text()
    finally:
        for node in (a, b):
            node.stop()
    assert "Traceback" not in a.log_text() + b.log_text()


SEED_EMPTY = 'tar -cf - -T /dev/null && echo "$LOGSHIP_SEED_OLDEST" > "$LOGSHIP_SEED_FIRST"'
"""An empty base image, the log sent again from the leader's oldest segment: a plain directory stream's reseed."""


@pytest.mark.parametrize("damaged", [False, True], ids=["kept", "reseeded"])
def test_failover_after_a_switchover_the_old_primary_rejoins(
    tmp_path: Path, etcd: EtcdCluster, secret: Path, damaged: bool
) -> None:
    """``damaged``: b's copy of the fork segment was changed while it was down (another history): the
    digest check fails and ``auto`` reseeds it from a's seed_command instead."""
    rnd = random.Random(1617)
    a, b, src = pair(tmp_path, etcd.endpoints, secret, seed_command=SEED_EMPTY)
    data = {i: rnd.randbytes(rnd.randint(20_000, 120_000)) for i in range(1, 10)}
    try:
        start_agents([a, b])
        for i in (1, 2, 3):
            write_segment(src / segment_name(i), data[i])
        switchover(a, b, 2)
        b_replica = b.copy() / "replica"
        for i in (4, 5):
            write_segment(b_replica / segment_name(i), data[i])
        wait_until(lambda: (a.copy() / "log" / segment_name(5)).exists(), 30, what="a holds 5")
        wait_until(
            lambda: json.loads(ha(a, "status", "--json").stdout)["members"]["a"]["ineligible"] is None,
            20,
            what="a eligible",
        )
        # b's host dies with 6 written and not yet shipped: kill -9 of its shipper first, then the rest.
        assert b.kill_shipper()
        write_segment(b_replica / segment_name(6), data[6])
        b.kill_agent()
        b.receiver.kill9()
        killed = time.monotonic()
        wait_until(a.primary, 30, what="a promoted")
        print(f"kill -9 of b's host -> a's on_promote done: {time.monotonic() - killed:.2f}s")
        a_replica = a.copy() / "replica"
        assert names(a_replica) == {segment_name(i): data[i] for i in range(1, 6)}  # 6 never left b
        for i in (7, 8):  # a's application writes epoch 3's segments: 7 and 8 (6 is b's, lost)
            write_segment(a_replica / segment_name(i), data[i])

        if damaged:
            with open(b_replica / segment_name(5), "r+b") as f:
                f.seek(1000)
                f.write(b"another history")

        # b comes back: its agent rejoins epoch 3, 6 goes to quarantine/, b converges on a.
        b.receiver.start()
        b.start_agent()
        want = names(a_replica)
        wait_until(lambda: names(b.copy() / "log") == want, 40, what="b converges on a")
        wait_until(lambda: names(b_replica) == want, 30, what="b's replica is a's history")
        row = copy_state(b)
        assert row["epoch"] == 3, row
        chain_ok(b)
        q = quarantined(b)
        if damaged:
            assert "rejoined epoch 3 by a reseed" in b.log_text() and "another history" in b.log_text()
            moved = {p.name: p.read_bytes() for p in q if p.parent.name == "replica"}
            assert moved[segment_name(6)] == data[6] and moved[segment_name(5)] != data[5]  # kept as they were
            assert all(p.relative_to(b.copy() / "quarantine").parts[0].startswith("reseed-") for p in q), q
        else:
            segs = [p for p in q if p.name.startswith("E00")]
            assert [p.name for p in segs] == [segment_name(6)], q
            assert segs[0].read_bytes() == data[6]  # b's own bytes past the fork, intact
            assert "past that fork" in next(p for p in q if p.name == "reason").read_text()
            assert "rejoined epoch 3 as a standby" in b.log_text()
        assert a.primary() and not b.primary()
    finally:
        for node in (a, b):
            node.stop()
    assert "Traceback" not in a.log_text() + b.log_text()


def test_rejoin_by_reseed(tmp_path: Path, etcd: EtcdCluster, secret: Path) -> None:
    """``rejoin = "reseed"``: the old copy moves aside whole; the new leader's seed_command (an empty
    image: the log is sent again from its oldest segment) makes the copy whole again."""
    rnd = random.Random(1618)
    a, b, src = pair(tmp_path, etcd.endpoints, secret, rejoin="reseed", seed_command=SEED_EMPTY)
    written: dict[str, bytes] = {}
    try:
        start_agents([a, b])
        for i in (1, 2):
            written[segment_name(i)] = rnd.randbytes(30_000)
            write_segment(src / segment_name(i), written[segment_name(i)])
        switchover(a, b, 2)
        written[segment_name(3)] = rnd.randbytes(30_000)
        write_segment(b.copy() / "replica" / segment_name(3), written[segment_name(3)])
        wait_until(lambda: names(a.copy() / "log") == written, 30, what="a holds 3")
        wait_until(lambda: json.loads(ha(b, "status", "--json").stdout)["members"]["a"]["ineligible"] is None, 20)
        switchover(b, a, 3)
        written[segment_name(4)] = rnd.randbytes(30_000)
        write_segment(a.copy() / "replica" / segment_name(4), written[segment_name(4)])
        wait_until(lambda: names(b.copy() / "log") == written, 40, what="b reseeded and converged")
        assert "by a reseed" in b.log_text()
        assert any(p.name.startswith("reseed-") for p in (b.copy() / "quarantine").iterdir())
        assert copy_state(b)["epoch"] == 3
    finally:
        for node in (a, b):
            node.stop()
    assert "Traceback" not in a.log_text() + b.log_text()


def test_three_nodes_a_former_primary_down_for_two_epochs_rejoins(
    tmp_path: Path, etcd: EtcdCluster, secret: Path
) -> None:
    """b leads epoch 2 (switchover from a) and its host dies with 5 unshipped; a takes epoch 3, then hands
    over to c (epoch 4) while b is down. b, restarted, rejoins at the earliest fork after its epoch (3's,
    the end of 4): 5 goes to quarantine, and c's shipper sends b what a and c wrote (6 to 9)."""
    rnd = random.Random(1620)
    data = {i: rnd.randbytes(rnd.randint(20_000, 80_000)) for i in range(1, 10)}
    nodes = start_ha_nodes(tmp_path, etcd.endpoints, secret, "abc", TTL, sync="ALL", shipper={"seal": "immediate"})
    a, b, c = nodes
    src = tmp_path / "a" / "src"
    try:
        for i in (1, 2):
            write_segment(src / segment_name(i), data[i])
        switchover(a, b, 2)
        b_replica = b.copy() / "replica"
        for i in (3, 4):
            write_segment(b_replica / segment_name(i), data[i])
        for n in (a, c):
            wait_until(lambda n=n: (n.copy() / "log" / segment_name(4)).exists(), 30, what=f"{n.name} holds 4")
        wait_until(lambda: eligible(b, a, 2) and eligible(b, c, 2), 20, what="a and c eligible")
        assert b.kill_shipper()
        write_segment(b_replica / segment_name(5), data[5])  # never shipped: lost with b's host
        b.kill_agent()
        b.receiver.kill9()
        winner = wait_until(lambda: next((n for n in (a, c) if n.primary()), None), 30, what="a or c promoted")
        other = c if winner is a else a
        for i in (6, 7):
            write_segment(winner.copy() / "replica" / segment_name(i), data[i])
        wait_until(lambda: (other.copy() / "log" / segment_name(7)).exists(), 30, what=f"{other.name} holds 7")
        wait_until(lambda: eligible(winner, other, 3), 20, what=f"{other.name} eligible at 3")
        switchover(winner, other, 4)  # b is still down: it misses epochs 3 and 4
        for i in (8, 9):
            write_segment(other.copy() / "replica" / segment_name(i), data[i])

        b.receiver.start()
        b.start_agent()
        want = {segment_name(i): data[i] for i in (1, 2, 3, 4, 6, 7, 8, 9)}
        wait_until(lambda: names(b.copy() / "log") == want, 40, what="b converges on epoch 4")
        wait_until(lambda: names(b_replica) == want, 30, what="b's replica")
        assert copy_state(b)["epoch"] == 4
        chain_ok(b)
        assert f"rejoined epoch 4 as a standby at {segment_name(4)}@{len(data[4])}" in b.log_text()
        segs = [p for p in quarantined(b) if p.name.startswith("E00")]
        assert [p.name for p in segs] == [segment_name(5)] and segs[0].read_bytes() == data[5]
        assert names(winner.copy() / "log") == want  # the former leader of epoch 3 follows c too
    finally:
        for n in nodes:
            n.stop()
    assert "Traceback" not in "".join(n.log_text() for n in nodes)
