"""Fixtures every test layer shares."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from receiver.store import SegmentStore
from tests.helpers.procs import Proc, unexpected_log_lines
from tests.helpers.source import make_secret


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SegmentStore]:
    """An empty copy of stream db1 (the store tests and the replay tests start from one)."""
    s = SegmentStore(tmp_path / "db1")
    yield s
    s.close()
    s.close_manifest()


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    return make_secret(tmp_path / "secret")


@pytest.fixture
def procs(request: pytest.FixtureRequest) -> Iterator[list[Proc]]:
    """Processes a test starts; every one is stopped by pid at the end, whatever happened.

    A daemon that logged a traceback or an unretrieved task exception fails the test, unless the test is
    marked ``expects_traceback``: a crash inside a daemon must never pass because the bytes converged."""
    started: list[Proc] = []
    yield started
    for p in started:
        p.stop(timeout=5)
    if request.node.get_closest_marker("expects_traceback") is None:
        found = unexpected_log_lines(started)
        if found:
            pytest.fail("a daemon logged what no test expects:\n" + "\n".join(found), pytrace=False)


@pytest.fixture(autouse=True)
def _umask_restored() -> Iterator[None]:
    """Put back the process umask after each test: a daemon's main() run in-process sets 077 (its
    --umask default), and a later test that hands a directory to another user (PostgreSQL runs as
    postgres) would find it private."""
    mask = os.umask(0o022)
    os.umask(mask)
    yield
    os.umask(mask)
