"""logship/ha/view_file.py as the shipper reads it: the one view file ``LOGSHIP_HA_VIEW`` names (fresh,
stale, not yet written, misnamed), the shipper table's HA line, its logship_shipper_ha_* gauges, and
every HA gauge of both daemons named where the metrics are documented (the watch's HA lines:
test_ha_watch.py)."""

from __future__ import annotations

import re
import time
from pathlib import Path

from prometheus_client.core import Metric

from logship.admin.http import HA_METRICS, StatusCollector
from logship.ha.view_file import VIEW_ENV, shipper_views, view_path, view_stream, write_view
from shipper.status import table
from tests.helpers.ha_views import NOW, view
from tests.helpers.source import ROOT


def primary_view(**kw: object) -> dict[str, object]:
    return view(role="primary", node="a", leader="a", epoch=1, copy_epoch=1, sync=["b"], **kw)


def test_no_agent_no_block(tmp_path: Path) -> None:
    assert shipper_views({}, NOW) == {}
    assert shipper_views({VIEW_ENV: ""}, NOW) == {}


def test_the_named_view_fresh_stale_missing_misnamed(tmp_path: Path) -> None:
    env = {VIEW_ENV: str(view_path(tmp_path, "sg1"))}
    why = f"the agent has not written {env[VIEW_ENV]} yet"
    assert shipper_views(env, NOW) == {"sg1": {"reporting": False, "problem": why, "text": why}}
    write_view(tmp_path, "sg1", primary_view())
    block = shipper_views(env, NOW)["sg1"]
    assert block["reporting"] and block["primary"] and block["leader"] == "a" and block["epoch"] == 1
    assert block["lease_age_seconds"] == 0.4 and block["sync"] == ["b"] and block["eligible"]
    write_view(tmp_path, "sg1", primary_view(written_at=NOW - 5))
    stale = shipper_views(env, NOW)["sg1"]
    assert not stale["reporting"] and "role" not in stale and stale["last"]["role"] == "primary"
    (bad,) = shipper_views({VIEW_ENV: str(tmp_path / "view.json")}, NOW).values()
    assert "does not name an ha-<stream>.json file" in bad["problem"]
    assert view_stream(Path("ha-sg1.json")) == "sg1" and view_stream(Path("ha-../x.json")) is None


def test_table_line_and_gauges(tmp_path: Path) -> None:
    write_view(tmp_path, "sg1", primary_view())
    ha = shipper_views({VIEW_ENV: str(view_path(tmp_path, "sg1"))}, NOW)
    snapshot = {"node": "a", "pid": 1, "copies": [], "ha": ha}
    assert table(snapshot, NOW).splitlines()[-1] == "HA sg1: primary e1, lease 400ms, sync b"
    assert "HA" not in table({"node": "a", "pid": 1, "copies": []}, NOW)
    families: list[Metric] = list(StatusCollector(lambda: snapshot, "shipper").collect())
    got = {s.name: s.value for f in families for s in f.samples if "_ha_" in s.name}
    assert got == {
        "logship_shipper_ha_reporting": 1,
        "logship_shipper_ha_view_age_seconds": 0.2,
        "logship_shipper_ha_primary": 1,
        "logship_shipper_ha_epoch": 1,
        "logship_shipper_ha_lease_age_seconds": 0.4,
        "logship_shipper_ha_in_sync": 0,
        "logship_shipper_ha_eligible": 1,
    }
    assert time.time() > NOW  # the fixed clock is in the past: nothing above read the real one


def test_every_ha_gauge_is_documented() -> None:
    """Where metrics are documented (docs/operations.md, the metrics paragraph; docs/failover.md), each
    role's HA gauges are named, in full or as ``..._ha_x`` after the role's first full name."""
    for doc in ("operations.md", "failover.md"):
        text = (ROOT / "docs" / doc).read_text()
        for role in ("receiver", "shipper"):
            first = text.find(f"logship_{role}_ha_")
            assert first >= 0, (doc, role)
            named = set(re.findall(rf"logship_{role}_(ha_[a-z_]+)", text))
            named |= set(re.findall(r"`\.\.\._(ha_[a-z_]+)`", text[first:]))
            missing = {m.name for m in HA_METRICS} - named
            assert not missing, (doc, role, missing)
