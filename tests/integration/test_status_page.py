"""The status page at ``/`` on both daemons' admin ports, rendered by a real headless chromium: every
copy's row with its state, queues and lags, in the words of ``status``, updating itself when a copy is
suspended and resumed; and nothing loaded from anywhere but the admin port."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.browser import Browser, chromium_path
from tests.helpers.cli import COLUMNS, logship
from tests.helpers.copies import log_names
from tests.helpers.procs import Proc, receiver_proc, shipper_proc
from tests.helpers.source import segment_name
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.skipif(
    chromium_path() is None, reason="chromium is not installed (scripts/_setup.sh installs it as root)"
)

# While the page is still loading (no body yet) a poll finds no rows instead of failing the test.
ROWS = """document.body === null ? JSON.stringify({polls: 0, headers: [], rows: []})
  : JSON.stringify({polls: Number(document.body.dataset.polls || 0),
  headers: [...document.querySelectorAll("thead th")].map((th) => th.textContent),
  rows: [...document.querySelectorAll("#rows tr")].map((tr) => ({
    stream: tr.dataset.stream, target: tr.dataset.target, state: tr.dataset.state,
    cells: [...tr.querySelectorAll("td")].map((td) => td.textContent),
    spark: tr.querySelectorAll("svg polyline").length}))})"""


@pytest.fixture
def browsers() -> Iterator[list[Browser]]:
    started: list[Browser] = []
    yield started
    for browser in started:
        browser.stop()


def page(browser: Browser) -> dict[str, Any]:
    return dict(json.loads(browser.evaluate(ROWS)))


def row_state(browser: Browser, state: str, reason: str = "") -> dict[str, Any] | None:
    rows = page(browser)["rows"]
    if len(rows) == 1 and rows[0]["state"] == state and reason in rows[0]["cells"][-2]:
        return dict(rows[0])
    return None


def test_status_page_in_chromium(tmp_path: Path, secret: Path, procs: list[Proc], browsers: list[Browser]) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for i in (1, 2):
        (source / segment_name(i)).write_bytes(bytes([i]) * 10_000)
    receiver = receiver_proc(tmp_path, secret, extra=["--admin", "127.0.0.1:0", "--replay-lag", "1h30m"]).start()
    shipper = shipper_proc(tmp_path, "db1", source, [receiver], secret, ["--admin", "127.0.0.1:0"]).start()
    procs += [receiver, shipper]
    state_dir, data = shipper.args[shipper.args.index("--state-dir") + 1], str(tmp_path / "receiver")
    wait_until(lambda: log_names(tmp_path / "receiver" / "db1") == [segment_name(1)], 30, what="the copy")
    wait_until(lambda: logship("status", "--state-dir", state_dir).returncode == 0, 20, what="shipper Healthy")

    # The page is one document: no script, style, image or frame from anywhere else.
    ship_url = f"http://127.0.0.1:{shipper.admin_port()}/"
    with urllib.request.urlopen(ship_url, timeout=10) as resp:
        html = resp.read().decode()
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html), "the page loads an external asset"

    ship = Browser(ship_url + "?interval=300", tmp_path / "chromium-shipper", tmp_path / "chromium-shipper.log")
    recv = Browser(
        f"http://127.0.0.1:{receiver.admin_port()}/?interval=300",
        tmp_path / "chromium-receiver",
        tmp_path / "chromium-receiver.log",
    )
    browsers += [ship, recv]

    # Both pages: the status command's columns, one row per copy, in the command's words and units.
    for browser in (ship, recv):
        shown = wait_until(lambda b=browser: row_state(b, "Healthy"), 30, what="a Healthy row rendered")  # type: ignore[misc]
        headers = page(browser)["headers"]
        assert all(column in headers for column in COLUMNS), headers
        assert shown["stream"] == "db1" and shown["spark"] == 1
        # No HA agent on either daemon: no HA line (tests/integration/test_ha_watch_page.py has them).
        assert browser.evaluate('document.querySelectorAll("#ha li").length') == 0
    ship_row = row_state(ship, "Healthy")
    assert ship_row is not None and ship_row["target"] == receiver.address
    assert ship_row["cells"][3] == "0 seg, 0 B", ship_row  # COPY QUEUE: the source is all copied
    recv_row = row_state(recv, "Healthy")
    assert recv_row is not None
    # The receiver holds segment 1 for the 1h30m replay lag: its replay queue and the configured lag show.
    assert recv_row["cells"][4] == "1 seg, 9.8 KiB" and "(lag 1h30m)" in recv_row["cells"][8], recv_row

    # The pages follow changes without a reload: suspend shows within a few polls, resume clears it.
    polls = page(ship)["polls"]
    done = logship("suspend", "--state-dir", state_dir, "--stream", "db1", "--target", receiver.address)
    assert done.returncode == 0, done.stderr
    done = logship("suspend", "--data-dir", data, "--stream", "db1", "--comment", "page test")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: row_state(ship, "Suspended", "suspended: (no comment)"), 20, what="shipper page Suspended")
    wait_until(lambda: row_state(recv, "Suspended", "suspended: page test"), 20, what="receiver page Suspended")
    assert page(ship)["polls"] > polls
    assert logship("resume", "--state-dir", state_dir, "--stream", "db1", "--target", receiver.address).returncode == 0
    wait_until(lambda: row_state(ship, "Healthy"), 30, what="shipper page Healthy again")

    # A daemon that stopped: the page says it cannot read /status and keeps the last rows.
    shipper.stop()
    wait_until(
        lambda: "cannot read /status" in ship.evaluate('document.getElementById("updated").textContent'),
        20,
        what="the page noticing the shipper is gone",
    )
