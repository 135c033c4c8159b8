"""The one place the HA agent drives the node's receiver and shipper, and runs the hooks.

``fence --epoch``, ``activate --epoch`` (issue 14) and ``shipper wait`` (issue 15) are called as the
commands those issues document; where a command is not there yet the call fails with its one-line
error, which the agent logs and retries. Integration with those branches happens here only.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("logship.ha")

COMMAND_TIMEOUT = 60.0


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
    argv = _receiver(node, "fence", "--epoch", str(epoch))
    return await _checked(argv, "fence")


async def activate(node: Node, epoch: int) -> bool:
    argv = _receiver(node, "activate", "--epoch", str(epoch), "--json")
    return await _checked(argv, "activate")


async def wait_durable(node: Node, segment: str, offset: int, target: str, timeout: float) -> bool:
    """``shipper wait`` until ``target`` holds [0, offset) of ``segment`` durably (switchover)."""
    if node.shipper_state_dir is None:
        return True
    argv = [
        sys.executable,
        "-m",
        "shipper",
        "wait",
        "--state-dir",
        str(node.shipper_state_dir),
        "--stream",
        node.stream,
        "--segment",
        segment,
        "--offset",
        str(offset),
        "--require",
        f"ALL ({target})",
        "--timeout",
        str(timeout),
    ]
    return await _checked(argv, "wait", timeout + 5)


async def stop_shipping(node: Node) -> bool:
    """Suspend the stream in the node's shipper (the demoted primary writes nothing more)."""
    if node.shipper_state_dir is None:
        return True
    argv = [
        sys.executable,
        "-m",
        "shipper",
        "suspend",
        "--state-dir",
        str(node.shipper_state_dir),
        "--stream",
        node.stream,
    ]
    return await _checked(argv, "suspend")


async def _checked(argv: list[str] | None, what: str, timeout: float = COMMAND_TIMEOUT) -> bool:
    if argv is None:
        return True
    code, out = await run(argv, timeout)
    if code != 0:
        log.error("%s failed (exit %d): %s", what, code, out.strip().splitlines()[-1:] or "")
    return code == 0
