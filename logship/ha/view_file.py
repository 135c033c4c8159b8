"""The file the HA agent publishes its view of a stream in, and what a daemon shows from it.

The agent (logship/ha/admin.py ``publish``) writes ``DATA_DIR/ha-<stream>.json`` atomically (a temporary
file renamed over it) at every change of its role, leader, epoch, sync set or eligibility, and at
least every TTL / 6 seconds. Two daemons read it whenever they build their status:

- the node's receiver (receiver/ha_view.py finds every view in its data dir);
- the shipper the agent runs while its node leads: the agent passes the file's path in the
  environment (``LOGSHIP_HA_VIEW``), and the shipper reads that one file (``shipper_views``).

Both show the ``ha`` block only while the view is fresh: written less than ``fresh_for`` (the agent's
TTL) seconds ago by an agent that has not stopped. An older view says the agent is not reporting,
with its age, and keeps what it last said under ``last``: a role read from a stale view is not to be
trusted (a primary whose agent stopped renewing has demoted by now, or is about to).

The file is a status, not a record: it is not fsynced, and one lost in a crash reads as "not
reporting", which is what it is. No daemon decides anything from it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from protocol.names import is_stream_name

VERSION = 1
MAX_SIZE = 16 * 1024
"""Largest view read (the agent's documents are well under 1 KiB)."""
VIEW_ENV = "LOGSHIP_HA_VIEW"
"""The environment variable the agent sets for the shipper it starts: the path of its view file."""
_SHOWN = ("node", "role", "leader", "epoch", "copy_epoch", "sync", "eligible", "ineligible", "last_action")


def view_path(data_dir: Path, stream: str) -> Path:
    """Where the agent of ``stream`` publishes its view: beside the copies, not inside one (a reseed or
    rewind moves a copy's files, never this)."""
    return data_dir / f"ha-{stream}.json"


def view_stream(path: Path) -> str | None:
    """The stream a view file is named for (``ha-<stream>.json``), or None when the name is not one."""
    name = path.name
    if not (name.startswith("ha-") and name.endswith(".json")):
        return None
    stream = name[3:-5]
    return stream if is_stream_name(stream) else None


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


def read_view(path: Path, stream: str) -> dict[str, Any] | str | None:
    """The agent's view document at ``path``, the reason it cannot be used, or None when there is none."""
    try:
        with open(path, "rb") as f:
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
        return "the agent's view is not one this version reads"
    for key in ("written_at", "fresh_for"):
        if not isinstance(doc.get(key), int | float) or isinstance(doc.get(key), bool):
            return f"the agent's view has no {key}"
    return doc


def view_block(doc: dict[str, Any] | str, now: float) -> dict[str, Any]:
    """The ``ha`` block from a view read at wall-clock ``now``: its fields while fresh, else why not; and
    under ``text`` the HA cell's words for it (``ha_text``)."""
    block: dict[str, Any]
    age = round(max(0.0, now - doc["written_at"]), 3) if isinstance(doc, dict) else 0.0
    if isinstance(doc, str):
        block = {"reporting": False, "problem": doc}
    elif doc.get("stopped") or age > doc["fresh_for"]:
        last = {k: doc.get(k) for k in ("node", "role", "leader", "epoch")}
        block = {"reporting": False, "age_seconds": age, "stopped": bool(doc.get("stopped")), "last": last}
    else:
        block = {"reporting": True, "age_seconds": age, **{k: doc.get(k) for k in _SHOWN}}
        block["primary"] = doc.get("role") == "primary"
        sync = doc.get("sync")
        block["in_sync"] = isinstance(sync, list) and doc.get("node") in sync
        renewed = doc.get("lease_renewed_at")
        block["lease_age_seconds"] = round(max(0.0, now - renewed), 3) if isinstance(renewed, int | float) else None
    # The status page shows this text as it comes (its script has no copy of ha_text's wording).
    block["text"] = ha_text({"ha": block})
    return block


def shipper_views(env: Mapping[str, str], now: float) -> dict[str, dict[str, Any]]:
    """The shipper's ``ha`` blocks by stream: the one view file the agent that started it names in
    ``LOGSHIP_HA_VIEW``; empty for a shipper no agent started."""
    text = env.get(VIEW_ENV)
    if not text:
        return {}
    path = Path(text)
    stream = view_stream(path)
    if stream is None:
        return {"?": view_block(f"{VIEW_ENV}={text} does not name an ha-<stream>.json file", now)}
    doc = read_view(path, stream)
    if doc is None:  # the agent names it before its first write: it has not reported yet
        return {stream: view_block(f"the agent has not written {path} yet", now)}
    return {stream: view_block(doc, now)}


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
