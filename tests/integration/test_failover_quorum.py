"""Two of three etcd members stopped while the real daemons run (issue 16: "no promotion anywhere").

Three nodes, each a real receiver and a ``logship ha`` agent (a's runs a's shipper to b and c, sync
ALL), against a real 3-member etcd on 127.0.0.1, TTL 3 s. The test freezes two etcd members with
SIGSTOP, by pid: a host that hangs rather than one that dies, so the agents' etcd calls wait for
their timeouts instead of meeting a refused connection. It freezes m0 and m1, the members every
agent's client asks first (the member left, m2, has no raft majority and answers nothing useful).
A second case kills the two members with SIGKILL and starts them again on their data dirs.

Sampling the three agents' own ``/status`` every ~50 ms for 3 TTL, it asserts: a demotes on its own
clock within its TTL of the freeze (its shipper stopped, on_demote ran: the documented safe
default); after that no agent says primary while the majority is gone, and nobody's epoch grows;
b's and c's copies hold every byte ``shipper wait`` confirmed before. With the members back: exactly
one primary within a bounded time (a again at epoch 1 when its lease outlived the outage, as etcd's
new raft leader renews every lease; else b or c at epoch 2), epochs only grew, the application
writes on the primary, and the other two converge on its bytes.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import pytest

from logship.ha.view_file import view_path
from tests.helpers.etcd import EtcdCluster, etcd_missing
from tests.helpers.hanode import HaNode, readable, shipper_wait, start_ha_nodes, write_segment
from tests.helpers.hasampler import Sampler
from tests.helpers.source import segment_name
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.skipif(etcd_missing() is not None, reason=str(etcd_missing()))
TTL = 3
HOLD = 3 * TTL
"""How long the majority stays gone."""
ELECTION = 1.0
"""etcd's election timeout in tests/helpers/etcd.py: how long an isolated raft leader may still renew leases."""
LOST = (0, 1)
"""The members stopped: the first two endpoints, which every agent's client tries first."""


def held(copy: Path, name: str) -> bytes:
    """A segment of a standby's copy: sealed in log/, or its unsealed tail in incoming/."""
    return readable(copy / "log" / name) or readable(copy / "incoming" / f"{name}.partial") or b""


def primaries(roles: dict[str, str | None]) -> list[str]:
    return sorted(n for n, r in roles.items() if r == "primary")


@pytest.mark.parametrize("how", ["sigstop", "sigkill"])
def test_two_of_three_etcd_members_stopped_no_promotion_anywhere(
    tmp_path: Path, etcd: EtcdCluster, secret: Path, how: str
) -> None:
    nodes = start_ha_nodes(tmp_path, etcd.endpoints, secret, ("a", "b", "c"), TTL, admin="127.0.0.1:0", sync="ALL")
    try:
        outage_and_back(etcd, nodes, how)
    finally:
        for n in nodes:
            n.stop()
    assert "Traceback" not in "".join(n.log_text() for n in nodes)


def outage_and_back(etcd: EtcdCluster, nodes: list[HaNode], how: str) -> None:
    rnd = random.Random(1617)
    a, b, c = nodes
    src = a.source
    assert src is not None
    wait_until(lambda: all(n.ha_status() for n in nodes), 10, what="every agent's /status")
    data = {i: rnd.randbytes(rnd.randint(20_000, 80_000)) for i in (1, 2, 3)}
    for i in (1, 2, 3):
        write_segment(src / segment_name(i), data[i])
    active = src / segment_name(4)
    active.write_bytes(rnd.randbytes(10_000))
    for segment, how_far in ((3, ("--sealed",)), (4, ("--offset", "10000"))):  # sync ALL: b and c hold it
        done = shipper_wait(a, segment_name(segment), *how_far)
        assert done.returncode == 0, done.stdout + done.stderr
    confirmed_4 = active.read_bytes()[:10_000]

    def writer() -> None:
        """The application goes on writing on a until a's on_demote stops it."""
        with open(active, "ab") as f:
            for _ in range(1500):  # bounded: 1500 x 4 KiB at most
                if not a.primary():
                    return
                f.write(rnd.randbytes(4096))
                f.flush()
                time.sleep(0.02)

    sampler = Sampler(nodes, b)
    threads = [threading.Thread(target=sampler.run), threading.Thread(target=writer)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        lost = time.time()
        for i in LOST:
            etcd.pause(i) if how == "sigstop" else etcd.kill(i)
        time.sleep(HOLD)
        # Still within the outage: a's shipper is gone, nobody is primary, and both standbys' copies
        # hold every byte `shipper wait` confirmed (after the outage a new primary may rewind them).
        assert a.shipper_pid() is None, "a's shipper still runs with the etcd majority gone"
        assert not any(n.primary() for n in nodes), [n.roles() for n in nodes]
        for n in (b, c):
            for i in (1, 2, 3):
                assert held(n.copy(), segment_name(i)) == data[i], (n.name, i)
            tail = held(n.copy(), segment_name(4))
            assert tail[:10_000] == confirmed_4 and active.read_bytes().startswith(tail), (n.name, len(tail))
        # The agent's view file (logship/ha/view_file.py) has a's last successful keep-alive, wall clock.
        renewed = json.loads(view_path(a.data_dir, "sg1").read_text())["lease_renewed_at"]
        back = time.time()
        for i in LOST:
            etcd.resume(i) if how == "sigstop" else etcd.start_member(i)
        wait_until(lambda: len(primaries(sampler.samples[-1].roles)) == 1, 30, what="one primary again")
        time.sleep(1)  # a few more samples with the new primary settled
    finally:
        sampler.stop.set()
        for t in threads:
            t.join(15)
    samples = sampler.samples
    during = [s for s in samples if lost <= s.at < back]
    assert len(during) >= HOLD / 0.2, f"only {len(during)} samples while the majority was gone"
    # a demoted on its own clock (nobody could tell it to: etcd has no majority) within its TTL of its
    # last successful keep-alive: before its lease can have expired. An isolated etcd raft leader still
    # renews leases until it steps down (its election timeout, 1 s here), so that last keep-alive may
    # come up to about 1 s after the loss.
    demoted = [t for k, t in a.events() if k == "demote" and t > lost]
    assert demoted, f"a never demoted with the etcd majority gone: {a.roles()!r}"
    assert renewed is not None and renewed < demoted[0], renewed
    assert demoted[0] - renewed <= TTL, f"a demoted {demoted[0] - renewed:.2f}s after its last keep-alive"
    assert demoted[0] - lost <= TTL + ELECTION, f"a demoted {demoted[0] - lost:.2f}s after the majority was lost"
    assert "demoted at epoch 1" in a.log_text()
    # From then until the majority came back: no primary anywhere, no epoch grew.
    late = [s for s in during if s.at > demoted[0]]
    assert late and not any(primaries(s.roles) for s in late), [s.roles for s in late if primaries(s.roles)][:3]
    assert all(set(s.epochs.values()) <= {1} for s in during), {e for s in during for e in s.epochs.values()}
    for n in nodes:
        assert not [t for k, t in n.events() if k == "promote" and lost < t < back], (n.name, n.events())
    # Never two primaries at a sampled instant; each agent's epoch only grew, over the whole run.
    assert not [s for s in samples if len(primaries(s.roles)) > 1], "two primaries at once"
    for n in nodes:
        seen = [s.epochs[n.name] for s in samples if n.name in s.epochs]
        assert seen == sorted(seen), (n.name, seen)

    # The majority back: one primary; its application writes on, the other two converge on it.
    (p,) = [n for n in nodes if n.name == primaries(samples[-1].roles)[0]]
    epoch = int(etcd.get("/logship/c1/sg1/epoch") or 0)
    assert etcd.get("/logship/c1/sg1/leader") == p.name and epoch == (1 if p is a else 2), (p.name, epoch)
    wait_until(p.primary, 30, what=f"{p.name}'s on_promote ran")
    log = src if p is a else p.copy() / "replica"
    if p is not a:  # its history forked at the end of 3: the application writes 4 anew
        write_segment(log / segment_name(4), rnd.randbytes(30_000))
    for i in (5, 6, 7):
        write_segment(log / segment_name(i), rnd.randbytes(rnd.randint(20_000, 60_000)))
    done = shipper_wait(p, segment_name(6), "--sealed")
    assert done.returncode == 0, done.stdout + done.stderr
    want = {segment_name(i): (log / segment_name(i)).read_bytes() for i in range(1, 7)}
    for n in nodes:
        if n is not p:
            converged = lambda n=n: all(readable(n.copy() / "log" / k) == v for k, v in want.items())  # noqa: E731
            wait_until(converged, 60, what=f"{n.name} converges on {p.name}'s log")
            doc = n.ha_status()
            assert doc is not None and doc["role"] == "standby" and doc["leader"] == p.name, doc
    print(
        f"figures ({how}): majority lost -> a's on_demote {demoted[0] - lost:.2f}s (last keep-alive "
        f"{renewed - lost:+.2f}s, -> on_demote {demoted[0] - renewed:.2f}s); {len(during)} samples "
        f"in {back - lost:.1f}s without a majority; back -> {p.name} primary at epoch {epoch} "
        f"{min(s.at for s in samples if s.at > back and primaries(s.roles)) - back:.2f}s later"
    )
