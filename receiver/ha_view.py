"""The HA agent's view of a stream, as the node's receiver shows it (docs/failover.md "HA fields in status").

The agent (logship/ha/admin.py ``publish``) writes ``DATA_DIR/ha-<stream>.json`` atomically (a temporary
file renamed over it) at every change of its role, leader, epoch, sync set or eligibility, and at
least every TTL / 6 seconds. The receiver reads it whenever it builds a status row (``status``,
``/status``, ``/metrics``, and ``status`` with no receiver running), and shows the ``ha`` block only
while the view is fresh: written less than ``fresh_for`` (the agent's TTL) seconds ago by an agent
that has not stopped. An older view says the agent is not reporting, with its age, and keeps what it
last said under ``last``: a role read from a stale view is not to be trusted (a primary whose agent
stopped renewing has demoted by now, or is about to).

The file is a status, not a record: it is not fsynced, and one lost in a crash reads as "not
reporting", which is what it is. Nothing in the receiver decides anything from it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from protocol.names import is_stream_name

VERSION = 1
MAX_SIZE = 16 * 1024
"""Largest view read (the agent's documents are well under 1 KiB)."""
_SHOWN = ("node", "role", "leader", "epoch", "copy_epoch", "sync", "eligible", "ineligible", "last_action")


def view_path(data_dir: Path, stream: str) -> Path:
    """Where the agent of ``stream`` publishes its view: beside the copies, not inside one (a reseed or
    rewind moves a copy's files, never this)."""
    return data_dir / f"ha-{stream}.json"


def write_view(data_dir: Path, stream: str, doc: dict[str, Any]) -> bool:
    """Replace the view atomically; False when the data dir is not there (no receiver set up yet)."""
    if not data_dir.is_dir():
        return False
    path = view_path(data_dir, stream)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"v": VERSION, "stream": stream, **doc}, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk or a read-only data dir: leave nothing behind
        raise
    return True


def read_view(data_dir: Path, stream: str) -> dict[str, Any] | str | None:
    """The agent's view document, the reason it cannot be used, or None when no agent ever wrote one."""
    try:
        with open(view_path(data_dir, stream), "rb") as f:
            raw = f.read(MAX_SIZE + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"cannot read the agent's view: {e.strerror}"
    try:
        doc = json.loads(raw) if len(raw) <= MAX_SIZE else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or doc.get("v") != VERSION or doc.get("stream") != stream:
        return "the agent's view is not one this receiver reads"
    for key in ("written_at", "fresh_for"):
        if not isinstance(doc.get(key), int | float) or isinstance(doc.get(key), bool):
            return f"the agent's view has no {key}"
    return doc


def ha_block(data_dir: Path, stream: str, now: float) -> dict[str, Any] | None:
    """The row's ``ha`` block: the agent's fields while its view is fresh, else why it is not."""
    doc = read_view(data_dir, stream)
    if doc is None:
        return None
    if isinstance(doc, str):
        return {"reporting": False, "problem": doc}
    age = round(max(0.0, now - doc["written_at"]), 3)
    if doc.get("stopped") or age > doc["fresh_for"]:
        last = {k: doc.get(k) for k in ("node", "role", "leader", "epoch")}
        return {"reporting": False, "age_seconds": age, "stopped": bool(doc.get("stopped")), "last": last}
    block: dict[str, Any] = {"reporting": True, "age_seconds": age, **{k: doc.get(k) for k in _SHOWN}}
    block["primary"] = doc.get("role") == "primary"
    sync = doc.get("sync")
    block["in_sync"] = isinstance(sync, list) and doc.get("node") in sync
    renewed = doc.get("lease_renewed_at")
    block["lease_age_seconds"] = round(max(0.0, now - renewed), 3) if isinstance(renewed, int | float) else None
    return block


def view_streams(data_dir: Path) -> list[str]:
    """The streams an agent published a view of in ``data_dir``, in name order."""
    try:
        names = [e.name for e in os.scandir(data_dir) if e.name.startswith("ha-") and e.name.endswith(".json")]
    except OSError:
        return []
    return sorted(s for s in (n[3:-5] for n in names) if is_stream_name(s))


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


def ha_text(row: dict[str, Any]) -> str:
    """The HA cell: ``primary e2, lease 0.4s, sync b`` / ``standby e2 (leader a), not eligible: ...`` /
    ``agent not reporting for 12.3s (last: primary e1)``; ``-`` with no agent on the node."""
    from logship.admin.table import human_age

    ha = row.get("ha")
    if not isinstance(ha, dict):
        return "-"
    if not ha.get("reporting"):
        if ha.get("problem"):
            return str(ha["problem"])
        last = ha.get("last") or {}
        said = f"last: {last.get('role')} e{last.get('epoch')}"
        if ha.get("stopped"):
            return f"agent stopped {human_age(ha.get('age_seconds'))} ago ({said})"
        return f"agent not reporting for {human_age(ha.get('age_seconds'))} ({said})"
    sync = ", ".join(ha.get("sync") or []) or "(empty)"
    if ha.get("primary"):
        return f"primary e{ha.get('epoch')}, lease {human_age(ha.get('lease_age_seconds'))}, sync {sync}"
    text = f"standby e{ha.get('epoch')} (leader {ha.get('leader') or 'none'})"
    text += ", eligible" if ha.get("eligible") else f", not eligible: {ha.get('ineligible')}"
    return text + (", in sync" if ha.get("in_sync") else "")
