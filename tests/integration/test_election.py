"""The takeover transaction and the member records against a real 3-member etcd."""

from __future__ import annotations

import asyncio
import time

import pytest

from logship.ha.decide import Kind, Mark, Member, View, decide
from logship.ha.election import publish_member, read_cluster, take_over
from logship.ha.etcd import EtcdClient
from logship.ha.keys import StreamKeys
from tests.helpers.etcd import EtcdCluster, etcd_missing

pytestmark = pytest.mark.skipif(etcd_missing() is not None, reason=str(etcd_missing()))
KEYS = StreamKeys("c1", "sg1")


async def test_two_racers_one_winner_and_epochs_only_grow(etcd: EtcdCluster) -> None:
    async with asyncio.timeout(60), EtcdClient(etcd.endpoints) as a, EtcdClient(etcd.endpoints[::-1]) as b:
        la, lb = await a.lease_grant(2), await b.lease_grant(2)
        seen = await read_cluster(a, KEYS)
        assert seen.epoch == 0 and seen.leader is None
        fork = {"segment": "E05", "offset": 500}
        won = await asyncio.gather(
            take_over(a, KEYS, "a", la, seen.epoch_kv, fork), take_over(b, KEYS, "b", lb, seen.epoch_kv, fork)
        )
        assert sorted(won, key=str) == [1, None]
        after = await read_cluster(b, KEYS)
        winner = "a" if won[0] else "b"
        assert after.epoch == 1 and after.leader == winner
        assert (await a.get(KEYS.history(1))) is not None
        # The winner stops renewing: its key goes with its lease; the loser takes over at epoch 2.
        lease_loser, client_loser, loser = (lb, b, "b") if winner == "a" else (la, a, "a")
        deadline = time.monotonic() + 20
        while (await read_cluster(client_loser, KEYS)).leader is not None:
            assert time.monotonic() < deadline
            await client_loser.lease_keepalive(lease_loser)
            await asyncio.sleep(0.3)
        now = await read_cluster(client_loser, KEYS)
        assert await take_over(client_loser, KEYS, loser, lease_loser, now.epoch_kv, fork) == 2
        # A stale view (epoch 1's revision) cannot win even with the leader key gone.
        await client_loser.lease_revoke(lease_loser)
        assert (
            await take_over(client_loser, KEYS, loser, await client_loser.lease_grant(2), seen.epoch_kv, fork) is None
        )
        assert (await read_cluster(a, KEYS)).epoch == 2


async def test_members_read_back_into_decide(etcd: EtcdCluster) -> None:
    async with asyncio.timeout(30), EtcdClient(etcd.endpoints) as c:
        lease = await c.lease_grant(5)
        await publish_member(c, KEYS, Member("b", 0, Mark("E05", 500, 5, 5500)), "standby", lease)
        await publish_member(c, KEYS, Member("dr", 0, Mark("E05", 500, 5, 5500), failover="manual"), "standby", lease)
        await c.put(KEYS.sync, '{"nodes": ["b", "dr"]}')
        await c.put(KEYS.member("junk"), b"\xff not json")
        cl = await read_cluster(c, KEYS)
        assert set(cl.members) == {"b", "dr"} and cl.sync == {"b", "dr"}
        view = View("b", cl.epoch, cl.leader, False, cl.members, sync=cl.sync)
        assert decide(view, 0).kind is Kind.ACQUIRE
        dr = View("dr", cl.epoch, cl.leader, False, cl.members, sync=cl.sync)
        assert "manual" in decide(dr, 0).reason
