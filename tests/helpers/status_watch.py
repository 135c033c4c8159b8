"""Poll daemons' ``/status`` in a background thread while a test runs, keeping every (state, failure) seen.

A state that lasts a second or two (Retrying, Waiting) is easy to miss with one look at the end: the
watch looks every ``interval`` seconds and the test asserts on what it saw over the whole run.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from typing import Any


def status(port: int) -> dict[str, Any]:
    """Return a daemon's ``/status`` document. Raises OSError."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
    return doc


def metric(port: int, name: str) -> float:
    """The value of the unlabelled sample ``name`` at the daemon's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no {name} at /metrics")


class StatusWatch:
    """Poll the ``/status`` of each port in ``ports`` every ``interval`` seconds.

    ``seen[i]`` keeps, in order, every (state, failure) of every row port ``i`` showed (``states()``
    and ``distinct()`` for the sets); ``rows[i]`` every whole row, for the fields a test needs more.
    """

    def __init__(self, *ports: int, interval: float = 0.2) -> None:
        self.ports = ports
        self.interval = interval
        self.seen: list[list[tuple[str, str | None]]] = [[] for _ in ports]
        self.rows: list[list[dict[str, Any]]] = [[] for _ in ports]
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StatusWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def distinct(self, i: int = 0) -> set[tuple[str, str | None]]:
        """Return the distinct (state, failure) pairs port ``i`` showed."""
        return set(self.seen[i])

    def states(self, i: int = 0) -> set[str]:
        """Return the states port ``i`` showed."""
        return {state for state, _ in self.seen[i]}

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                docs = [status(p) for p in self.ports]
            except OSError:
                continue  # a busy machine (or a daemon restarting): the next poll
            self.polls += 1
            for i, doc in enumerate(docs):
                rows = doc.get("copies", [])
                self.rows[i] += rows
                self.seen[i] += [(row["state"], row.get("failure")) for row in rows]
