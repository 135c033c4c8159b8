"""scripts/bench keeps working: one benchmark, --quick, end to end (figures are not judged here)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.helpers.source import ROOT


def test_bench_quick_throughput_writes_its_report(tmp_path: Path) -> None:
    report = tmp_path / "report"
    proc = subprocess.run(
        [str(ROOT / "scripts" / "bench"), "--quick", "throughput", "--report-dir", str(report),
         "--work-dir", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "default configuration / the faster cp" in proc.stdout
    data = json.loads((report / "benchmarks.json").read_text())
    figures = dict(data["throughput"]["figures"])
    assert figures["default configuration / the faster cp"].endswith(" x")
    assert figures["CPU per GiB, cp -r + sync FILES (its own processes)"].endswith(" s")
    # The payload MAC beside a run without it at the MAC run's own pace, and its hash beside a busy core.
    assert "paced to the MAC run's throughput" in " ".join(figures)
    assert "with the other core busy" in figures["payload MAC's hash alone, one core (same rounds)"]
    assert "GMAC (AES-256-GCM, negotiated)" in figures["payload MAC's hash alone, one core (same rounds)"]
    assert {t[0] for t in data["throughput"]["targets"]} == {
        ">= 0.8 x the faster of cp -r + sync and cp -r + sync FILES",
        "CPU per GiB, shipper + receiver, <= 1.0 s",
        "payload MAC costs at most its hash's time (each side's codec path, MAC on - off, / GMAC over the same bytes)",
    }
    md = (report / "benchmarks.md").read_text()
    assert "scripts/bench --quick throughput" in md
    assert "## throughput" in md
    # The scratch directory is the bench's own: nothing of the run is left in it.
    assert not any((tmp_path / "work").rglob("*.log"))
