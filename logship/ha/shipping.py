"""The shipper the HA agent runs while its node is the primary: started on promotion, stopped on demotion.

The agent writes the shipper's TOML (the stream, its source, the claimed epoch or the activation's
history file, one target per peer, the sync policy) into the shipper's state dir and starts
``python -m shipper --config FILE`` as a child. The child is not in the agent's process group's
fate: a kill -9 of the agent leaves it shipping (the standbys then see a shipper still acknowledging
and do not take over), which is what a crash of the agent alone must do. A shipper left running by
an earlier agent is found through its control socket and stopped by the pid it reports.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from logship.ha.local import shipper_pid

log = logging.getLogger("logship.ha")

STOP_TIMEOUT = 10.0
SHIPPER_KEYS = frozenset({"admin"})
"""Keys of [ha.shipper] that are the shipper's own (top-level), not its stream's: ``admin = "HOST:PORT"``."""


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string for what we write
    raise ValueError(f"cannot write {value!r} into the shipper's TOML")


@dataclass(frozen=True, slots=True)
class ShipperPlan:
    """How this node ships the stream when it is the primary (from the agent's [ha] table)."""

    stream: str
    state_dir: Path
    secret_file: str
    peers: Mapping[str, str]
    """Node name -> that node's receiver address (HOST:PORT); this node is not among them."""
    sync: str = "ANY 1"
    extra: Mapping[str, object] = field(default_factory=dict)
    """More keys for the stream's table (pattern, seal, seal_idle, ...), written as given."""

    def config_text(self, source: Path, epoch: int, history: Path | None) -> str:
        lines = [f"state_dir = {_toml_value(str(self.state_dir))}", f"sync = {_toml_value(self.sync)}"]
        # The shipper's own settings among [ha.shipper]'s keys go before its stream table.
        lines += [f"{k} = {_toml_value(v)}" for k, v in self.extra.items() if k in SHIPPER_KEYS]
        lines += ["", "[[stream]]", f"name = {_toml_value(self.stream)}", f"source = {_toml_value(str(source))}"]
        lines.append(f"secret_file = {_toml_value(self.secret_file)}")
        # With the activation's history the claimed epoch is the history's; without one (the first
        # primary ships its application's own log) the epoch etcd allocated is claimed.
        lines.append(f"history = {_toml_value(str(history))}" if history else f"epoch = {epoch}")
        lines += [f"{k} = {_toml_value(v)}" for k, v in self.extra.items() if k not in SHIPPER_KEYS]
        for address in self.peers.values():
            lines += ["", "[[stream.target]]", f"address = {_toml_value(address)}"]
        return "\n".join(lines) + "\n"


class Shipping:
    """The node's shipper process for one stream."""

    def __init__(self, plan: ShipperPlan) -> None:
        self.plan = plan
        self.proc: asyncio.subprocess.Process | None = None
        self.env: dict[str, str] = {}
        """Set for the child beside the agent's environment (the HA view's path: logship/ha/view_file.py)."""

    @property
    def config_path(self) -> Path:
        return self.plan.state_dir / "ha-shipper.toml"

    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, source: Path, epoch: int, history: Path | None) -> None:
        await self.stop()  # a shipper of an earlier role or epoch must not race the new one
        self.plan.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(self.plan.config_text(source, epoch, history))
        os.replace(tmp, self.config_path)
        argv = [sys.executable, "-m", "shipper", "--config", str(self.config_path)]
        # Its own session: a signal meant for the agent (Ctrl-C in a terminal) does not stop it too.
        env = {**os.environ, **self.env} if self.env else None
        self.proc = await asyncio.create_subprocess_exec(*argv, start_new_session=True, env=env)
        log.warning("shipping %s from %s at epoch %d (pid %d)", self.plan.stream, source, epoch, self.proc.pid)

    async def stop(self) -> None:
        """Stop our child, or a shipper an earlier agent left on the state dir (by the pid it reports)."""
        if self.proc is not None:
            proc, self.proc = self.proc, None
            if proc.returncode is None:
                proc.terminate()
                try:
                    async with asyncio.timeout(STOP_TIMEOUT):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            log.info("shipper of %s stopped (exit %s)", self.plan.stream, proc.returncode)
            return
        pid = await shipper_pid(self.plan.state_dir)
        if pid is None or pid == os.getpid():
            return
        log.warning("stopping the shipper an earlier agent left running (pid %d)", pid)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(int(STOP_TIMEOUT / 0.1)):
            await asyncio.sleep(0.1)
            if await shipper_pid(self.plan.state_dir) is None:
                return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
