"""What the HA agent reads from its node, and the [ha] table: pure parts, on real files (issue 16)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from logship.ha.config import load
from logship.ha.decide import Dial, Mark
from logship.ha.local import acknowledging, copy_mark, source_mark, sync_set
from receiver.manifest import Installed
from shipper.config import from_doc

PEERS = {"b": "10.0.0.2:7400", "c": "10.0.0.3:7400"}


def rows(**states: str) -> list[dict[str, object]]:
    return [{"target": PEERS[n], "state": s} for n, s in states.items()]


@pytest.mark.parametrize(
    ("policy", "states", "want"),
    [
        ("ALL", {"b": "Healthy", "c": "Healthy"}, {"b", "c"}),
        ("ALL", {"b": "Disconnected", "c": "Healthy"}, {"b", "c"}),  # a down target still blocks every wait
        ("ANY 1", {"b": "Healthy", "c": "Healthy"}, set()),  # either may hold what was confirmed
        ("ANY 2", {"b": "Healthy", "c": "Healthy"}, {"b", "c"}),
        ("ANY 1 (10.0.0.2:7400)", {"b": "Healthy", "c": "Healthy"}, {"b"}),
        ("FIRST 1 (10.0.0.2:7400, 10.0.0.3:7400)", {"b": "Healthy", "c": "Healthy"}, {"b"}),
        ("FIRST 1 (10.0.0.2:7400, 10.0.0.3:7400)", {"b": "Disconnected", "c": "Healthy"}, {"c"}),
        ("not a policy", {"b": "Healthy"}, set()),
    ],
)
def test_sync_set_is_the_targets_no_wait_could_do_without(policy: str, states: dict[str, str], want: set[str]) -> None:
    assert sync_set(policy, PEERS, rows(**states)) == want


def test_single_target_any_1_is_in_sync() -> None:
    assert sync_set("ANY 1", {"b": PEERS["b"]}, rows(b="Disconnected")) == {"b"}


def test_acknowledging_needs_an_attached_shipper_with_a_fresh_heartbeat() -> None:
    assert acknowledging({"state": "Healthy"}, 100.0)
    assert acknowledging({"state": "Healthy", "source_head_at": 95.0}, 100.0)
    assert not acknowledging({"state": "Healthy", "source_head_at": 80.0}, 100.0)
    assert not acknowledging({"state": "Disconnected"}, 100.0)
    assert not acknowledging(None, 100.0)


def test_copy_mark_counts_the_manifest_and_the_partial(tmp_path: Path) -> None:
    copy = tmp_path / "sg1"
    assert copy_mark(copy) is None
    (copy / "incoming").mkdir(parents=True)
    (copy / "manifest").write_bytes(b"")
    assert copy_mark(copy) == Mark("", 0, 0, 0)
    records = [
        Installed("E0000000001.log", 100, b"\0" * 16, "", 1.0),
        Installed("E0000000002.log", 50, b"\1" * 16, "E0000000001.log", 2.0),
    ]
    (copy / "manifest").write_bytes(b"".join(r.to_line() for r in records))
    assert copy_mark(copy) == Mark("E0000000002.log", 50, 2, 150)
    (copy / "incoming" / "E0000000003.log.partial").write_bytes(b"x" * 7)
    assert copy_mark(copy) == Mark("E0000000003.log", 7, 3, 157)


def test_source_mark_follows_the_pattern(tmp_path: Path) -> None:
    assert source_mark(tmp_path / "none") is None
    (tmp_path / "E0000000001.log").write_bytes(b"a" * 10)
    (tmp_path / "E0000000002.log").write_bytes(b"b" * 5)
    (tmp_path / "E0000000003.log.partial").write_bytes(b"c" * 99)  # activation's tail: not the log
    (tmp_path / ".E0000000004.log.tmp").write_bytes(b"d")
    assert source_mark(tmp_path) == Mark("E0000000002.log", 5, 2, 15)


def node_toml(extra: str = "") -> dict[str, object]:
    return tomllib.loads(
        """[ha]
cluster = "c1"
node = "a"
stream = "sg1"
etcd = ["http://127.0.0.1:2379"]
dial = "best"
data_dir = "/d"
shipper_state_dir = "/s"
secret_file = "/k"
sync = "ANY 1 (b)"
"""
        + extra
        + """
[ha.peers]
b = "10.0.0.2:7400"
c = "10.0.0.3:7400"

[ha.shipper]
seal = "immediate"
pattern = '[0-9A-F]{24}'
"""
    )


def test_config_maps_node_names_in_the_policy_and_writes_a_shipper_config(tmp_path: Path) -> None:
    config = load(node_toml())
    assert config.policy.dial is Dial.BEST
    plan = config.shipping
    assert plan is not None and plan.sync == "ANY 1 (10.0.0.2:7400)"
    secret = tmp_path / "secret"
    secret.write_text("s" * 64)
    secret.chmod(0o600)
    plan = type(plan)(plan.stream, tmp_path / "st", str(secret), plan.peers, plan.sync, plan.extra)
    text = plan.config_text(tmp_path / "replica", 3, tmp_path / "history.json")
    assert 'history = "' in text and "epoch = " not in text
    (tmp_path / "src").mkdir()
    text = plan.config_text(tmp_path / "src", 1, None)
    shipper = from_doc(tomllib.loads(text))  # the shipper reads what the agent writes
    stream = shipper.streams[0]
    assert stream.epoch == 1 and [t.address for t in stream.targets] == [("10.0.0.2", 7400), ("10.0.0.3", 7400)]


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ('failover = "sometimes"\n', "failover"),
        ('admin = "nowhere"\n', "admin"),
        ('sync = "MOST"\n', "sync"),
        ("ttl = 1\n", "ttl"),
    ],
)
def test_config_errors_name_the_key(extra: str, error: str) -> None:
    doc = node_toml()
    assert isinstance(doc["ha"], dict)
    doc["ha"].update(tomllib.loads(extra))
    with pytest.raises(ValueError, match=error):
        load(doc)
