"""``status --watch``: a live table with a catch-up bar per target on a terminal (rich, redrawn in
place), and one plain ``key=value`` line per target and look otherwise (for a pipe, a log, a script).

Both sides hand in a ``look`` that asks the daemon (or reads the data dir) once and returns a Look;
the catch-up bookkeeping (bar, rate, ETA) is logship.admin.progress's, so the bar and the daemons'
progress lines agree. Where an HA agent reports on a stream (the snapshot's ``ha``), each look shows
its line too, in the one-shot table's words (logship/ha/view_file.py ``ha_text``).
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from logship.admin.progress import Progress, Tracker, row_key
from logship.admin.table import human_age, human_bytes, status_cells
from logship.ha.view_file import ha_text

BAR_WIDTH = 16


@dataclass(slots=True)
class Look:
    """One look at a daemon's status."""

    code: int
    """What ``status`` would exit with now (0 all Healthy, 1 any not, 2 cannot tell)."""
    heading: str
    """Whose status, from where (or why there is none)."""
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    """Why this look has no rows (no daemon answers, no such stream); empty if it has."""
    ha: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The HA agent's block by stream (the snapshot's ``ha``); empty where no agent reports."""


Looker = Callable[[], Look]


def ha_of(snapshot: dict[str, Any], stream: str | None) -> dict[str, dict[str, Any]]:
    """The snapshot's HA blocks, only ``stream``'s when one is given (as ``--stream`` filters the rows)."""
    blocks = snapshot.get("ha")
    if not isinstance(blocks, dict):
        return {}
    return {s: b for s, b in sorted(blocks.items()) if stream is None or s == stream}


def ha_lines(blocks: dict[str, dict[str, Any]]) -> list[str]:
    """``HA sg1: primary e1, lease 400ms, sync b``, one per stream: under the shipper's table and the watch's
    heading alike."""
    return [f"HA {stream}: {ha_text({'ha': block})}" for stream, block in sorted(blocks.items())]


def plain_ha_line(stream: str, block: dict[str, Any], now: float) -> str:
    """One stream's HA state as ``key=value`` words, beside the targets' lines (a stream the agent leads
    may have no row here: the primary's receiver holds no copy of it)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))
    return f"time={stamp} stream={shlex.quote(stream)} ha={shlex.quote(ha_text({'ha': block}))}"


def _eta(p: Progress | None) -> str:
    if p is None or not p.left:
        return "-"
    rate = f"{human_bytes(p.rate)}/s" if p.rate else "rate ?"
    return f"{rate}, ETA {human_age(p.eta)}" if p.eta is not None else rate


def plain_line(row: dict[str, Any], p: Progress | None, now: float) -> str:
    """One target as ``key=value`` words (values shell-quoted): what a pipe or a script reads."""
    cells = status_cells(row, now)
    fields: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)),
        "stream": row.get("stream"),
        "target": row.get("target"),
        "state": row.get("state"),
        "copy_queue_segments": row.get("copy_queue_segments"),
        "copy_queue_bytes": row.get("copy_queue_bytes"),
        "copied_bytes": p.done if p else None,
        "of_bytes": p.total if p else None,
        "percent": round(100 * p.fraction) if p else None,
        "rate_bytes_per_second": round(p.rate) if p and p.rate else None,
        "eta_seconds": round(p.eta, 1) if p and p.eta is not None else None,
        "last_copied": row.get("last_copied"),
        "copy_lag_seconds": row.get("copy_lag_seconds"),
        "reason": cells["reason"] or None,
    }
    return " ".join(f"{k}={shlex.quote(str('-' if v is None else v))}" for k, v in fields.items() if k != "target" or v)


class Watcher:
    """Look every ``interval`` seconds and show each look (``count`` looks, None: until Ctrl-C)."""

    def __init__(self, look: Looker, interval: float, count: int | None, out: TextIO | None = None) -> None:
        self.look = look
        self.interval = max(0.1, interval)  # no busy loop against the daemon's control socket
        self.count = count
        self.out = out or sys.stdout
        self.trackers: dict[tuple[str, str], Tracker] = {}
        self.code = 2
        """The last look's exit code (2 before any: cannot tell)."""

    def progress(self, look: Look, now: float) -> list[tuple[dict[str, Any], Progress | None]]:
        return [(row, self.trackers.setdefault(row_key(row), Tracker()).update(row, now)) for row in look.rows]

    def run(self) -> int:
        """Show the looks; return the last one's exit code (also after Ctrl-C, which ends it cleanly)."""
        try:
            if self.out.isatty():
                self._live()
            else:
                self._plain()
        except KeyboardInterrupt:
            self.out.write("\n")
        return self.code

    def _looks(self) -> Any:
        shown = 0
        while self.count is None or shown < self.count:
            if shown:
                time.sleep(self.interval)
            look = self.look()
            self.code = look.code
            yield look
            shown += 1

    def _plain(self) -> None:
        for look in self._looks():
            now = time.time()
            if look.error:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))
                print(f"time={stamp} error={shlex.quote(look.error)}", file=self.out)
            for row, p in self.progress(look, now):
                print(plain_line(row, p, now), file=self.out)
            for stream, block in sorted(look.ha.items()):
                print(plain_ha_line(stream, block, now), file=self.out)
            self.out.flush()

    def _live(self) -> None:
        # Imported here: only a terminal needs rich (the daemons never load it).
        from rich.console import Console
        from rich.live import Live

        with Live(console=Console(file=self.out), auto_refresh=False, transient=False) as live:
            for look in self._looks():
                live.update(self.render(look, time.time()), refresh=True)

    def render(self, look: Look, now: float) -> Any:
        """The rich renderable of one look: a heading, then a table with a catch-up bar per target."""
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        head = Text(f"{look.heading}   {stamp} (every {self.interval:g}s, Ctrl-C to stop)", style="bold")
        # Under the heading, not a column: a stream the agent leads may have no row here.
        head = Group(head, *(Text(line) for line in ha_lines(look.ha)))
        if look.error:
            return Group(head, Text(look.error, style="red"))
        has_target = any(row.get("target") for row in look.rows)
        table = Table(box=None, header_style="bold", pad_edge=False)
        columns = ["STREAM", *(["TARGET"] if has_target else []), "STATE", "CATCH-UP", "COPY QUEUE", "RATE / ETA"]
        # The catch-up's columns (the one-shot ``status`` adds the replay's: REPLAY QUEUE, LAST REPLAYED, ...).
        for name in [*columns, "LAST COPIED", "COPY LAG", "REASON"]:
            table.add_column(name, no_wrap=name != "REASON", overflow="fold")
        for row, p in self.progress(look, now):
            cells = status_cells(row, now)
            state = str(row.get("state") or "-")
            style = "green" if state in ("Healthy", "Activated") else "yellow" if state == "Suspended" else "red"
            bar: Any = Text("-")
            if p is not None:
                # The bar, then how much of the catch-up is done: "30% of 4.0 MiB", or "all".
                done = f"{p.fraction:.0%} of {human_bytes(p.total)}" if p.left else "all"
                bar = Table.grid(padding=(0, 1))
                full = p.done if p.total else 1
                bar.add_row(ProgressBar(total=max(1, p.total), completed=full, width=BAR_WIDTH), done)
            table.add_row(
                str(row.get("stream")),
                *([str(row.get("target") or "-")] if has_target else []),
                Text(state, style=style),
                bar,
                cells["copy_queue_text"],
                _eta(p),
                cells["last_copied_text"],
                cells["copy_lag_text"],
                cells["reason"] or "-",
            )
        return Group(head, table)
