"""The primary cut off from etcd while its real daemons run (issue 16's second test).

Two nodes, each a real receiver and a ``logship ha`` agent (which runs the shipper while its node
leads), against a real 3-member etcd on 127.0.0.1, TTL 3 s. a's agent reaches every etcd member only
through a TCP relay of ours (tests/helpers/proxies.py ``CuttableLink``); b's agent reaches etcd
directly, and a's shipper reaches b's receiver directly. The test closes a's relays while a's shipper
goes on shipping an application that keeps writing, and samples every ~50 ms: both agents' own
``/status`` (role, epoch), b's receiver row (is a shipper of epoch 1 attached?) and b's copy position.

It asserts: a demotes on its own clock within its TTL of the cut (its shipper stops, on_demote ran);
b is promoted only after no shipper of epoch 1 is attached to it, and after a's on_demote ended (the
hooks' timestamps); at no sampled instant do both agents say primary; epochs only grow; every byte
``shipper wait`` confirmed is in b's history. The relays reopened: a rejoins as b's standby and
converges on b's log. A second test closes the relays for less than TTL - margin: nothing changes.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from pathlib import Path

import pytest

from logship.ha.local import copy_mark
from tests.helpers.etcd import EtcdCluster, etcd_missing
from tests.helpers.hanode import HaNode, readable, shipper_wait, start_agents, write_segment
from tests.helpers.hasampler import Sampler
from tests.helpers.proxies import CuttableLink
from tests.helpers.source import segment_name
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.skipif(etcd_missing() is not None, reason=str(etcd_missing()))
TTL = 3


def two_nodes(tmp_path: Path, etcd: EtcdCluster, secret: Path) -> tuple[HaNode, HaNode, list[CuttableLink]]:
    """a (the application's source, etcd only through relays) bootstraps and ships to b; both agents run."""
    src = tmp_path / "a" / "src"
    src.mkdir(parents=True)
    links = [CuttableLink(m.client_port) for m in etcd.members]
    a = HaNode(tmp_path, "a", secret, source=src)
    b = HaNode(tmp_path, "b", secret)
    a.receiver.start()
    b.receiver.start()
    a.write_config([ln.endpoint for ln in links], {"b": b.receiver.address}, TTL, admin="127.0.0.1:0")
    b.write_config(etcd.endpoints, {"a": a.receiver.address}, TTL, admin="127.0.0.1:0")
    start_agents([a, b])
    wait_until(lambda: a.ha_status() and b.ha_status(), 10, what="both agents' /status")
    return a, b, links


def held(replica: Path, name: str) -> bytes:
    """A segment of b's history: sealed in replica/, or the activation's partial beside it."""
    return readable(replica / name) or readable(replica / f"{name}.partial") or b""


def test_primary_cut_off_from_etcd_demotes_while_its_shipper_ran(
    tmp_path: Path, etcd: EtcdCluster, secret: Path
) -> None:
    rnd = random.Random(1616)
    a, b, links = two_nodes(tmp_path, etcd, secret)
    src = a.source
    assert src is not None
    stop_writing = threading.Event()
    sampler = Sampler([a, b], b)
    threads: list[threading.Thread] = []
    try:
        data = {i: rnd.randbytes(rnd.randint(20_000, 80_000)) for i in (1, 2, 3)}
        for i in (1, 2, 3):
            write_segment(src / segment_name(i), data[i])
        active = src / segment_name(4)
        with open(active, "wb") as f:
            f.write(rnd.randbytes(10_000))
        done = shipper_wait(a, segment_name(3), "--sealed")
        assert done.returncode == 0, done.stdout + done.stderr
        done = shipper_wait(a, segment_name(4), "--offset", "10000")
        assert done.returncode == 0, done.stdout + done.stderr
        confirmed_4 = active.read_bytes()[:10_000]

        def writer() -> None:
            """The application goes on writing on a until a's on_demote stops it."""
            with open(active, "ab") as f:
                for _ in range(1500):  # bounded: 1500 x 4 KiB at most
                    if stop_writing.is_set() or not a.primary():
                        return
                    f.write(rnd.randbytes(4096))
                    f.flush()
                    time.sleep(0.02)

        threads = [threading.Thread(target=sampler.run), threading.Thread(target=writer)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        at_cut = copy_mark(b.copy())
        assert at_cut is not None
        cut = time.time()
        for ln in links:
            ln.sever()  # a's agent reaches no etcd member now; its shipper still reaches b
        wait_until(b.primary, 30, what="b promoted")
        settled = lambda: sampler.samples and sampler.samples[-1].roles == {"a": "standby", "b": "primary"}  # noqa: E731
        with contextlib.suppress(AssertionError):  # the invariants below say what went wrong
            wait_until(settled, 10, what="a standby, b primary")
        time.sleep(0.5)
    finally:
        stop_writing.set()
        sampler.stop.set()
        for t in threads:
            t.join(15)
    try:
        samples = sampler.samples
        # No sampled instant with two primaries; epochs only grow, per agent.
        both = [s for s in samples if s.roles.get("a") == "primary" and s.roles.get("b") == "primary"]
        assert not both, f"{len(both)} samples with two primaries, the first {both[0].at - cut:.2f}s after the cut"
        for name in ("a", "b"):
            seen = [s.epochs[name] for s in samples if name in s.epochs]
            assert seen == sorted(seen), (name, seen)
        # b took epoch 2 only once no shipper of epoch 1 was attached to it.
        attached = [s.at for s in samples if s.b_row == ("Healthy", 1)]
        took = [s.at for s in samples if s.epochs.get("b", 0) >= 2 or (s.b_row or ("", 0))[1] >= 2]
        assert attached and took, "the samples missed the attachment or the takeover"
        assert max(attached) < min(took), (max(attached) - cut, min(took) - cut)
        a_events, b_events = a.events(), b.events()
        demoted = [t for k, t in a_events if k == "demote" and t > cut]
        promoted = [t for k, t in b_events if k == "promote"]
        assert demoted and promoted, (a_events, b_events)
        # a demoted on its own clock, within its TTL of the cut (the lease, renewed before the cut,
        # runs out TTL after its last keep-alive), and its shipper is gone.
        assert demoted[0] - cut <= TTL, f"a demoted {demoted[0] - cut:.2f}s after the cut"
        assert "demoted at epoch 1" in a.log_text()
        assert a.shipper_pid() is None
        # b's on_promote ended after a's on_demote ended: never two applications writing.
        assert promoted[0] > demoted[0], (demoted, promoted)
        # a's shipper went on shipping after the cut (the primary lost etcd, not its standby).
        assert any(s.b_total > at_cut.total for s in samples if s.at < demoted[0]), "nothing arrived after the cut"
        assert etcd.get("/logship/c1/sg1/epoch") == "2" and etcd.get("/logship/c1/sg1/leader") == "b"
        print(
            f"figures: cut -> a's on_demote {demoted[0] - cut:.2f}s, -> b's on_promote {promoted[0] - cut:.2f}s, "
            f"{len(samples)} samples, last attached {max(attached) - cut:.2f}s, epoch 2 seen {min(took) - cut:.2f}s"
        )
        # Every byte `shipper wait` confirmed before the cut is in b's history.
        replica = b.copy() / "replica"
        for i in (1, 2, 3):
            assert held(replica, segment_name(i)) == data[i], i
        tail = held(replica, segment_name(4))
        assert tail[:10_000] == confirmed_4 and active.read_bytes().startswith(tail)

        # The relays reopened: a (its copy never activated) rejoins as b's standby and converges.
        for ln in links:
            ln.mend()
        wait_until(lambda: a.roles().endswith("follow b\n"), 30, what="a follows b")
        new = {i: rnd.randbytes(rnd.randint(20_000, 60_000)) for i in (4, 5, 6)}
        for i in (4, 5, 6):
            write_segment(replica / segment_name(i), new[i])
        want = {segment_name(i): data[i] for i in (1, 2, 3)} | {segment_name(i): new[i] for i in (4, 5)}
        a_log = a.copy() / "log"
        wait_until(lambda: all(readable(a_log / n) == v for n, v in want.items()), 60, what="a converges on b's log")
        doc = a.ha_status()
        assert doc is not None and doc["role"] == "standby" and doc["epoch"] == 2 and doc["leader"] == "b", doc
        assert b.primary() and not a.primary()
    finally:
        for n in (a, b):
            n.stop()
        for ln in links:
            ln.close()
    assert "Traceback" not in a.log_text() + b.log_text()


def test_a_closed_link_shorter_than_the_ttl_changes_nothing(tmp_path: Path, etcd: EtcdCluster, secret: Path) -> None:
    """a's relays to etcd refuse connections (and drop the open ones) for 0.7 s, twice: its last
    keep-alive stays younger than TTL - margin, so a neither demotes nor is replaced."""
    a, b, links = two_nodes(tmp_path, etcd, secret)
    try:
        for _ in range(2):
            for ln in links:
                ln.sever()
            time.sleep(0.7)
            for ln in links:
                ln.mend()
            time.sleep(2 * TTL)  # well over a TTL between blips: the lease is renewed again
        assert a.primary() and not b.primary()
        assert a.roles() == "demote\npromote\n", a.roles()  # the start's demote, the bootstrap; nothing since
        assert "promote" not in b.roles()
        assert etcd.get("/logship/c1/sg1/epoch") == "1" and etcd.get("/logship/c1/sg1/leader") == "a"
    finally:
        for n in (a, b):
            n.stop()
        for ln in links:
            ln.close()
