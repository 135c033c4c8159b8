"""A source directory moved away shows as Failed with the reason, and one put back is noticed within a
poll interval (not the 15 s quiet interval: the old watch follows the moved directory), then watched
again: a new segment in it is shipped at once."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers.copies import log_names
from tests.helpers.procs import Proc, ShipperProc, receiver_proc, shipper_proc
from tests.helpers.source import segment_name
from tests.helpers.waiting import wait_until


def row(shipper: ShipperProc) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{shipper.admin_port()}/status", timeout=10) as resp:
        return dict(json.loads(resp.read())["copies"][0])


def test_moved_source_fails_loudly_and_comes_back_quickly(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for i in (1, 2):
        (source / segment_name(i)).write_bytes(os.urandom(10_000))
    receiver = receiver_proc(tmp_path, secret).start()
    shipper = shipper_proc(tmp_path, "db1", source, [receiver], secret, ["--admin", "127.0.0.1:0", "--seal-idle", "1"])
    procs += [receiver, shipper.start()]
    wait_until(lambda: len(log_names(tmp_path / "receiver" / "db1")) == 2, 30, what="the copy")

    source.rename(tmp_path / "src.moved")
    failed = wait_until(lambda: (r := row(shipper))["state"] == "Failed" and r, 10, what="Failed")
    assert failed["failure"] == f"cannot read source directory {source}: No such file or directory", failed

    source.mkdir()
    for name in (segment_name(1), segment_name(2)):
        shutil.copy2(tmp_path / "src.moved" / name, source / name)
    back = time.monotonic()
    wait_until(lambda: row(shipper)["state"] == "Healthy", 5, interval=0.05, what="Healthy again")
    took = time.monotonic() - back
    (source / segment_name(3)).write_bytes(os.urandom(10_000))
    wait_until(lambda: len(log_names(tmp_path / "receiver" / "db1")) == 3, 6, what="a new segment shipped")
    print(f"\nfigures: Healthy {took:.2f}s after the source came back")
    assert shipper.count("can be read again") == 1
