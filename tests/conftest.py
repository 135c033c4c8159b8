"""Fixtures every test layer shares."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.procs import Proc
from tests.helpers.source import make_secret


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    return make_secret(tmp_path / "secret")


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes a test starts; every one is stopped by pid at the end, whatever happened."""
    started: list[Proc] = []
    yield started
    for p in started:
        p.stop(timeout=5)
