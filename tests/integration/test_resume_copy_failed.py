"""``python -m receiver resume`` clears a copy-level Failed, not only a replay failure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from receiver.state import CopyState, save_state
from tests.helpers.source import ROOT


def test_offline_resume_clears_copy_failed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "mail1" / "log").mkdir(parents=True)
    state = CopyState(epoch=1)
    state.fail("E000000000B.log: seal digest mismatch")
    save_state(data / "mail1" / "state.json", state)
    done = subprocess.run(
        [sys.executable, "-m", "receiver", "resume", "--data-dir", str(data), "--stream", "mail1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads((data / "mail1" / "state.json").read_text())
    assert doc.get("failed") is None and doc["epoch"] == 1
