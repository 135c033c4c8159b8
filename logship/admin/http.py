"""The admin HTTP endpoint of a daemon: ``/`` (a status page), ``/status`` (JSON), ``/metrics`` (Prometheus).

Off unless ``--admin HOST:PORT`` is given. The shipper's also serves ``POST /wait`` (see
shipper/wait.py), which only watches. It is read-only on purpose: anything that changes a copy
(suspend, resume, activate) goes through the local control channel, whose unix socket only the
daemon's owner can open. It reads a status snapshot the daemon builds on demand; metrics are derived
from that same snapshot, so the two never disagree.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from logship.admin.page import serve_page

StatusFn = Callable[[], dict[str, Any]]
WaitFn = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

STATES = ("Initializing", "Healthy", "Disconnected", "Suspended", "Failed", "Fenced", "Refused", "Activated")
_LABELS = ("stream", "target")


@dataclass(frozen=True, slots=True)
class Exported:
    """One metric a daemon exports from a field of its status rows (or of ``connections``)."""

    key: str
    """The field of the status snapshot it comes from."""
    name: str
    """Its name after ``logship_<role>_`` (in base units; a counter's ``_total`` is added on export)."""
    help: str
    """What it means, for ``# HELP``."""
    counter: bool = False
    """Only grows while the daemon runs (exported as a counter, ``NAME_total``)."""
    scale: float = 1.0
    """Factor from the field's unit to the base unit (ms -> s: 0.001)."""


HA_METRICS = [
    # The node's HA agent, from the snapshot's ``ha`` blocks by stream (receiver/ha_view.py); absent with
    # no agent, and all but the first two absent while the agent does not report.
    Exported("reporting", "ha_reporting", "1 while the node's HA agent publishes a fresh view, 0 when it stopped."),
    Exported("age_seconds", "ha_view_age_seconds", "Seconds since the HA agent last published its view."),
    Exported("primary", "ha_primary", "1 while the node's HA agent says this node is the stream's primary."),
    Exported("epoch", "ha_epoch", "The stream's epoch in etcd as the node's HA agent last read it."),
    Exported("lease_age_seconds", "ha_lease_age_seconds", "Seconds since the agent last renewed its etcd lease."),
    Exported("in_sync", "ha_in_sync", "1 while this node is in the sync set (holds everything confirmed)."),
    Exported("eligible", "ha_eligible", "1 while this node may be promoted now (the status says why not)."),
]
"""The HA gauges of the receiver and of the shipper an agent runs (docs/failover.md "HA fields in status")."""

_QUEUES = [
    Exported("replay_queue_segments", "replay_queue_segments", "Segments copied durably but not yet replayed."),
    Exported("replay_queue_bytes", "replay_queue_bytes", "Bytes copied durably but not yet replayed."),
]
METRICS: dict[str, list[Exported]] = {
    "shipper": [
        Exported(
            "copy_queue_segments", "copy_queue_segments", "Segments the source has that the target has not copied."
        ),
        Exported("copy_queue_bytes", "copy_queue_bytes", "Bytes the source has that the target has not copied."),
        *_QUEUES,
        Exported(
            "lag_seconds",
            "lag_seconds",
            "Copy lag: seconds since the oldest byte the target has not durably copied appeared on the source "
            "(0: it has everything; absent while Fenced).",
        ),
        Exported(
            "last_copied_at", "last_copied_timestamp_seconds", "Unix time the target acknowledged its newest segment."
        ),
        Exported("holds_retention", "holds_retention", "1 while this target keeps source segments from retention."),
        Exported("retention_removed", "retention_removed_segments", "Segments retention removed or archived.", True),
        Exported("connects", "connects", "Connections made to the target (each reconnect counts).", True),
        Exported(
            "resends",
            "resends",
            "Resends the target asked for (a NACK after a damaged chunk or a digest mismatch).",
            True,
        ),
        Exported("bytes_sent", "sent_bytes", "Payload bytes sent to the target, before compression.", True),
        Exported("bytes_wire", "wire_bytes", "Bytes the DATA frames took on the wire, after compression.", True),
        Exported("window_bytes", "window_bytes", "The send window: unacknowledged bytes allowed in flight."),
        Exported("rtt_ms", "rtt_seconds", "Smoothed round-trip time to the target.", scale=0.001),
        Exported(
            "delivery_rate_bytes", "delivery_rate_bytes_per_second", "Bytes per second the target acknowledged lately."
        ),
        Exported("rate_limit_bytes", "rate_limit_bytes_per_second", "The configured rate limit (absent: none)."),
        Exported("epoch", "epoch", "The epoch the shipper claims towards the target (its history's, or newer)."),
    ],
    "receiver": [
        Exported(
            "copy_queue_segments",
            "copy_queue_segments",
            "Segments the attached shipper's source has that this copy lacks (its last HEARTBEAT; absent: none).",
        ),
        Exported("copy_queue_bytes", "copy_queue_bytes", "Bytes of that copy queue (absent: no shipper attached)."),
        *_QUEUES,
        Exported(
            "replay_wait_seconds",
            "replay_wait_seconds",
            "Seconds the oldest segment copied but not replayed has waited (compare replay_lag_seconds).",
        ),
        Exported("replay_lag_seconds", "replay_lag_seconds", "The configured replay lag: replay waits this long."),
        Exported("epoch", "epoch", "The copy's epoch (grows at every activation)."),
        Exported("last_copied_at", "last_copied_timestamp_seconds", "Unix time the newest segment was installed."),
        Exported(
            "last_inspected_at", "last_inspected_timestamp_seconds", "Unix time a segment last passed inspection."
        ),
        Exported("last_replayed_at", "last_replayed_timestamp_seconds", "Unix time a segment was last replayed."),
        Exported("activated_at", "activated_timestamp_seconds", "Unix time the copy was activated (absent: never)."),
        Exported("resends", "resends", "Resends this receiver asked a shipper for (NACK) since it started.", True),
        Exported(
            "waiting",
            "waiting",
            "1 while the copy waits for its storage: its shipper is refused for a full disk (or failing storage), "
            "or its replay waits for space.",
        ),
        # Standby retention (receiver/retention.py): what the copy takes on disk, and what it let go.
        Exported(
            "disk_bytes", "disk_bytes", "Bytes the copy's log/ and replica/ take on disk (a file in both counted once)."
        ),
        Exported("kept_segments", "kept_segments", "Segments the copy's log/ keeps (its manifest records)."),
        Exported("kept_bytes", "kept_bytes", "Bytes of the segments the copy's log/ keeps."),
        Exported(
            "removed_bytes", "retention_removed_bytes", "Bytes standby retention removed from the copy's log/.", True
        ),
    ],
}
"""Every metric each daemon exports, by role: the one list the docs' alerts and dashboard are checked against."""

CONNECTION_METRICS = [
    Exported("total", "connections", "Connections accepted on the data port.", True),
    Exported("unauthenticated", "unauthenticated_connections", "Connections still in TLS or the handshake."),
    Exported("max_unauthenticated", "max_unauthenticated_connections", "The --max-unauthenticated cap."),
    Exported("refused_busy", "refused_busy_connections", "Connections closed at once: the cap was reached.", True),
    Exported("refused_no_space", "refused_no_space", "Handshakes and writes told to back off: disk full.", True),
    Exported("disk_full", "disk_full", "1 while the data dir is below --min-free (or a write found it full)."),
]
"""The receiver's ``connections`` block (how close it is to refusing new peers)."""


def _metric_name(role: str, key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", f"logship_{role}_{key}")


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if isinstance(value, float) and math.isnan(value) else float(value)


def _family(role: str, metric: Exported, labels: list[str]) -> GaugeMetricFamily | CounterMetricFamily:
    cls = CounterMetricFamily if metric.counter else GaugeMetricFamily
    return cls(_metric_name(role, metric.name), metric.help, labels=labels)


class StatusCollector(Collector):
    """Export the status rows' fields that METRICS names, labelled by stream (and target), and a state."""

    def __init__(self, status: StatusFn, role: str) -> None:
        self.status = status
        self.role = role

    def collect(self) -> Iterator[Metric]:
        snapshot = self.status()
        rows = snapshot.get("copies", [])
        labels = [name for name in _LABELS if any(name in row for row in rows)] or ["stream"]
        state = GaugeMetricFamily(
            _metric_name(self.role, "state"),
            "1 for the state each copy is in (Healthy, Disconnected, Suspended, Failed, Fenced, ...).",
            labels=[*labels, "state"],
        )
        for metric in METRICS.get(self.role, []):
            family = _family(self.role, metric, labels)
            for row in rows:
                value = _number(row.get(metric.key))
                if value is not None:
                    family.add_metric([str(row.get(name, "")) for name in labels], value * metric.scale)
            yield family
        for row in rows:
            if row.get("state"):
                state.add_metric([*(str(row.get(name, "")) for name in labels), str(row["state"])], 1.0)
        yield state
        ha = snapshot.get("ha")
        for metric in HA_METRICS if isinstance(ha, dict) else []:
            family = _family(self.role, metric, ["stream"])
            for stream, block in sorted(ha.items()):
                value = block.get(metric.key) if isinstance(block, dict) else None
                value = _number(int(value) if isinstance(value, bool) else value)  # a flag is 0 or 1
                if value is not None:
                    family.add_metric([stream], value)
            yield family
        connections = snapshot.get("connections")
        if isinstance(connections, dict):
            for metric in CONNECTION_METRICS:
                family = _family(self.role, metric, [])
                value = _number(connections.get(metric.key))
                if value is not None:
                    family.add_metric([], value)
                yield family


class AdminServer:
    """Serve a daemon's status and metrics over HTTP."""

    def __init__(self, status: StatusFn, role: str, wait: WaitFn | None = None) -> None:
        self.status = status
        self.role = role
        self.wait = wait
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatusCollector(status, role))
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_get("/", serve_page)
        app.router.add_get("/status", self._status)
        app.router.add_get("/metrics", self._metrics)
        if self.wait is not None:
            app.router.add_post("/wait", self._wait)
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

    async def _wait(self, request: web.Request) -> web.Response:
        """POST /wait: a JSON object with the fields of ``wait`` (it only watches: nothing changes).

        200 satisfied, 408 timed out, 503 failed (the source dir is gone), 400 a request that cannot mean
        anything; the body says why.
        """
        assert self.wait is not None
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return web.json_response({"outcome": "usage", "error": "expected a JSON object"}, status=400)
        body.pop("op", None)
        reply = await self.wait(body)
        reply.pop("ok", None)
        code = {"satisfied": 200, "timeout": 408, "failed": 503}.get(str(reply.get("outcome")), 400)
        return web.json_response(reply, status=code)
