"""logship.ha.etcd against a real 3-member etcd 3.4 on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time

import pytest

from logship.ha.etcd import Compare, EtcdClient, EtcdUnavailable, put_op
from tests.helpers.etcd import EtcdCluster, etcd_missing

pytestmark = pytest.mark.skipif(etcd_missing() is not None, reason=str(etcd_missing()))


async def test_put_range_delete_prefix(etcd: EtcdCluster) -> None:
    async with asyncio.timeout(30), EtcdClient(etcd.endpoints) as c:
        await c.put("/logship/c/s/members/a", b"\x00\xffA")
        await c.put("/logship/c/s/members/b", "B")
        kvs, rev = await c.range("/logship/c/s/members/", prefix=True)
        assert [(kv.key, kv.value) for kv in kvs] == [
            (b"/logship/c/s/members/a", b"\x00\xffA"),
            (b"/logship/c/s/members/b", b"B"),
        ]
        assert rev >= kvs[1].mod_revision > kvs[0].mod_revision
        assert await c.delete("/logship/c/s/members/", prefix=True) == 2
        assert await c.get("/logship/c/s/members/a") is None


async def test_txn_compares_mod_revision(etcd: EtcdCluster) -> None:
    async with asyncio.timeout(30), EtcdClient(etcd.endpoints) as c:
        await c.put("/k/epoch", "1")
        kv = await c.get("/k/epoch")
        assert kv is not None
        first = await c.txn([Compare("/k/epoch", "MOD", "EQUAL", kv.mod_revision)], [put_op("/k/epoch", "2")])
        assert first.succeeded
        # The same compare again is stale: exactly one of two racers raises the epoch.
        second = await c.txn([Compare("/k/epoch", "MOD", "EQUAL", kv.mod_revision)], [put_op("/k/epoch", "3")])
        assert not second.succeeded
        now = await c.get("/k/epoch")
        assert now is not None and now.value == b"2"
        # Absent key: create_revision == 0 is the "leader key is gone" condition.
        got = await c.txn([Compare("/k/leader", "CREATE", "EQUAL", 0)], [put_op("/k/leader", "a")])
        assert got.succeeded
        again = await c.txn([Compare("/k/leader", "CREATE", "EQUAL", 0)], [put_op("/k/leader", "b")])
        assert not again.succeeded


async def test_lease_keepalive_and_expiry(etcd: EtcdCluster) -> None:
    async with asyncio.timeout(60), EtcdClient(etcd.endpoints) as c:
        lease = await c.lease_grant(2)
        await c.put("/k/leader", "me", lease=lease)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 4:  # kept alive past twice its TTL
            assert await c.lease_keepalive(lease) > 0
            await asyncio.sleep(0.5)
        kv = await c.get("/k/leader")
        assert kv is not None and kv.lease == lease
        deadline = time.monotonic() + 20
        while await c.get("/k/leader") is not None:  # no more keep-alives: the key goes
            assert time.monotonic() < deadline, "leased key outlived its TTL by far"
            await asyncio.sleep(0.2)
        assert await c.lease_keepalive(lease) == 0


async def test_failover_between_endpoints(etcd: EtcdCluster) -> None:
    async with asyncio.timeout(60), EtcdClient(etcd.endpoints, timeout=1.5) as c:
        await c.put("/k/x", "1")
        etcd.kill(0)  # the preferred endpoint, by pid
        deadline = time.monotonic() + 20
        while True:
            try:
                await c.put("/k/x", "2")
                break
            except EtcdUnavailable:
                assert time.monotonic() < deadline
        kv = await c.get("/k/x")
        assert kv is not None and kv.value == b"2"
        assert c._preferred != 0
        etcd.kill(1)  # majority lost: nobody can write
        with pytest.raises(EtcdUnavailable):
            await c.put("/k/x", "3")


async def test_watch_resumes_from_revision(etcd: EtcdCluster) -> None:
    async with asyncio.timeout(30), EtcdClient(etcd.endpoints) as c:
        revs = [await c.put("/s/epoch", str(n)) for n in range(1, 4)]
        seen: list[bytes] = []
        async for rev, events in c.watch("/s/epoch", start_revision=revs[1]):
            seen += [e.kv.value for e in events]
            if len(seen) >= 2:
                last = rev
                break
        assert seen == [b"2", b"3"]
        await c.put("/s/epoch", "4")
        await c.delete("/s/epoch")
        kinds: list[tuple[str, bytes]] = []
        async for _rev, events in c.watch("/s/", start_revision=last + 1, prefix=True):
            kinds += [(e.kind, e.kv.value) for e in events]
            if len(kinds) >= 2:
                break
        assert kinds == [("PUT", b"4"), ("DELETE", b"")]
