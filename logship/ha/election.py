"""The etcd side of leadership: the takeover transaction, the member record, reading a View.

Taking over is one transaction: ``leader`` absent and ``epoch`` unchanged -> ``epoch = N+1``,
``leader = me`` (bound to my lease), ``history/N+1`` = the fork. Two racers cannot both win, and
the epoch is never raised outside it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from logship.ha.decide import Mark, Member
from logship.ha.etcd import Compare, EtcdClient, KeyValue, delete_op, put_op
from logship.ha.keys import StreamKeys
from protocol.history import Fork

MAX_RECORD = 4096
"""Largest member / status record read (every byte from etcd is untrusted)."""


@dataclass(frozen=True, slots=True)
class Cluster:
    """The keys of one stream as read at one revision."""

    epoch: int
    epoch_kv: KeyValue | None
    leader: str | None
    members: dict[str, Member]
    head: Mark | None
    sync: frozenset[str]
    switchover_to: str | None
    force_to: str | None
    revision: int
    leader_kv: KeyValue | None = None
    epoch_leader: str | None = None
    """The node ``history/<epoch>`` names: who took the current epoch."""
    forks: Mapping[int, Fork] = field(default_factory=dict)
    """The forks the leaders' activations made, by epoch (``history/<N>`` ``fork``): what a former
    primary checks its own bytes against to rejoin (logship/ha/rejoin.py)."""


async def take_over(
    client: EtcdClient, keys: StreamKeys, me: str, lease: int, epoch_kv: KeyValue | None, fork: dict[str, object]
) -> int | None:
    """Raise the epoch and take the leader key in one transaction; return the new epoch or None (lost)."""
    current = int(epoch_kv.value) if epoch_kv is not None else 0
    new = current + 1
    epoch_cmp = (
        Compare(keys.epoch, "MOD", "EQUAL", epoch_kv.mod_revision)
        if epoch_kv is not None
        else Compare(keys.epoch, "CREATE", "EQUAL", 0)
    )
    result = await client.txn(
        [Compare(keys.leader, "CREATE", "EQUAL", 0), epoch_cmp],
        [
            put_op(keys.epoch, str(new)),
            put_op(keys.leader, me, lease),
            put_op(keys.history(new), json.dumps(fork, sort_keys=True)),
            # A switchover or forced failover is done once someone takes the epoch: it must not
            # move the leadership again later.
            delete_op(keys.switchover),
            delete_op(keys.failover),
        ],
    )
    return new if result.succeeded else None


async def publish_fork(client: EtcdClient, keys: StreamKeys, me: str, fork: Fork) -> None:
    """Write the fork the activation made (with its digest) into ``history/<N>``, which the takeover
    wrote with this node's mark then; only the node that took epoch N writes it."""
    pos = fork.position
    doc = {"node": me, "segment": pos.segment if pos else "", "offset": pos.offset if pos else 0}
    doc["fork"] = fork.to_json()
    await client.put(keys.history(fork.epoch), json.dumps(doc, sort_keys=True))


def parse_forks(keys: StreamKeys, by_key: Mapping[str, KeyValue]) -> dict[int, Fork]:
    forks: dict[int, Fork] = {}
    for key, kv in by_key.items():
        number = key.removeprefix(keys.prefix + "history/")
        if number == key or not number.isdigit():
            continue
        raw = (_record(kv) or {}).get("fork")
        try:
            fork = Fork.from_json(raw) if raw is not None else None
        except ValueError:
            fork = None  # untrusted bytes: a malformed fork is no fork (the rejoin then reseeds)
        if fork is not None and fork.epoch == int(number):
            forks[fork.epoch] = fork
    return forks


async def rebind_leader(client: EtcdClient, keys: StreamKeys, me: str, lease: int, leader_kv: KeyValue) -> bool:
    """Bind the leader key that names us to our current lease (an agent restarted within the TTL).

    Only if the key is unchanged since it was read: otherwise it expired or someone else took it.
    """
    result = await client.txn(
        [Compare(keys.leader, "MOD", "EQUAL", leader_kv.mod_revision)], [put_op(keys.leader, me, lease)]
    )
    return result.succeeded


async def publish_member(client: EtcdClient, keys: StreamKeys, member: Member, role: str, lease: int) -> None:
    mark = member.mark
    doc = {
        "role": role,
        "epoch": member.epoch,
        "state": member.state,
        "failover": member.failover,
        "mark": None if mark is None else [mark.segment, mark.offset, mark.index, mark.total],
    }
    await client.put(keys.member(member.name), json.dumps(doc, sort_keys=True), lease)


def _record(kv: KeyValue) -> dict[str, object] | None:
    if len(kv.value) > MAX_RECORD:
        return None
    try:
        doc = json.loads(kv.value)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def parse_mark(raw: object) -> Mark | None:
    if not (isinstance(raw, list) and len(raw) == 4):
        return None
    seg, off, idx, total = raw
    if not isinstance(seg, str) or not all(isinstance(v, int) and v >= 0 for v in (off, idx, total)):
        return None
    return Mark(seg, off, idx, total)


def parse_member(name: str, kv: KeyValue) -> Member | None:
    """A malformed record is no member (it cannot be promoted), never an error that stops the agent."""
    doc = _record(kv)
    if doc is None or not isinstance(doc.get("epoch"), int):
        return None
    state, failover = doc.get("state"), doc.get("failover")
    return Member(
        name,
        int(doc["epoch"]),  # type: ignore[call-overload]
        parse_mark(doc.get("mark")),
        state if isinstance(state, str) else "Failed",
        failover if failover in ("auto", "manual") else "manual",
    )


async def read_cluster(client: EtcdClient, keys: StreamKeys) -> Cluster:
    kvs, revision = await client.range(keys.prefix, prefix=True)
    by_key = {kv.key.decode(errors="replace"): kv for kv in kvs}
    epoch_kv = by_key.get(keys.epoch)
    try:
        epoch = int(epoch_kv.value) if epoch_kv is not None else 0
    except ValueError:
        epoch = 0
    members: dict[str, Member] = {}
    for key, kv in by_key.items():
        if key.startswith(keys.members):
            name = key[len(keys.members) :]
            m = parse_member(name, kv)
            if m is not None:
                members[name] = m
    status = by_key.get(keys.status)
    head = parse_mark((_record(status) or {}).get("head")) if status is not None else None
    sync_rec = _record(by_key[keys.sync]) if keys.sync in by_key else None
    nodes = (sync_rec or {}).get("nodes")
    sync = frozenset(n for n in nodes if isinstance(n, str)) if isinstance(nodes, list) else frozenset()

    def name_of(key: str) -> str | None:
        kv = by_key.get(key)
        return kv.value.decode(errors="replace") if kv is not None and kv.value else None

    hist = by_key.get(keys.history(epoch))
    taker = (_record(hist) or {}).get("node") if hist is not None else None
    return Cluster(
        epoch,
        epoch_kv,
        name_of(keys.leader),
        members,
        head,
        sync,
        name_of(keys.switchover),
        name_of(keys.failover),
        revision,
        by_key.get(keys.leader),
        taker if isinstance(taker, str) else None,
        parse_forks(keys, by_key),
    )
