"""The operator commands run as an operator runs them (``python -m logship.command``, ``-m shipper``,
``-m receiver``), and what their ``status --json`` says; a traceback from any of them fails the test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers.source import ROOT

COLUMNS = ("STATE", "COPY QUEUE", "REPLAY QUEUE", "LAST COPIED", "LAST REPLAYED", "COPY LAG", "REPLAY LAG", "REASON")
"""The status table's columns both daemons print (logship.admin.table.STATUS_COLUMNS' headers)."""


def _run(module: str, args: tuple[str, ...], timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def logship(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``python -m logship.command ARGS``."""
    return _run("logship.command", args, timeout)


def shipper_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``python -m shipper ARGS``."""
    return _run("shipper", args, timeout)


def receiver_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m receiver ARGS``."""
    return _run("receiver", args, timeout)


def status(state_dir: Path) -> dict[str, Any]:
    """The running shipper's ``status --json``."""
    out = shipper_cli("status", "--state-dir", str(state_dir), "--json")
    # 0 every target Healthy, 1 some not (issue 18: status's exit code is for scripts); both answered.
    assert out.returncode in (0, 1), out.stderr + out.stdout
    return json.loads(out.stdout)


def state_of(state_dir: Path, stream: str, target: str) -> str | None:
    """The target's state, or None while no shipper answers (e.g. it is starting)."""
    out = shipper_cli("status", "--state-dir", str(state_dir), "--json")
    return row(json.loads(out.stdout), stream, target)["state"] if out.returncode in (0, 1) else None


def row(snapshot: dict[str, Any], stream: str, target: str) -> dict[str, Any]:
    """The one row of ``stream`` to ``target`` in a shipper's status snapshot."""
    rows = [r for r in snapshot["copies"] if r["stream"] == stream and r["target"] == target]
    assert len(rows) == 1, snapshot
    return rows[0]


def activate(data: Path, stream: str, *extra: str) -> tuple[int, dict[str, Any]]:
    """``receiver activate --json`` of ``stream`` in data dir ``data``: its exit status and report."""
    done = receiver_cli("activate", "--data-dir", str(data), "--stream", stream, "--json", *extra)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)
