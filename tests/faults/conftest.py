from __future__ import annotations

import pytest

from tests.faults.common import report_dir


@pytest.fixture(scope="session", autouse=True)
def _fresh_report() -> None:
    """Start each run's figures afresh, so the table never mixes runs."""
    out = report_dir()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.json"):
        old.unlink()
