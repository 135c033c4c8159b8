"""A real headless browser (Debian's chromium) driven over the DevTools protocol on 127.0.0.1.

Only what the status-page test needs: open a URL, evaluate JavaScript in it, stop by pid. The
DevTools port is chosen by chromium (port 0) and read back from its user-data dir.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers.procs import stop_popen
from tests.helpers.waiting import wait_until

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


def chromium_path() -> str | None:
    return shutil.which("chromium")


class Browser:
    """One chromium process with one page open at ``url``."""

    def __init__(self, url: str, profile: Path, log: Path) -> None:
        exe = chromium_path()
        assert exe, "chromium is not installed"
        profile.mkdir(parents=True)
        self.profile = profile
        self._ids = itertools.count(1)
        self.log = log.open("wb")
        self.popen = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={profile}", url], stdout=self.log, stderr=subprocess.STDOUT
        )
        port_file = profile / "DevToolsActivePort"
        # Complete once it holds both lines (port, browser path): it may be read while being written.
        wait_until(
            lambda: port_file.exists() and len(port_file.read_text().split()) >= 2, 30, what="chromium's DevTools port"
        )
        self.port = int(port_file.read_text().split()[0])
        self.ws_url = wait_until(lambda: self._page_ws(url), 30, what="the page target")

    def _page_ws(self, url: str) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=5) as resp:
                targets = json.loads(resp.read())
        except OSError:
            return None  # DevTools not answering yet: asked again until the wait's deadline
        for target in targets:
            if target.get("type") == "page" and target.get("url", "").startswith(url):
                return str(target["webSocketDebuggerUrl"])
        return None

    def evaluate(self, expression: str, timeout: float = 10) -> Any:
        """Return the JSON value of ``expression`` evaluated in the page."""
        return asyncio.run(self._evaluate(expression, timeout))

    async def _evaluate(self, expression: str, timeout: float) -> Any:
        msg_id = next(self._ids)
        request = {
            "id": msg_id,
            "method": "Runtime.evaluate",
            "params": {"expression": expression, "returnByValue": True},
        }
        async with asyncio.timeout(timeout), aiohttp.ClientSession() as session:
            async with session.ws_connect(self.ws_url, max_msg_size=1 << 24) as ws:
                await ws.send_json(request)
                for _ in range(1000):
                    reply = await ws.receive_json()
                    if reply.get("id") == msg_id:
                        result = reply["result"]
                        assert "exceptionDetails" not in result, result
                        return result["result"].get("value")
        raise AssertionError("no answer from chromium")

    def stop(self) -> None:
        stop_popen(self.popen)
        self.log.close()
