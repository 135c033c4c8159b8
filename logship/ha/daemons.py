"""The one place the HA agent drives the node's receiver and shipper, and runs the hooks.

``receiver fence --epoch``, ``receiver activate --epoch --json`` (issue 14) and ``shipper wait`` (issue
15) are called as the documented commands, so the agent needs no access to the daemons' internals; a
failed call is logged with its last line and retried at the next round. The shipper process itself is
logship/ha/shipping.py; what the agent reads from the daemons is logship/ha/local.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("logship.ha")

COMMAND_TIMEOUT = 60.0
ACTIVATE_TIMEOUT = 3600.0
"""Activation replays everything verified first: a long replay queue takes its time."""


@dataclass(frozen=True, slots=True)
class Node:
    """What the agent knows of its node's daemons and hooks (all optional)."""

    stream: str
    data_dir: Path | None = None
    """The receiver's data dir (fence, activate)."""
    shipper_state_dir: Path | None = None
    """The shipper's state dir (wait, suspend, resume)."""
    on_promote: str | None = None
    on_demote: str | None = None
    on_follow: str | None = None
    """Run with ``{primary}`` replaced by the new primary's node name."""


async def run(argv: list[str], timeout: float = COMMAND_TIMEOUT) -> tuple[int, str]:
    """Run a command without a shell; return (exit code, its output). Killed by pid on timeout."""
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return 124, f"timed out after {timeout:g}s"
    return proc.returncode or 0, out.decode(errors="replace")[-2000:]


async def hook(command: str | None, **fields: str) -> bool:
    """Run an application hook through the shell (the operator wrote it); True when it succeeded."""
    if not command:
        return True
    text = command.format(**fields) if fields else command
    proc = await asyncio.create_subprocess_shell(text)
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT):
            code = await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        code = 124
    (log.info if code == 0 else log.error)("hook %r exited %d", text, code)
    return code == 0


def _receiver(node: Node, *args: str) -> list[str] | None:
    if node.data_dir is None:
        return None
    return [sys.executable, "-m", "receiver", *args, "--data-dir", str(node.data_dir), "--stream", node.stream]


async def fence(node: Node, epoch: int) -> bool:
    """``receiver fence --epoch``; a node with no copy of the stream yet has nothing to fence."""
    if node.data_dir is None or not (node.data_dir / node.stream / "state.json").exists():
        return True
    return await _checked(_receiver(node, "fence", "--epoch", str(epoch)), "fence")


async def activate(node: Node, epoch: int) -> dict[str, object] | None:
    """``receiver activate --epoch N --json``: the report (fork, history_file), or None if refused."""
    argv = _receiver(node, "activate", "--epoch", str(epoch), "--json", "--yes")
    if argv is None:
        return None
    code, out = await run(argv, ACTIVATE_TIMEOUT)
    try:
        report = json.loads(out[out.index("{") :]) if "{" in out else None
    except ValueError:
        report = None
    if code != 0 or not isinstance(report, dict):
        log.error("activate failed (exit %d): %s", code, out.strip().splitlines()[-1:] or "")
        return None
    return report


async def wait_sealed(node: Node, segment: str, target: str, timeout: float) -> bool:
    """``shipper wait --sealed`` until ``target`` (HOST:PORT) holds ``segment`` sealed (switchover).

    Sealed, not only its bytes: activation takes the sealed segments into the new epoch and leaves an
    unsealed tail beside the replica, so only a sealed last segment makes a switchover lossless.
    """
    if node.shipper_state_dir is None:
        return True
    argv = [
        *(sys.executable, "-m", "shipper", "wait", "--state-dir", str(node.shipper_state_dir)),
        *("--stream", node.stream, "--segment", segment, "--sealed"),
        *("--require", f"ANY 1 ({target})", "--timeout", f"{timeout:g}"),
    ]
    return await _checked(argv, "wait", timeout + 20)


async def _checked(argv: list[str] | None, what: str, timeout: float = COMMAND_TIMEOUT) -> bool:
    if argv is None:
        return True
    code, out = await run(argv, timeout)
    if code != 0:
        log.error("%s failed (exit %d): %s", what, code, out.strip().splitlines()[-1:] or "")
    return code == 0
