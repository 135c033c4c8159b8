"""admin/: the control channel over a real unix socket, HTTP status and metrics, tables."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from logship.admin.control import MAX_LINE, ControlError, ControlServer, ControlUnavailable, call
from logship.admin.http import AdminServer
from logship.admin.table import human_age, human_bytes, render

STATUS: dict[str, Any] = {
    "role": "shipper",
    "node": "n1",
    "pid": 1,
    "copies": [
        {"stream": "db1", "target": "h:1", "state": "Healthy", "copy_queue_bytes": 4096, "lag_seconds": 0.25},
        {"stream": "db1", "target": "h:2", "state": "Suspended", "copy_queue_bytes": 10, "suspended": True},
    ],
}


async def _echo(request: dict[str, Any]) -> dict[str, Any]:
    if request.get("op") == "boom":
        raise RuntimeError("it broke")
    if request.get("op") == "refuse":
        return {"ok": False, "error": "not allowed"}
    if request.get("op") == "big":
        # A status of thousands of streams: more than the request cap, well under the reply cap.
        return {"ok": True, "streams": [{"name": f"s{i:05d}", "pad": "x" * 500} for i in range(8000)]}
    return {"ok": True, "echo": request}


async def test_control_round_trip_errors_and_socket_mode(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    server = ControlServer(path, _echo)
    await server.start()
    try:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
        reply = await asyncio.to_thread(call, path, {"op": "status", "n": 3})
        assert reply == {"ok": True, "echo": {"op": "status", "n": 3}}
        with pytest.raises(ControlError, match="not allowed"):
            await asyncio.to_thread(call, path, {"op": "refuse"})
        with pytest.raises(ControlError, match="it broke"):
            await asyncio.to_thread(call, path, {"op": "boom"})
        # A garbage line gets an error reply; the server keeps serving the next caller.
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"{not json\n")
        answer = json.loads(await reader.readline())
        writer.close()
        assert answer["ok"] is False and "bad request" in answer["error"]
        assert (await asyncio.to_thread(call, path, {"op": "again"}))["echo"] == {"op": "again"}
        big = await asyncio.to_thread(call, path, {"op": "big"})
        assert len(json.dumps(big)) > MAX_LINE
        assert [s["name"] for s in big["streams"]] == [f"s{i:05d}" for i in range(8000)]
    finally:
        await server.stop()
    assert not path.exists()
    with pytest.raises(ControlUnavailable):
        call(path, {"op": "status"})


async def test_control_replaces_a_stale_socket(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    first = ControlServer(path, _echo)
    await first.start()
    # A process killed with -9 leaves its socket file behind; the next start must not fail on it.
    assert first._server is not None
    first._server.close()
    assert path.exists()
    second = ControlServer(path, _echo)
    await second.start()
    try:
        assert (await asyncio.to_thread(call, path, {"op": "x"}))["ok"] is True
    finally:
        await second.stop()


async def test_http_status_and_metrics_come_from_one_snapshot() -> None:
    calls = 0

    def status() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return STATUS

    admin = AdminServer(status, "shipper")
    host, port = await admin.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{host}:{port}/status") as r:
                assert r.status == 200
                assert await r.json() == STATUS
            async with http.get(f"http://{host}:{port}/metrics") as r:
                assert r.status == 200
                text = await r.text()
            async with http.post(f"http://{host}:{port}/control", json={"op": "activate"}) as r:
                assert r.status in (404, 405)
    finally:
        await admin.stop()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("logship_shipper_copy_queue_bytes", (("stream", "db1"), ("target", "h:1")))] == 4096
    assert samples[("logship_shipper_copy_queue_bytes", (("stream", "db1"), ("target", "h:2")))] == 10
    assert samples[("logship_shipper_lag_seconds", (("stream", "db1"), ("target", "h:1")))] == 0.25
    key = ("logship_shipper_state", (("state", "Suspended"), ("stream", "db1"), ("target", "h:2")))
    assert samples[key] == 1
    # Booleans are states, not gauges.
    assert not any(name == "logship_shipper_suspended" for name, _ in samples)
    assert calls == 2


def test_table_and_units() -> None:
    text = render(STATUS["copies"], [("stream", "STREAM"), ("target", "TARGET"), ("state", "STATE"), ("x", "X")])
    lines = text.splitlines()
    assert lines[0].split() == ["STREAM", "TARGET", "STATE", "X"]
    assert lines[2].split() == ["db1", "h:1", "Healthy", "-"]
    assert lines[3].split() == ["db1", "h:2", "Suspended", "-"]
    assert render([], [("a", "A")]) == "(nothing to show)"
    assert human_bytes(0) == "0 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(5 * 1024**3) == "5.0 GiB"
    assert human_bytes(None) == "-"
    assert human_age(0.25) == "250ms"
    assert human_age(12.34) == "12.3s"
    assert human_age(245) == "4m05s"
    assert human_age(3 * 3600 + 120) == "3h02m"
