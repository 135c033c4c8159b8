"""The operator's HA commands: ``logship ha status | switchover | failover`` (issue 16).

``switchover --to NODE`` writes the ``switchover`` key; the primary's agent stops the application's
writes (``on_demote``), waits with ``shipper wait`` until NODE holds its last byte, stops shipping and
gives the leader key up; NODE's agent takes the next epoch in the usual transaction (which deletes
the key). ``failover --to NODE --force`` writes the ``failover`` key: NODE is promoted without the
dial and without waiting for anything, loss accepted. Both keys are bound to a lease of the command's
timeout, so a request nobody carries out expires instead of blocking every later failover.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import tomllib
from typing import Any

from logship.ha.config import AgentConfig, load
from logship.ha.decide import View, ineligible
from logship.ha.election import Cluster, read_cluster
from logship.ha.etcd import Compare, EtcdClient, EtcdError, put_op
from logship.ha.keys import StreamKeys

COMMANDS = ("status", "switchover", "failover")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="logship ha", description="Operate an HA cluster's stream.", allow_abbrev=False)
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (
        ("status", "show the stream's leader, epoch, members and why each is or is not eligible"),
        ("switchover", "planned switchover to NODE: no byte lost; prints the time it took"),
        ("failover", "forced failover to NODE (--force): promoted at once, loss accepted"),
    ):
        q = sub.add_parser(name, help=text, description=text)
        q.add_argument("--config", required=True, help="any node's TOML file with the [ha] table (etcd, names)")
        if name == "status":
            q.add_argument("--json", action="store_true", help="print JSON")
            continue
        q.add_argument("--to", required=True, metavar="NODE", help="the node to promote")
        q.add_argument("--timeout", type=float, default=60.0, help="give up after this many seconds (60)")
        if name == "failover":
            q.add_argument("--force", action="store_true", help="required: the operator accepts losing bytes")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        with open(args.config, "rb") as f:
            config = load(tomllib.load(f))
    except (OSError, ValueError) as e:
        print(f"logship ha: {args.config}: {e}", file=sys.stderr)
        return 2
    if args.command == "failover" and not args.force:
        print("logship ha: failover --to NODE needs --force (bytes may be lost); use switchover", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(config, args))
    except EtcdError as e:
        print(f"logship ha: {e}", file=sys.stderr)
        return 2


async def _run(config: AgentConfig, args: argparse.Namespace) -> int:
    keys = StreamKeys(config.cluster, config.daemon.stream)
    async with EtcdClient(config.endpoints) as client:
        cl = await read_cluster(client, keys)
        if args.command == "status":
            doc = status_doc(config, cl)
            print(json.dumps(doc, indent=1, sort_keys=True) if args.json else render(doc))
            return 0
        return await _move(client, keys, config, cl, args)


def status_doc(config: AgentConfig, cl: Cluster) -> dict[str, Any]:
    view = View("", cl.epoch, cl.leader, False, cl.members, head=cl.head, sync=cl.sync, policy=config.policy)
    members = {}
    for name, m in sorted(cl.members.items()):
        mark = None if m.mark is None else {"segment": m.mark.segment, "offset": m.mark.offset, "bytes": m.mark.total}
        why = None if name == cl.leader else ineligible(view, name)
        members[name] = {"epoch": m.epoch, "state": m.state, "failover": m.failover, "mark": mark, "ineligible": why}
    head = None if cl.head is None else {"segment": cl.head.segment, "offset": cl.head.offset, "bytes": cl.head.total}
    return {
        "cluster": config.cluster,
        "stream": config.daemon.stream,
        "epoch": cl.epoch,
        "leader": cl.leader,
        "head": head,
        "sync": sorted(cl.sync),
        "dial": config.policy.dial.value,
        "switchover_to": cl.switchover_to,
        "failover_to": cl.force_to,
        "members": members,
    }


def render(doc: dict[str, Any]) -> str:
    lines = [
        f"stream {doc['stream']} in cluster {doc['cluster']}: epoch {doc['epoch']}, leader {doc['leader'] or '(none)'}",
        f"sync set {', '.join(doc['sync']) or '(empty)'}; dial {doc['dial']}",
    ]
    for k in ("switchover_to", "failover_to"):
        if doc[k]:
            lines.append(f"{k.replace('_to', '')} to {doc[k]} requested")
    for name, m in doc["members"].items():
        mark = m["mark"]
        where = f"{mark['segment'] or '-'}@{mark['offset']} ({mark['bytes']} bytes)" if mark else "no position"
        role = "leader" if name == doc["leader"] else ("eligible" if m["ineligible"] is None else m["ineligible"])
        lines.append(f"  {name}: epoch {m['epoch']} {m['state']} {where}; {role}")
    return "\n".join(lines)


async def _move(
    client: EtcdClient, keys: StreamKeys, config: AgentConfig, cl: Cluster, args: argparse.Namespace
) -> int:
    to, switch = args.to, args.command == "switchover"
    m = cl.members.get(to)
    problem = None
    if m is None:
        problem = f"{to} is not a member (no members/{to} key: its agent is not running)"
    elif cl.leader == to:
        problem = f"{to} is the leader already"
    elif m.state in ("Failed", "Suspended"):
        problem = f"{to}'s copy is {m.state}"
    elif switch and cl.leader is None:
        problem = "no leader to switch over from (use failover --to NODE --force)"
    if problem:
        print(f"logship ha: {args.command}: {problem}", file=sys.stderr)
        return 1
    started = time.monotonic()
    lease = await client.lease_grant(max(int(args.timeout), 2))
    key = keys.switchover if switch else keys.failover
    absent = [Compare(keys.switchover, "CREATE", "EQUAL", 0), Compare(keys.failover, "CREATE", "EQUAL", 0)]
    result = await client.txn(absent, [put_op(key, to, lease)])
    if not result.succeeded:
        await client.lease_revoke(lease)
        print(f"logship ha: {args.command}: another switchover or failover is under way", file=sys.stderr)
        return 1
    deadline = started + args.timeout
    while time.monotonic() < deadline:
        now = await read_cluster(client, keys)
        if now.leader == to and now.epoch > cl.epoch and _is_primary(now, to):
            took = time.monotonic() - started
            print(f"stream {config.daemon.stream}: {to} leads at epoch {now.epoch} after {took:.2f}s ({args.command})")
            await client.lease_revoke(lease)
            return 0
        if now.epoch == cl.epoch and (now.switchover_to if switch else now.force_to) != to:
            await client.lease_revoke(lease)
            print(
                f"logship ha: {args.command} to {to} called off by the primary (see its agent's log)", file=sys.stderr
            )
            return 1
        await asyncio.sleep(0.1)
    await client.lease_revoke(lease)
    print(f"logship ha: {args.command} to {to} not done within {args.timeout:g}s; request withdrawn", file=sys.stderr)
    return 1


def _is_primary(cl: Cluster, node: str) -> bool:
    m = cl.members.get(node)
    return m is not None and m.state == "Primary"
