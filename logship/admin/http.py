"""The admin HTTP endpoint of a daemon: ``/status`` (JSON) and ``/metrics`` (Prometheus text).

Off unless ``--admin HOST:PORT`` is given. It is read-only on purpose: anything that changes a copy
(suspend, resume, activate) goes through the local control channel, whose unix socket only the
daemon's owner can open. It reads a status snapshot the daemon builds on demand; metrics are derived
from that same snapshot, so the two never disagree.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

StatusFn = Callable[[], dict[str, Any]]

STATES = ("Initializing", "Healthy", "Disconnected", "Suspended", "Failed", "Fenced", "Refused", "Activated")
_LABELS = ("stream", "target")
_HELP = {
    "copy_queue_segments": "Segments the source has that the target has not durably copied.",
    "copy_queue_bytes": "Bytes the source has that the target has not durably copied.",
    "replay_queue_segments": "Segments copied but not yet replayed.",
    "replay_queue_bytes": "Bytes copied but not yet replayed.",
    "lag_seconds": "Seconds the copy trails the source.",
}


def _metric_name(role: str, key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", f"logship_{role}_{key}")


class StatusCollector(Collector):
    """Turn the numeric fields of each status row into gauges labelled by stream (and target)."""

    def __init__(self, status: StatusFn, role: str) -> None:
        self.status = status
        self.role = role

    def collect(self) -> Iterator[Metric]:
        rows = self.status().get("copies", [])
        labels = [name for name in _LABELS if any(name in row for row in rows)] or ["stream"]
        families: dict[str, GaugeMetricFamily] = {}
        state = GaugeMetricFamily(
            _metric_name(self.role, "state"), "1 for the state each copy is in.", labels=[*labels, "state"]
        )
        for row in rows:
            values = [str(row.get(name, "")) for name in labels]
            for key, value in row.items():
                if isinstance(value, bool) or not isinstance(value, int | float) or key in _LABELS:
                    continue
                if isinstance(value, float) and math.isnan(value):
                    continue
                family = families.get(key)
                if family is None:
                    family = GaugeMetricFamily(_metric_name(self.role, key), _HELP.get(key, key), labels=labels)
                    families[key] = family
                family.add_metric(values, float(value))
            if row.get("state"):
                state.add_metric([*values, str(row["state"])], 1.0)
        yield from families.values()
        yield state


class AdminServer:
    """Serve a daemon's status and metrics over HTTP."""

    def __init__(self, status: StatusFn, role: str) -> None:
        self.status = status
        self.role = role
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatusCollector(status, role))
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_get("/status", self._status)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host:port`` (0 picks a port) and return the bound address.

        Raises OSError if the address cannot be bound.
        """
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        bound = server.sockets[0].getsockname()
        return bound[0], bound[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self.status(), dumps=lambda v: json.dumps(v, indent=1))

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
