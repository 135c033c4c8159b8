"""The HA agent of one node for one stream: read etcd, ``decide``, carry the action out.

Run as ``python -m logship.ha --config node.toml``. The loop is a ``step(now)`` that tests can call;
``run()`` repeats it every TTL / 6 seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from logship.ha import daemons
from logship.ha.decide import Action, Dial, Kind, Mark, Member, Policy, View, decide
from logship.ha.election import Cluster, publish_member, read_cluster, take_over
from logship.ha.etcd import EtcdClient, EtcdError
from logship.ha.keys import StreamKeys

log = logging.getLogger("logship.ha")


@dataclass(frozen=True, slots=True)
class AgentConfig:
    cluster: str
    node: str
    endpoints: list[str]
    daemon: daemons.Node
    policy: Policy = field(default_factory=Policy)
    failover: str = "auto"
    """``manual``: this node is never promoted automatically."""


class Agent:
    def __init__(self, config: AgentConfig, client: EtcdClient) -> None:
        self.config = config
        self.client = client
        self.keys = StreamKeys(config.cluster, config.daemon.stream)
        self.lease = 0
        self.last_keepalive: float | None = None
        self.primary = False
        self.epoch = 0
        """The epoch this node's copy is fenced at (or leads)."""
        self.following: str | None = None
        self.cluster: Cluster | None = None
        self.last_action: Action | None = None

    def mark(self) -> Mark:
        # Until the receiver publishes its position here (integration), every copy counts as level.
        return Mark("", 0, 0, 0)

    async def _renew(self, now: float) -> None:
        ttl = int(self.config.policy.ttl)
        if self.lease and await self.client.lease_keepalive(self.lease) > 0:
            self.last_keepalive = now
            return
        self.lease = await self.client.lease_grant(max(ttl, 2))
        self.last_keepalive = now

    def view(self) -> View:
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
            switchover_to=cl.switchover_to if cl else None,
            force_to=cl.force_to if cl else None,
            policy=self.config.policy,
        )

    async def step(self, now: float | None = None) -> Action:
        """One round: renew, publish, read, decide, act. etcd errors leave the last view in place."""
        now = time.monotonic() if now is None else now
        try:
            await self._renew(now)
            me = Member(self.config.node, self.epoch, self.mark(), failover=self.config.failover)
            await publish_member(self.client, self.keys, me, "primary" if self.primary else "standby", self.lease)
            if self.primary:
                head = self.mark()
                doc = {"head": [head.segment, head.offset, head.index, head.total], "epoch": self.epoch}
                # Not leased: the last published head must outlive its leader, the dial measures against it.
                await self.client.put(self.keys.status, json.dumps(doc))
            self.cluster = await read_cluster(self.client, self.keys)
            if self.cluster.epoch and self.epoch == 0 and not self.cluster.members.get(self.config.node):
                self.epoch = self.cluster.epoch
        except EtcdError as e:
            log.warning("etcd: %s", e)
            if not self.primary:
                return Action(Kind.HOLD, "etcd unreachable")
        action = decide(self.view(), now)
        if action != self.last_action:
            log.info("%s: %s", action.kind.value, action.reason)
        self.last_action = action
        await self.act(action)
        return action

    async def act(self, action: Action) -> None:
        node = self.config.daemon
        if action.kind is Kind.DEMOTE or action.kind is Kind.HANDOVER:
            self.primary = False
            await daemons.stop_shipping(node)
            await daemons.hook(node.on_demote)
            if action.kind is Kind.HANDOVER:
                await self._release()
        elif action.kind is Kind.FENCE:
            if await daemons.fence(node, action.epoch):
                self.epoch = action.epoch
        elif action.kind is Kind.FOLLOW and action.node is not None:
            if await daemons.hook(node.on_follow, primary=action.node):
                self.following = action.node
        elif action.kind is Kind.ACQUIRE:
            await self._acquire(action)

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
            fork = {"node": self.config.node, "segment": m.segment, "offset": m.offset}
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
        log.warning("promoted at epoch %d", self.epoch)
        await daemons.activate(self.config.daemon, self.epoch)
        self.primary = True
        self.following = None
        await daemons.hook(self.config.daemon.on_promote)

    async def run(self, stop: asyncio.Event) -> None:
        interval = max(self.config.policy.ttl / 6, 0.1)
        while not stop.is_set():
            await self.step()
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass
        if self.primary:
            await self.act(Action(Kind.DEMOTE, "agent stopping"))
        await self._release()


def load(doc: dict[str, object]) -> AgentConfig:
    """The agent's settings from the ``[ha]`` table. Raises ValueError naming the bad key."""
    ha = doc.get("ha")
    if not isinstance(ha, dict):
        raise ValueError("missing [ha] table")

    def s(key: str, default: str | None = None) -> str | None:
        v = ha.get(key, default)
        if v is not None and not isinstance(v, str):
            raise ValueError(f"[ha] {key}: expected a string")
        return v

    endpoints = ha.get("etcd")
    if not (isinstance(endpoints, list) and endpoints and all(isinstance(e, str) for e in endpoints)):
        raise ValueError("[ha] etcd: expected a list of endpoint URLs")
    cluster, node, stream = s("cluster"), s("node"), s("stream")
    if not (cluster and node and stream):
        raise ValueError("[ha] cluster, node and stream are required")
    ttl = ha.get("ttl", 3)
    if not isinstance(ttl, int | float) or ttl < 2:
        raise ValueError("[ha] ttl: expected a number of seconds >= 2")
    data_dir, state_dir = s("data_dir"), s("shipper_state_dir")

    daemon = daemons.Node(
        stream,
        Path(data_dir) if data_dir else None,
        Path(state_dir) if state_dir else None,
        s("on_promote"),
        s("on_demote"),
        s("on_follow"),
    )
    policy = Policy(ttl=float(ttl), margin=float(ttl) / 3, dial=Dial(s("dial", "lossless")))
    failover = s("failover", "auto")
    if failover not in ("auto", "manual"):
        raise ValueError("[ha] failover: expected auto or manual")
    return AgentConfig(cluster, node, list(endpoints), daemon, policy, failover)
