"""The HA agent's views of its streams, as the node's receiver shows them (docs/failover.md "HA fields in
status"): every ``ha-<stream>.json`` in the data dir, read whenever the receiver builds a status
(``status``, ``/status``, ``/metrics``, and ``status`` with no receiver running).

The file's format, its freshness and the ``ha`` block are logship/ha/view_file.py's, shared with the
shipper the agent runs; this module finds the views in a data dir and puts them on the copy rows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from logship.ha.view_file import ha_text, read_view, view_block, view_path, view_stream, write_view

__all__ = ["HA_COLUMN", "add_views", "ha_block", "ha_lines", "ha_text", "view_path", "view_streams", "write_view"]


def ha_block(data_dir: Path, stream: str, now: float) -> dict[str, Any] | None:
    """The row's ``ha`` block: the agent's fields while its view is fresh, else why it is not."""
    doc = read_view(view_path(data_dir, stream), stream)
    return None if doc is None else view_block(doc, now)


def view_streams(data_dir: Path) -> list[str]:
    """The streams an agent published a view of in ``data_dir``, in name order."""
    try:
        names = [Path(e.name) for e in os.scandir(data_dir)]
    except OSError:
        return []
    return sorted(s for s in map(view_stream, names) if s is not None)


def add_views(rows: Sequence[dict[str, Any]], data_dir: Path, now: float) -> dict[str, dict[str, Any]]:
    """The ``ha`` block of every stream with an agent's view, by stream (the snapshot's ``ha``); each
    status row of such a stream gets its block too (in place), for the table's HA column. A stream
    with no copy here (the primary ships its application's own log) has a block but no row."""
    blocks = {}
    for stream in view_streams(data_dir):
        block = ha_block(data_dir, stream, now)
        if block is not None:
            blocks[stream] = block
    for row in rows:
        if row.get("stream") in blocks:
            row["ha"] = blocks[row["stream"]]
    return blocks


def ha_lines(snapshot: dict[str, Any]) -> list[str]:
    """``status`` lines for the streams whose agent reports but that have no copy row here."""
    rows = {row.get("stream") for row in snapshot.get("copies", [])}
    blocks = snapshot.get("ha") or {}
    return [f"HA {s} (no copy here): {ha_text({'ha': b})}" for s, b in sorted(blocks.items()) if s not in rows]


HA_COLUMN = ("ha_text", "HA")
