"""The agent's own read-only HTTP endpoint (``admin = "HOST:PORT"`` in [ha]): ``/status`` and ``/metrics``.

The daemons' status shows the copy; this shows the node's HA side: role, leader, epoch, lease age,
the sync set, this node's eligibility (with the reason it is not) and the last decision.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from logship.ha.decide import ineligible

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
