"""One stream's directory deleted under a running receiver whose data dir stays (new-user finding 1):
status names the loss instead of a Disconnected row with no reason."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.cli import receiver_cli
from tests.helpers.copies import log_names, remove_under_a_writer
from tests.helpers.procs import Proc, receiver_proc, shipper_proc
from tests.helpers.source import write_segments
from tests.helpers.waiting import wait_until


def _row(data: Path) -> dict[str, object] | None:
    out = receiver_cli("status", "--data-dir", str(data), "--json")
    if out.returncode not in (0, 1):
        return None
    rows = json.loads(out.stdout)["copies"]
    return rows[0] if rows else None


def test_a_deleted_stream_dir_shows_failed_with_the_reason(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    source = tmp_path / "src"
    source.mkdir()
    first = write_segments(source, 1, 3)
    receiver = receiver_proc(tmp_path, secret)
    procs.append(receiver.start())
    procs.append(shipper_proc(tmp_path, "db1", source, [receiver], secret).start())
    data = tmp_path / "receiver"
    copy = data / "db1"
    wait_until(lambda: log_names(copy) == first[:-1], 30, what="the first sealed segments copied")
    row = _row(data)
    assert row is not None and row["state"] != "Failed", row

    remove_under_a_writer(copy)
    wait_until(lambda: (r := _row(data)) is not None and r["state"] == "Failed", 20, what="status to say Failed")
    row = _row(data)
    assert row is not None
    assert f"copy directory {copy} is gone" in str(row["failure"]), row
    assert receiver.alive(), "the receiver serves its other streams: it must not exit for one stream"
