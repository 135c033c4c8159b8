"""docs/alerts.yml and docs/grafana-dashboard.json use only metrics the daemons export: a real receiver and
shipper are scraped, and every logship_* name in both files must be among their samples. The metrics
also follow Prometheus' conventions: counters end in _total, units are base units, HELP says something."""

from __future__ import annotations

import contextlib
import json
import re
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.copies import log_names
from tests.helpers.procs import ROOT, Proc, receiver_proc, shipper_proc
from tests.helpers.source import segment_name
from tests.helpers.waiting import wait_until

NAME = re.compile(r"\blogship_(?:shipper|receiver)_[a-z_]+\b")


def doc_expressions() -> list[str]:
    """The dashboard's expressions, and the whole rules file (no YAML parser is installed: every
    name the file mentions, comments included, must exist, which is stricter)."""
    rules = (ROOT / "docs" / "alerts.yml").read_text()
    assert rules.count("expr:") >= 5
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    return [rules, *(target["expr"] for panel in dashboard["panels"] for target in panel["targets"])]


def scrape(port: int) -> tuple[set[str], dict[str, tuple[str, str]]]:
    """Return the sample names at /metrics and each family's (type, help)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    families = list(text_string_to_metric_families(text))
    return {s.name for f in families for s in f.samples}, {f.name: (f.type, f.documentation) for f in families}


def test_every_metric_in_the_docs_is_exported(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    exprs = doc_expressions()
    named = {name for expr in exprs for name in NAME.findall(expr)}
    assert len(named) >= 10, named
    source = tmp_path / "src"
    source.mkdir()
    for i in (1, 2):
        (source / segment_name(i)).write_bytes(bytes([i]) * 10_000)
    receiver = receiver_proc(tmp_path, secret, extra=["--admin", "127.0.0.1:0", "--replay-lag", "100ms"]).start()
    shipper = shipper_proc(tmp_path, "db1", source, [receiver], secret, ["--admin", "127.0.0.1:0"]).start()
    procs += [receiver, shipper]
    wait_until(lambda: log_names(tmp_path / "receiver" / "db1") == [segment_name(1)], 30, what="the copy")
    ports = (receiver.admin_port(), shipper.admin_port())

    def exported_now() -> tuple[set[str], dict[str, tuple[str, str]]]:
        samples: set[str] = set()
        families: dict[str, tuple[str, str]] = {}
        for port in ports:
            names, kinds = scrape(port)
            samples |= names
            families |= kinds
        return samples, families

    # Some samples appear only after the first ACK or replay; give them the time a copy takes.
    with contextlib.suppress(AssertionError):
        wait_until(lambda: named <= exported_now()[0], 20, what="every metric the docs name")
    exported, families = exported_now()
    assert named <= exported, f"the docs use metrics nobody exports: {sorted(named - exported)}"
    # Conventions: counters are counters (their samples end in _total), no milliseconds, real HELP texts.
    for name in ("connects", "resends", "sent_bytes", "wire_bytes", "retention_removed_segments"):
        assert families[f"logship_shipper_{name}"][0] == "counter" and f"logship_shipper_{name}_total" in exported
    assert families["logship_receiver_connections"][0] == "counter"
    assert families["logship_receiver_resends"][0] == "counter" and "logship_receiver_resends_total" in exported
    assert "logship_receiver_refused_busy_connections_total" in exported
    assert not any(name.endswith("_ms") for name in exported), sorted(exported)
    for name, (_, text) in families.items():
        assert len(text.split()) >= 3 and text != name.split("_", 2)[-1], (name, text)
