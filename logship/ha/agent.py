"""The HA agent of one node for one stream: read the node and etcd, ``decide``, carry the action out.

Run as ``python -m logship.ha --config node.toml``. The loop is a ``step(now)`` that tests can call;
``run()`` repeats it every TTL / 6 seconds, and at once when the stream's keys change (a watch).

Inputs from the node (logship/ha/local.py): the copy's position (manifest and partial), its state and
epoch from the receiver's status, whether a shipper is attached to it (a primary that lost only etcd
still ships: no takeover), and, on the primary, the source head and the sync set from its shipper.
Actions (logship/ha/daemons.py, shipping.py): ``receiver fence``, ``receiver activate``, the shipper
started from the activated replica with its history (or from the application's log at the first
epoch), ``shipper wait`` before a switchover hands over, and the hooks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

from logship.ha import daemons
from logship.ha.config import AgentConfig
from logship.ha.decide import Action, Kind, Mark, Member, View, decide
from logship.ha.election import Cluster, publish_fork, publish_member, read_cluster, rebind_leader, take_over
from logship.ha.etcd import EtcdClient, EtcdError
from logship.ha.keys import StreamKeys
from logship.ha.local import Local, read_local, shipper_rows, source_mark, sync_set
from logship.ha.promote import start_primary
from logship.ha.rejoin import Rejoiner
from logship.ha.shipping import Shipping
from protocol.history import Fork

log = logging.getLogger("logship.ha")

SWITCHOVER_WAIT = 30.0
"""How long a switchover waits for the new primary to hold the last byte before it is called off."""


class Agent:
    def __init__(self, config: AgentConfig, client: EtcdClient) -> None:
        self.config = config
        self.client = client
        self.keys = StreamKeys(config.cluster, config.daemon.stream)
        self.lease = 0
        self.last_keepalive: float | None = None
        self.primary = False
        self.epoch = 0
        """The epoch this node leads, or was fenced at while it had no copy."""
        self.following: str | None = None
        self.cluster: Cluster | None = None
        self.last_action: Action | None = None
        self.fork: Fork | None = None
        """The fork this node's activation made, published in etcd until it is there."""
        self.local = Local(None, "Disconnected", None, False, 0.0)
        self.shipping = Shipping(config.shipping) if config.shipping else None
        self.source: Path | None = None
        """What this node ships while primary: the application's log or the activated replica."""
        self.pattern = str((config.shipping.extra if config.shipping else {}).get("pattern", "")) or None
        self.rejoiner = Rejoiner(config.daemon, config.rejoin, self.pattern)

    @property
    def copy_dir(self) -> Path | None:
        d = self.config.daemon.data_dir
        return d / self.config.daemon.stream if d is not None else None

    def has_copy(self) -> bool:
        return self.copy_dir is not None and (self.copy_dir / "manifest").exists()

    def may_ship_source(self) -> bool:
        """The application's own log is the stream's newest history only at the first epoch, or while
        the current epoch is the one this node took with it (nobody has taken over since)."""
        cl = self.cluster
        if self.config.source is None or self.has_copy() or cl is None:
            return False
        return cl.epoch == 0 or cl.epoch_leader == self.config.node

    def mark(self) -> Mark | None:
        if self.config.daemon.data_dir is None and self.config.source is None:
            return Mark("", 0, 0, 0)  # hooks only: the application keeps its own log; every node is level
        if self.primary and self.source is not None:
            return self._source_mark(self.source)
        if self.local.mark is not None:
            return self.local.mark
        if self.may_ship_source():
            assert self.config.source is not None
            return self._source_mark(self.config.source)
        return None

    def _source_mark(self, source: Path) -> Mark | None:
        return source_mark(source, self.pattern) if self.pattern else source_mark(source)

    def copy_epoch(self) -> int:
        return self.local.epoch if self.local.epoch is not None and not self.primary else self.epoch

    async def _renew(self, now: float) -> None:
        ttl = int(self.config.policy.ttl)
        if self.lease and await self.client.lease_keepalive(self.lease) > 0:
            self.last_keepalive = now
            return
        self.lease = await self.client.lease_grant(max(ttl, 2))
        self.last_keepalive = now

    async def _rebind(self, cl: Cluster) -> None:
        if cl.leader == self.config.node and cl.leader_kv is not None and cl.leader_kv.lease != self.lease:
            # Our key from before a restart, on a lease that dies with the old process: rebind it.
            if await rebind_leader(self.client, self.keys, self.config.node, self.lease, cl.leader_kv):
                self.cluster = await read_cluster(self.client, self.keys)

    def _etcd_budget(self, now: float) -> float | None:
        """Seconds a primary's round may spend on etcd before it must demote (None: a standby waits)."""
        if not self.primary or self.last_keepalive is None:
            return None
        p = self.config.policy
        return max(0.05, self.last_keepalive + p.ttl - p.margin - now)

    def view(self, now: float) -> View:
        cl = self.cluster
        members = dict(cl.members) if cl else {}
        return View(
            me=self.config.node,
            epoch=cl.epoch if cl else self.epoch,
            leader=cl.leader if cl else (self.config.node if self.primary else None),
            primary=self.primary,
            members=members,
            last_keepalive=self.last_keepalive,
            head=cl.head if cl else None,
            sync=cl.sync if cl else frozenset(),
            following=self.following,
            last_ack=now if self.local.acknowledging else None,
            switchover_to=cl.switchover_to if cl else None,
            force_to=cl.force_to if cl else None,
            policy=self.config.policy,
        )

    async def _publish(self) -> None:
        state = "Primary" if self.primary else self.local.state
        me = Member(self.config.node, self.copy_epoch(), self.mark(), state, self.config.failover)
        await publish_member(self.client, self.keys, me, "primary" if self.primary else "standby", self.lease)
        if not self.primary:
            return
        head = self.mark()
        if head is not None:
            doc = {"head": [head.segment, head.offset, head.index, head.total], "epoch": self.epoch}
            # Not leased: the last published head must outlive its leader, the dial measures against it.
            await self.client.put(self.keys.status, json.dumps(doc))
        cl, fork = self.cluster, self.fork
        if fork is not None and cl is not None and cl.epoch == fork.epoch and cl.forks.get(fork.epoch) != fork:
            await publish_fork(self.client, self.keys, self.config.node, fork)
        plan = self.config.shipping
        rows = await shipper_rows(plan.state_dir, plan.stream) if plan else None
        if plan is not None and rows is not None:
            nodes = sorted(sync_set(plan.sync, plan.peers, rows))
            await self.client.put(self.keys.sync, json.dumps({"nodes": nodes, "epoch": self.epoch}))

    async def step(self, now: float | None = None) -> Action:
        """One round: read the node, renew, publish, read etcd, decide, act. etcd errors keep the last view."""
        self.local = await read_local(self.config.daemon.data_dir, self.config.daemon.stream)
        clock, now = now is None, time.monotonic() if now is None else now
        try:
            # A primary's etcd calls may not outlast its own-clock deadline: a frozen etcd member makes
            # each call wait its timeout on every endpoint (seconds), and the demotion must not wait.
            async with asyncio.timeout(self._etcd_budget(now)):
                await self._renew(now)
                await self._publish()
                self.cluster = await read_cluster(self.client, self.keys)
                await self._rebind(self.cluster)
        except (EtcdError, TimeoutError) as e:
            log.warning("etcd: %s", e or "no answer before the lease's own-clock deadline")
            if not self.primary:
                return Action(Kind.HOLD, "etcd unreachable")
        now = time.monotonic() if clock else now  # decide on the clock as it is after the calls
        action = decide(self.view(now), now)
        if action != self.last_action:
            log.info("%s: %s", action.kind.value, action.reason)
        self.last_action = action
        await self.act(action)
        return action

    async def act(self, action: Action) -> None:
        node = self.config.daemon
        if action.kind is Kind.DEMOTE:
            await self._demote()
        elif action.kind is Kind.HANDOVER:
            await self._handover(action)
        elif action.kind is Kind.FENCE:
            if self.local.state == "Activated":
                # The copy was this node's primary log: it rejoins as a standby (logship/ha/rejoin.py).
                forks = self.cluster.forks if self.cluster is not None else {}
                if await self.rejoiner.rejoin(action.epoch, self.local.epoch or 0, forks):
                    self.epoch = action.epoch
            elif await daemons.fence(node, action.epoch):
                self.epoch = action.epoch
        elif action.kind is Kind.FOLLOW and action.node is not None:
            if await daemons.hook(node.on_follow, primary=action.node):
                self.following = action.node
        elif action.kind is Kind.ACQUIRE:
            await self._acquire(action)

    async def _demote(self) -> None:
        was = self.primary
        self.primary = False
        self.source = None
        self.fork = None
        if self.shipping is not None:
            await self.shipping.stop()
        if was:
            log.warning("demoted at epoch %d", self.epoch)
        await daemons.hook(self.config.daemon.on_demote)

    async def _handover(self, action: Action) -> None:
        """Planned switchover: stop the application's writes, wait until the target holds the last byte,
        then give the leader key up. A forced failover (loss accepted) does not wait."""
        node, target = self.config.daemon, action.node
        await daemons.hook(node.on_demote)
        cl, plan = self.cluster, self.config.shipping
        head = self.mark()
        forced = cl is not None and cl.force_to == target and cl.switchover_to is None
        if not forced and plan is not None and target in plan.peers and head is not None and head.segment:
            address = plan.peers[target]
            if not await daemons.wait_sealed(node, head.segment, address, SWITCHOVER_WAIT):
                # With seal = "next" the last segment seals only once the next appears: seal_idle does it
                # once the application stopped writing.
                log.error("switchover to %s called off: it does not hold %s sealed (seal_idle?)", target, head.segment)
                await self._cancel_switchover()
                await daemons.hook(node.on_promote)
                return
        await self._demote()
        await self._release()
        log.warning("handed over to %s (%s)", target, action.reason)

    async def _cancel_switchover(self) -> None:
        try:
            await self.client.delete(self.keys.switchover)
        except EtcdError as e:
            log.warning("etcd: %s", e)

    async def _release(self) -> None:
        try:
            await self.client.lease_revoke(self.lease)
        except EtcdError as e:
            log.warning("etcd: %s", e)
        self.lease = 0

    async def _acquire(self, action: Action) -> None:
        cl = self.cluster
        if cl is None:
            return
        if cl.leader != self.config.node:
            m = self.mark()
            fork = {"node": self.config.node, "segment": m.segment if m else "", "offset": m.offset if m else 0}
            try:
                new = await take_over(self.client, self.keys, self.config.node, self.lease, cl.epoch_kv, fork)
            except EtcdError as e:
                log.warning("takeover: %s", e)
                return
            if new is None:
                log.info("takeover lost the race")
                return
            self.epoch = new
        else:
            self.epoch = cl.epoch
        log.warning("took the leader key at epoch %d", self.epoch)
        if not await self._start_shipping(cl):
            return  # the key stays ours: decide() asks to finish the promotion at the next round
        self.primary = True
        self.following = None
        await daemons.hook(self.config.daemon.on_promote)
        log.warning("promoted at epoch %d", self.epoch)

    async def _start_shipping(self, cl: Cluster) -> bool:
        """Make this node's log the stream's: activate the copy at the epoch, or ship the application's log."""
        may_source = cl.epoch == 0 or cl.epoch_leader == self.config.node
        done = await start_primary(self.config, self.shipping, self.copy_dir, may_source, self.epoch)
        if done is None:
            return False
        self.source, self.fork = done.source, done.fork
        return True

    async def run(self, stop: asyncio.Event) -> None:
        interval = max(self.config.policy.ttl / 6, 0.1)
        # A node starts as a standby whatever it was before a crash: a shipper an earlier agent left is
        # stopped and the application's writes too, until etcd says this node leads.
        await self._demote()
        wake = asyncio.Event()
        watches = [
            # epoch, failover, history/* and leader sort together: one range; switchover on its own.
            asyncio.create_task(self._watch(self.keys.epoch, (self.keys.leader + "\0").encode(), wake, interval)),
            asyncio.create_task(self._watch(self.keys.switchover, None, wake, interval)),
        ]
        try:
            while not stop.is_set():
                wake.clear()
                await self.step()
                # The next round at the interval, or as soon as a leadership key changes (a leader key
                # that expired, a new epoch, an operator's request): no waiting for the poll.
                waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(wake.wait())]
                budget = self._etcd_budget(time.monotonic())  # a primary looks again by its deadline
                pause = interval if budget is None else min(interval, budget)
                await asyncio.wait(waiters, timeout=pause, return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
        finally:
            for w in watches:
                w.cancel()
            await asyncio.gather(*watches, return_exceptions=True)
        if self.primary:
            await self.act(Action(Kind.DEMOTE, "agent stopping"))
        await self._release()

    async def _watch(self, key: str, range_end: bytes | None, wake: asyncio.Event, pause: float) -> None:
        """Set ``wake`` at every change of the keys; resumed after a break from the last revision seen."""
        revision = 0
        while True:
            try:
                async for rev, _events in self.client.watch(key, revision + 1 if revision else 0, range_end=range_end):
                    revision = max(revision, rev)
                    wake.set()
            except EtcdError as e:
                log.debug("watch %s: %s", key, e)
            await asyncio.sleep(pause)  # bounded retry rate while etcd is away
