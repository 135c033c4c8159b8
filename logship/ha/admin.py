"""The agent's HA side for operators: its own read-only HTTP endpoint (``admin = "HOST:PORT"`` in [ha]:
``/status`` and ``/metrics``), and the view it publishes for the node's receiver to show.

The daemons' status shows the copy; this shows the node's HA side: role, leader, epoch, lease age,
the sync set, this node's eligibility (with the reason it is not) and the last decision. ``publish``
writes the same fields into the receiver's data dir (logship/ha/view_file.py has the file's format), so
the receiver's ``status``, ``/status`` and ``/metrics`` show them too, while the agent keeps writing,
and so does the shipper the agent runs while its node leads (it reads the same file).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from logship.ha.decide import ineligible
from logship.ha.view_file import write_view

if TYPE_CHECKING:
    from logship.ha.agent import Agent

log = logging.getLogger("logship.ha")


def snapshot(agent: Agent) -> dict[str, Any]:
    cl, now = agent.cluster, time.monotonic()
    view = agent.view(now)
    why = None if agent.primary else ineligible(view, agent.config.node)
    age = None if agent.last_keepalive is None else round(now - agent.last_keepalive, 3)
    act = agent.last_action
    return {
        "node": agent.config.node,
        "stream": agent.config.daemon.stream,
        "role": "primary" if agent.primary else "standby",
        "leader": cl.leader if cl else None,
        "epoch": cl.epoch if cl else agent.epoch,
        "copy_epoch": agent.copy_epoch(),
        "lease_age_seconds": age,
        "sync": sorted(cl.sync) if cl else [],
        "eligible": why is None,
        "ineligible": why,
        "last_action": None if act is None else {"kind": act.kind.value, "reason": act.reason},
    }


_CHANGES = ("role", "leader", "epoch", "copy_epoch", "sync", "eligible", "ineligible")
"""A change of any of these is published at once; the rest (ages) at the agent's round interval."""
WATCH_INTERVAL = 0.1


def view_doc(agent: Agent, stopped: bool = False) -> dict[str, Any]:
    """The receiver's copy of the snapshot: wall-clock times, since the receiver has its own clock."""
    doc = snapshot(agent)
    act = doc.pop("last_action")
    doc["last_action"] = None if act is None else f"{act['kind']}: {act['reason']}".rstrip(": ")
    age = doc.pop("lease_age_seconds")
    wall = time.time()
    doc["lease_renewed_at"] = None if age is None else round(wall - age, 3)
    doc |= {"written_at": wall, "fresh_for": agent.config.policy.ttl, "stopped": stopped, "pid": os.getpid()}
    return doc


async def publish(agent: Agent) -> None:
    """Keep the view in the node's receiver data dir current until cancelled; then mark it stopped.

    Checked every 0.1 s (in memory); written at once on a change of role, leader, epoch, sync set or
    eligibility, else every TTL / 6 s. The receiver calls a view older than the TTL not reporting.
    """
    data_dir = agent.config.daemon.data_dir
    if data_dir is None:
        return  # hooks only: no receiver on this node to show it
    stream, every = agent.config.daemon.stream, max(agent.config.policy.ttl / 6, 0.1)
    said: str | None = None

    async def write(doc: dict[str, Any]) -> None:
        nonlocal said
        try:
            await asyncio.to_thread(write_view, data_dir, stream, doc)
        except OSError as e:
            if said != str(e):  # once per distinct problem, not every 0.1 s
                said = str(e)
                log.warning("cannot publish the HA view for the receiver in %s: %s", data_dir, e)

    last: tuple[Any, ...] | None = None
    last_at = 0.0
    try:
        while True:
            doc = view_doc(agent)
            key = tuple(str(doc[k]) for k in _CHANGES)
            if key != last or time.monotonic() - last_at >= every:
                await write(doc)
                last, last_at = key, time.monotonic()
            await asyncio.sleep(WATCH_INTERVAL)
    except asyncio.CancelledError:
        await write(view_doc(agent, stopped=True))
        raise


def metrics(doc: dict[str, Any]) -> str:
    labels = f'stream="{doc["stream"]}",node="{doc["node"]}"'
    lines = [
        "# TYPE logship_ha_primary gauge",
        f"logship_ha_primary{{{labels}}} {int(doc['role'] == 'primary')}",
        "# TYPE logship_ha_epoch gauge",
        f"logship_ha_epoch{{{labels}}} {doc['epoch']}",
        "# TYPE logship_ha_eligible gauge",
        f"logship_ha_eligible{{{labels}}} {int(doc['eligible'])}",
        "# TYPE logship_ha_in_sync gauge",
        f"logship_ha_in_sync{{{labels}}} {int(doc['node'] in doc['sync'])}",
    ]
    if doc["lease_age_seconds"] is not None:
        lines += [
            "# TYPE logship_ha_lease_age_seconds gauge",
            f"logship_ha_lease_age_seconds{{{labels}}} {doc['lease_age_seconds']}",
        ]
    if doc["leader"]:
        lines += [
            "# TYPE logship_ha_leader gauge",
            f'logship_ha_leader{{stream="{doc["stream"]}",leader="{doc["leader"]}"}} 1',
        ]
    return "\n".join(lines) + "\n"


async def serve(agent: Agent, address: str) -> web.AppRunner:
    host, _, port = address.rpartition(":")

    async def status(_: web.Request) -> web.Response:
        return web.json_response(snapshot(agent))

    async def prom(_: web.Request) -> web.Response:
        return web.Response(text=metrics(snapshot(agent)), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", prom)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host or "127.0.0.1", int(port))
    await site.start()
    bound = site._server.sockets[0].getsockname() if site._server else (host, port)  # type: ignore[union-attr]
    log.info("ha admin endpoint on http://%s:%s/status", bound[0], bound[1])
    return runner
