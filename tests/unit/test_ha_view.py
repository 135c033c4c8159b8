"""receiver/ha_view.py: the agent's view file as the receiver reads it (fresh, stale, stopped, damaged),
the HA cell of the status table, and the logship_receiver_ha_* gauges from a snapshot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prometheus_client.core import Metric

from logship.admin.http import StatusCollector
from receiver.ha_view import add_views, ha_block, ha_lines, ha_text, view_path, write_view
from receiver.status import render_rows
from tests.helpers.ha_views import NOW, view


def test_a_fresh_view_gives_the_block(tmp_path: Path) -> None:
    assert write_view(tmp_path, "sg1", view())
    block = ha_block(tmp_path, "sg1", NOW)
    assert block is not None
    assert block["reporting"] and not block["primary"] and block["in_sync"] and block["eligible"]
    assert block["age_seconds"] == 0.2 and block["lease_age_seconds"] == 0.4
    assert ha_text({"ha": block}) == "standby e2 (leader a), eligible, in sync" == block["text"]
    assert not write_view(tmp_path / "missing", "sg1", view())  # no data dir: nothing written
    assert [p.name for p in tmp_path.iterdir()] == ["ha-sg1.json"]  # no temporary file left


def test_stale_and_stopped_views_show_no_role(tmp_path: Path) -> None:
    write_view(tmp_path, "sg1", view(role="primary", written_at=NOW - 12.3))
    block = ha_block(tmp_path, "sg1", NOW)
    assert block == {
        "reporting": False,
        "age_seconds": 12.3,
        "stopped": False,
        "last": {"node": "b", "role": "primary", "leader": "a", "epoch": 2},
        "text": "agent not reporting for 12.3s (last: primary e2)",
    }
    assert ha_text({"ha": block}) == "agent not reporting for 12.3s (last: primary e2)"
    write_view(tmp_path, "sg1", view(stopped=True))
    block = ha_block(tmp_path, "sg1", NOW)
    assert block is not None and block["stopped"] and "role" not in block
    assert ha_text({"ha": block}).startswith("agent stopped 200ms ago")


def test_damaged_or_foreign_views_say_so(tmp_path: Path) -> None:
    path = view_path(tmp_path, "sg1")
    for text, why in (
        ("{not json", "not one this version reads"),
        (json.dumps({"v": 2, "stream": "sg1"}), "not one this version reads"),
        (json.dumps({"v": 1, "stream": "other", "written_at": 1, "fresh_for": 3}), "not one this version reads"),
        (json.dumps({"v": 1, "stream": "sg1", "fresh_for": 3}), "no written_at"),
        ("x" * 20_000, "not one this version reads"),
    ):
        path.write_text(text)
        block = ha_block(tmp_path, "sg1", NOW)
        assert block is not None and not block["reporting"] and why in block["problem"], (text[:30], block)
    assert ha_block(tmp_path, "nothing", NOW) is None


def test_rows_table_and_lines(tmp_path: Path) -> None:
    write_view(tmp_path, "sg1", view())
    write_view(tmp_path, "pg", view(role="primary", leader="b", node="b"))
    rows: list[dict[str, Any]] = [{"stream": "sg1", "state": "Healthy", "epoch": 2}, {"stream": "other"}]
    blocks = add_views(rows, tmp_path, NOW)
    assert sorted(blocks) == ["pg", "sg1"] and rows[0]["ha"] is blocks["sg1"] and "ha" not in rows[1]
    table = render_rows(rows, NOW)
    assert " HA " in table.splitlines()[0] and "standby e2 (leader a), eligible, in sync" in table
    assert " HA " not in render_rows([{"stream": "x", "state": "Healthy", "epoch": 0}], NOW)  # no agent: no column
    lines = ha_lines({"copies": rows, "ha": blocks})
    assert lines == ["HA pg (no copy here): primary e2, lease 400ms, sync b"]


def test_gauges_from_the_snapshot(tmp_path: Path) -> None:
    write_view(tmp_path, "sg1", view(eligible=False, ineligible="copy is Suspended"))
    write_view(tmp_path, "old", view(written_at=NOW - 60))
    blocks = add_views([], tmp_path, NOW)
    families: list[Metric] = list(StatusCollector(lambda: {"copies": [], "ha": blocks}, "receiver").collect())
    got = {(s.name, s.labels["stream"]): s.value for f in families for s in f.samples if "_ha_" in s.name}
    assert got[("logship_receiver_ha_reporting", "sg1")] == 1 and got[("logship_receiver_ha_eligible", "sg1")] == 0
    assert got[("logship_receiver_ha_primary", "sg1")] == 0 and got[("logship_receiver_ha_in_sync", "sg1")] == 1
    assert got[("logship_receiver_ha_epoch", "sg1")] == 2
    assert (
        got[("logship_receiver_ha_reporting", "old")] == 0
        and got[("logship_receiver_ha_view_age_seconds", "old")] == 60
    )
    assert ("logship_receiver_ha_primary", "old") not in got  # a stale view claims no role
