"""What the HA agent reads from its own node: the receiver's copy and the shipper's targets.

Everything here is read, never changed: the receiver's status row through its control socket, the
copy's position from its manifest and its partial segment, the shipper's rows through its control
socket, and a source directory's head. Each read is bounded and returns None when the daemon does
not answer, so the agent decides on what it knows (a standby whose receiver is down has no position
and cannot be promoted).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logship.admin import control
from logship.ha.decide import Mark
from receiver.datadir import control_path
from receiver.manifest import parse_manifest
from receiver.state import load_state
from shipper.policy import PolicyError, TargetPosition, parse_policy, resolve, satisfied

STATUS_TIMEOUT = 2.0
HEAD_STALE = 10.0
"""An attached shipper whose last HEARTBEAT is older than this is not counted as acknowledging (a
host that vanished without closing its connection; the receiver notices only at its own timeout)."""
DEFAULT_PATTERN = r"E00[0-9A-F]{8}\.log"


def _call(path: Path, request: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return control.call(path, request, STATUS_TIMEOUT)
    except (control.ControlUnavailable, control.ControlError, OSError, ValueError):
        return None


async def receiver_row(data_dir: Path, stream: str) -> dict[str, Any] | None:
    """The running receiver's status row of ``stream``; None when no receiver answers or it has no copy."""
    reply = await asyncio.to_thread(_call, control_path(data_dir), {"op": "status"})
    if reply is None:
        return None
    rows = reply.get("copies")
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict) and row.get("stream") == stream:
            return row
    return None


def acknowledging(row: dict[str, Any] | None, wall: float) -> bool:
    """Whether a shipper of the copy's epoch is attached now (the receiver admits no older one)."""
    if row is None or row.get("state") != "Healthy":
        return False
    at = row.get("source_head_at")
    return not (isinstance(at, int | float) and wall - at > HEAD_STALE)


def copy_mark(copy_dir: Path) -> Mark | None:
    """The copy's position: its last verified segment, or the partial after it; None without a copy."""
    try:
        records = parse_manifest((copy_dir / "manifest").read_bytes())
    except FileNotFoundError:
        return None
    total = sum(r.size for r in records)
    mark = Mark(records[-1].name, records[-1].size, len(records), total) if records else Mark("", 0, 0, 0)
    try:
        partials = [e for e in os.scandir(copy_dir / "incoming") if e.name.endswith(".partial")]
    except FileNotFoundError:
        partials = []
    for e in partials:
        name = e.name[: -len(".partial")]
        if name > mark.segment:
            try:
                size = e.stat().st_size
            except FileNotFoundError:
                continue  # installed meanwhile: the manifest read next round has it
            mark = Mark(name, size, len(records) + 1, total + size)
    return mark


def source_mark(source: Path, pattern: str = DEFAULT_PATTERN) -> Mark | None:
    """The head of a log directory: its newest segment and every byte up to its end."""
    rx = re.compile(pattern)
    try:
        entries = sorted((e.name, e.stat().st_size) for e in os.scandir(source) if rx.fullmatch(e.name))
    except FileNotFoundError:
        return None
    if not entries:
        return Mark("", 0, 0, 0)
    name, size = entries[-1]
    return Mark(name, size, len(entries), sum(s for _, s in entries))


async def shipper_rows(state_dir: Path, stream: str) -> list[dict[str, Any]] | None:
    """The running shipper's rows of ``stream`` (one per target); None when no shipper answers."""
    reply = await asyncio.to_thread(_call, state_dir / "control.sock", {"op": "status"})
    if reply is None:
        return None
    rows = reply.get("copies")
    return [r for r in rows if isinstance(r, dict) and r.get("stream") == stream] if isinstance(rows, list) else []


async def shipper_pid(state_dir: Path) -> int | None:
    reply = await asyncio.to_thread(_call, state_dir / "control.sock", {"op": "status"})
    pid = reply.get("pid") if reply else None
    return pid if isinstance(pid, int) and pid > 0 else None


def sync_set(policy_text: str, peers: Mapping[str, str], rows: list[dict[str, Any]]) -> frozenset[str]:
    """The peers that hold every byte ``shipper wait`` can have confirmed under the policy.

    A target is in the set when the policy cannot be met without it (ALL, ANY n of n, FIRST k while
    it is among the first k up): then no wait succeeded unless it held the bytes. Peers are node
    names; the policy names targets by address, as the shipper does. For FIRST the set follows which
    targets are up now: bytes confirmed by a target that went down since are not on its successor
    until it catches up, so a lossless failover right after such a change may miss them.
    """
    addresses = list(peers.values())
    try:
        policy = resolve(parse_policy(policy_text), addresses)
    except PolicyError:
        return frozenset()
    up = {r.get("target"): r.get("state") == "Healthy" for r in rows}
    held: frozenset[str] = frozenset()
    for node, address in peers.items():
        # Could the policy be met by the other targets that are up, this one holding nothing?
        positions = {a: TargetPosition(a != address and bool(up.get(a)), bool(up.get(a))) for a in addresses}
        if not satisfied(policy, positions):
            held |= {node}
    return held


def disk_epoch(copy_dir: Path) -> int | None:
    try:
        return load_state(copy_dir / "state.json").epoch
    except (OSError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class Local:
    """One round's reading of the node: the copy (or the source it ships) and its shipper."""

    mark: Mark | None
    state: str
    epoch: int | None
    """The copy's epoch, None without a copy."""
    acknowledging: bool
    wall: float


async def read_local(data_dir: Path | None, stream: str) -> Local:
    wall = time.time()
    if data_dir is None:
        return Local(None, "Disconnected", None, False, wall)
    row = await receiver_row(data_dir, stream)
    mark = await asyncio.to_thread(copy_mark, data_dir / stream)
    if row is None:
        # No receiver runs: nothing can be attached; the copy's epoch is on disk (activate works offline).
        epoch = await asyncio.to_thread(disk_epoch, data_dir / stream) if mark is not None else None
        return Local(mark, "Disconnected", epoch, False, wall)
    epoch = row.get("epoch")
    return Local(mark, str(row.get("state")), epoch if isinstance(epoch, int) else None, acknowledging(row, wall), wall)
