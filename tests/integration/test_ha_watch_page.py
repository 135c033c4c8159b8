"""The HA agent's line in both daemons' plain ``status --watch`` (a pipe) and on their status pages (a real
headless chromium), from real daemons: the shipper reads the view file ``LOGSHIP_HA_VIEW`` names, the
receiver every ``ha-<stream>.json`` in its data dir. The views are written here as the agent writes
them (logship/ha/view_file.py ``write_view``), so no etcd is needed: what is tested is what the daemons
show, in the one-shot ``status`` table's words; and nothing where no agent reports."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from logship.ha.view_file import VIEW_ENV, view_path, write_view
from tests.helpers.browser import Browser, chromium_path
from tests.helpers.cli import logship
from tests.helpers.copies import log_names
from tests.helpers.ha_views import view
from tests.helpers.procs import Proc, receiver_proc, shipper_proc
from tests.helpers.source import segment_name
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.skipif(
    chromium_path() is None, reason="chromium is not installed (scripts/_setup.sh installs it as root)"
)

# The page's HA lines; null while it is still loading (no body yet) or before its first poll.
HA = """JSON.stringify(document.body === null || !document.body.dataset.polls ? null
  : [...document.querySelectorAll("#ha li")].map((li) => ({stream: li.dataset.stream, text: li.textContent,
     stale: li.className === "stale"})))"""


def fresh(**kw: Any) -> dict[str, Any]:
    """A view the agent wrote just now, fresh for an hour (the test's pace does not matter)."""
    now = time.time()
    return view(written_at=now, lease_renewed_at=now, fresh_for=3600.0, **kw)


def watch_lines(*where: str) -> list[dict[str, str]]:
    """Two looks of ``status --watch`` into a pipe, each line as its key=value words."""
    done = logship("status", *where, "--watch", "0.2", "--count", "2")
    return [dict(w.split("=", 1) for w in shlex.split(line)) for line in done.stdout.splitlines() if line]


def ha_words(lines: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(line["stream"], line["ha"]) for line in lines if "ha" in line]


def page_ha(browser: Browser, ok: Callable[[list[dict[str, Any]]], bool], what: str) -> list[dict[str, Any]]:
    """The page's HA lines once it has polled and ``ok`` holds for them (the page follows without a reload)."""

    def look() -> tuple[list[dict[str, Any]]] | None:
        found = json.loads(browser.evaluate(HA))
        return (found,) if found is not None and ok(found) else None  # a tuple: [] is an answer too

    return wait_until(look, 30, what=what)[0]


def test_the_ha_line_in_both_watches_and_pages(
    tmp_path: Path, secret: Path, procs: list[Proc], monkeypatch: pytest.MonkeyPatch
) -> None:
    source, agent_dir, data = tmp_path / "src", tmp_path / "agent", tmp_path / "receiver"
    source.mkdir()
    agent_dir.mkdir()
    for i in (1, 2):
        (source / segment_name(i)).write_bytes(bytes([i]) * 10_000)
    receiver = receiver_proc(tmp_path, secret, extra=["--admin", "127.0.0.1:0"]).start()
    procs.append(receiver)
    # The shipper as its agent starts it: the view file's path in its environment (not yet written).
    monkeypatch.setenv(VIEW_ENV, str(view_path(agent_dir, "db1")))
    shipper = shipper_proc(tmp_path, "db1", source, [receiver], secret, ["--admin", "127.0.0.1:0"]).start()
    procs.append(shipper)
    monkeypatch.delenv(VIEW_ENV)
    state_dir = shipper.args[shipper.args.index("--state-dir") + 1]
    wait_until(lambda: log_names(data / "db1") == [segment_name(1)], 30, what="the copy")
    wait_until(lambda: logship("status", "--state-dir", state_dir).returncode == 0, 20, what="shipper Healthy")
    browsers: list[Browser] = []
    try:
        for name, proc in (("shipper", shipper), ("receiver", receiver)):
            url = f"http://127.0.0.1:{proc.admin_port()}/?interval=300"
            browsers.append(Browser(url, tmp_path / f"chromium-{name}", tmp_path / f"chromium-{name}.log"))
        ship, recv = browsers
        # No view in the receiver's data dir: no HA line in its watch or on its page.
        recv_lines = watch_lines("--data-dir", str(data))
        assert [line["stream"] for line in recv_lines] == ["db1", "db1"] and ha_words(recv_lines) == [], recv_lines
        assert page_ha(recv, lambda _: True, "the receiver page's first poll") == []
        # The shipper's agent named its file but has not written it: both say so.
        not_yet = f"the agent has not written {view_path(agent_dir, 'db1')} yet"
        assert ha_words(watch_lines("--state-dir", state_dir)) == [("db1", not_yet)] * 2
        shown = page_ha(ship, lambda h: len(h) == 1, "the shipper page's line")
        assert shown == [{"stream": "db1", "text": f"HA db1: {not_yet}", "stale": True}], shown

        # The agents publish: the shipper's a primary; the receiver's node a standby of db1, and the primary
        # of pg, a stream it has no copy of.
        write_view(agent_dir, "db1", fresh(node="a", role="primary", leader="a", epoch=1, sync=["b"]))
        write_view(data, "db1", fresh(epoch=1))
        write_view(data, "pg", fresh(node="b", role="primary", leader="b", sync=["c"]))
        table = logship("status", "--data-dir", str(data)).stdout  # the one-shot table, for its words
        standby = "standby e1 (leader a), eligible, in sync"
        assert standby in table and "HA pg (no copy here): primary e2, lease " in table, table
        recv_lines = watch_lines("--data-dir", str(data))
        assert [line["stream"] for line in recv_lines] == ["db1", "db1", "pg"] * 2, recv_lines
        got = ha_words(recv_lines)
        assert got[0] == got[2] == ("db1", standby) and got[1][0] == got[3][0] == "pg", got
        assert got[1][1].startswith("primary e2, lease ") and got[1][1].endswith(", sync c"), got
        ship_got = ha_words(watch_lines("--state-dir", state_dir))
        assert [s for s, _ in ship_got] == ["db1", "db1"], ship_got
        assert all(t.startswith("primary e1, lease ") and t.endswith(", sync b") for _, t in ship_got), ship_got
        # The pages: the same words, for every stream.
        shown = page_ha(recv, lambda h: len(h) == 2, "the receiver page's 2 lines")
        assert shown[0] == {"stream": "db1", "text": f"HA db1: {standby}", "stale": False}, shown
        assert shown[1]["stream"] == "pg" and shown[1]["text"].startswith("HA pg: primary e2, lease "), shown
        assert shown[1]["text"].endswith(", sync c") and not shown[1]["stale"], shown
        shown = page_ha(ship, lambda h: len(h) == 1 and not h[0]["stale"], "the shipper page's primary line")
        assert shown[0]["text"].startswith("HA db1: primary e1, lease ") and shown[0]["text"].endswith(", sync b")

        # The receiver's agent stops: its line says so, marked stale; pg's goes on.
        write_view(data, "db1", fresh(epoch=1, stopped=True))
        shown = page_ha(recv, lambda h: len(h) == 2 and h[0]["stale"], "the receiver page's stopped line")
        assert shown[0]["text"].startswith("HA db1: agent stopped ") and "(last: standby e1)" in shown[0]["text"]
        assert not shown[1]["stale"], shown
        stopped = ha_words(watch_lines("--data-dir", str(data)))[0]
        assert stopped[0] == "db1" and stopped[1].startswith("agent stopped "), stopped
        assert stopped[1].endswith(" ago (last: standby e1)"), stopped
    finally:
        for browser in browsers:
            browser.stop()
