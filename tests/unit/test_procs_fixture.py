"""The procs fixture's log check: a daemon log with a traceback or an unretrieved task exception is
found (and fails the test that started it); an ordinary log is not."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.procs import Proc, unexpected_log_lines


def proc_with_log(tmp_path: Path, name: str, text: str) -> Proc:
    log = tmp_path / f"{name}.log"
    log.write_text(text)
    return Proc("receiver", [], log)


def test_a_traceback_or_an_unretrieved_task_is_found(tmp_path: Path) -> None:
    calm = proc_with_log(
        tmp_path, "calm", "12:00:00 receiver INFO listening\n12:00:01 receiver ERROR refused a frame\n"
    )
    crashed = proc_with_log(
        tmp_path,
        "crashed",
        "12:00:00 receiver INFO listening\nTraceback (most recent call last):\n  File \"x.py\"\nKeyError: 'a'\n",
    )
    leaked = proc_with_log(tmp_path, "leaked", "Task exception was never retrieved\nfuture: <Task finished>\n")
    assert unexpected_log_lines([calm]) == []
    found = unexpected_log_lines([calm, crashed, leaked])
    assert found == [
        "crashed.log: Traceback (most recent call last):",
        "leaked.log: Task exception was never retrieved",
    ]


def test_a_process_that_never_logged_has_nothing_to_report(tmp_path: Path) -> None:
    assert unexpected_log_lines([Proc("shipper", [], tmp_path / "absent.log")]) == []
