"""The HA line in both daemons' ``status --watch`` (logship/admin/live.py): one ``key=value`` line per
stream an HA agent reports on when not on a terminal, lines under the heading on one; nothing where no
agent reports. Real snapshots: the shipper's from the view file its agent names (its control socket
stubbed), the receiver's from a data dir holding the agent's views (no receiver running)."""

from __future__ import annotations

import io
import shlex
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from logship.admin.live import Look, Watcher, ha_of
from logship.ha.view_file import VIEW_ENV, shipper_views, view_path, write_view
from receiver import operator
from shipper import commands
from shipper.state import StateDir
from tests.helpers.ha_views import NOW, view


def plain(look: Look, count: int = 1) -> list[dict[str, str]]:
    """What ``status --watch`` prints into a pipe for ``count`` looks, each line as its key=value words."""
    out = io.StringIO()  # not a terminal: the plain lines
    Watcher(lambda: look, 0.1, count, out).run()
    return [dict(w.split("=", 1) for w in shlex.split(line)) for line in out.getvalue().splitlines()]


def drawn(look: Look) -> str:
    out = io.StringIO()
    Console(file=out, width=200).print(Watcher(lambda: look, 1, 1).render(look, NOW))
    return out.getvalue()


def shipper_look(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, snapshot: dict[str, Any]) -> Look:
    monkeypatch.setattr(commands, "ask", lambda *_: snapshot)
    return commands.look_status(StateDir(tmp_path / "state"), None)


def test_the_shippers_watch_shows_its_agents_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_view(tmp_path, "sg1", view(role="primary", node="a", leader="a", epoch=1, sync=["b"]))
    ha = shipper_views({VIEW_ENV: str(view_path(tmp_path, "sg1"))}, NOW)
    copies = [{"stream": "sg1", "target": "127.0.0.1:1", "state": "Healthy"}]
    look = shipper_look(tmp_path, monkeypatch, {"node": "a", "pid": 1, "copies": copies, "ha": ha})
    assert look.heading == "shipper a (pid 1)" and look.rows == copies and look.ha == ha

    target, agent = plain(look)
    assert target["stream"] == "sg1" and target["state"] == "Healthy" and "ha" not in target
    assert agent == {"time": agent["time"], "stream": "sg1", "ha": "primary e1, lease 400ms, sync b"}
    assert "HA sg1: primary e1, lease 400ms, sync b" in drawn(look)

    # A shipper no agent started: the same lines and heading, with no HA anywhere.
    bare = shipper_look(tmp_path, monkeypatch, {"node": "a", "pid": 1, "copies": copies})
    assert bare.ha == {} and [line["stream"] for line in plain(bare, 2)] == ["sg1", "sg1"]
    assert all("ha" not in line for line in plain(bare)) and "HA " not in drawn(bare)


def test_the_receivers_watch_shows_every_stream_its_agent_reports_on(tmp_path: Path) -> None:
    now = time.time()  # the receiver reads its views at the wall clock: written now, fresh for an hour
    fresh = {"written_at": now, "lease_renewed_at": now, "fresh_for": 3600.0}
    write_view(tmp_path, "sg1", view(**fresh))
    write_view(tmp_path, "pg", view(role="primary", leader="b", **fresh))
    look = operator.look_status(tmp_path, None)
    assert "no receiver running" in look.heading and look.rows == [] and sorted(look.ha) == ["pg", "sg1"]

    lines = plain(look, 2)
    assert [(line["stream"], "ha" in line) for line in lines] == [("pg", True), ("sg1", True)] * 2, lines
    assert lines[1]["ha"] == "standby e2 (leader a), eligible, in sync", lines
    # A stream the agent leads has no copy here (the primary ships its own log): its line says so all the same.
    assert lines[0]["ha"].startswith("primary e2, lease ") and lines[0]["ha"].endswith("ms, sync b"), lines
    text = drawn(look)
    assert "HA pg: primary e2, lease " in text and "HA sg1: standby e2 (leader a), eligible, in sync" in text

    # --stream: that stream's line only, even where no copy of it is here.
    only = operator.look_status(tmp_path, "sg1")
    assert only.error and list(only.ha) == ["sg1"]
    error, agent = plain(only)
    assert "no copy of stream 'sg1'" in error["error"] and agent["ha"] == lines[1]["ha"]

    # The agent stops: its line says so (the one-shot table's words), with no role.
    write_view(tmp_path, "sg1", view(**{**fresh, "stopped": True}))
    (agent,) = (line for line in plain(operator.look_status(tmp_path, None)) if line["stream"] == "sg1")
    assert agent["ha"].startswith("agent stopped ") and agent["ha"].endswith(" ago (last: standby e2)"), agent


def test_no_agent_no_line(tmp_path: Path) -> None:
    look = operator.look_status(tmp_path, None)
    assert look.ha == {} and plain(look) == [] and "HA " not in drawn(look)
    assert ha_of({"ha": None}, None) == {} and ha_of({"ha": {"a": {}, "b": {}}}, "b") == {"b": {}}
