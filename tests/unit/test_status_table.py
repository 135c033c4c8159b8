"""The status table both sides print: the same cells, the REASON column and the exit status for scripts."""

from __future__ import annotations

import pytest

from logship.admin.table import exit_status, status_cells


@pytest.mark.parametrize(
    ("states", "code"),
    [
        ([], 0),
        (["Healthy", "Healthy"], 0),
        (["Healthy", "Activated"], 0),
        (["Healthy", "Disconnected"], 1),
        (["Suspended"], 1),
        (["Fenced"], 1),
        (["Failed"], 1),
        (["Initializing"], 1),
    ],
)
def test_exit_status(states: list[str], code: int) -> None:
    assert exit_status([{"state": s} for s in states]) == code


def test_cells_say_why_and_use_one_set_of_units() -> None:
    fenced = {"state": "Fenced", "failure": "fenced: epoch 1 there (activated or fenced)", "copy_lag_seconds": None}
    cells = status_cells(fenced, now=100.0)
    assert cells["reason"] == "fenced: epoch 1 there (activated or fenced)" and cells["copy_lag_text"] == "-"
    row = {
        "state": "Healthy",
        "replay_queue_segments": 3,
        "replay_queue_bytes": 5 << 19,
        "last_replayed": "E2",
        "last_replayed_at": 90.0,
        "replay_wait_seconds": 25.5,
        "replay_lag_seconds": 30.0,
    }
    cells = status_cells(row, now=100.0)
    assert cells["replay_queue_text"] == "3 seg, 2.5 MiB" and cells["copy_queue_text"] == "-"
    assert cells["last_replayed_text"] == "E2 (10.0s ago)" and cells["replay_lag_text"] == "25.5s (lag 30.0s)"
    assert (
        status_cells({"state": "Healthy", "retrying": "inspector exit 3"}, 0)["reason"] == "retrying: inspector exit 3"
    )
