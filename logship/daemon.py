"""Daemon lifecycle both daemons share: stop signals, the control socket, the admin HTTP endpoint,
and their teardown in reverse order of start."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from logship.admin import control
from logship.config import ConfigError

log = logging.getLogger("logship")


def stop_event() -> asyncio.Event:
    """Return an event that SIGTERM and SIGINT set."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


class Surfaces:
    """The operator's ways into a running daemon: its control socket and its admin HTTP endpoint."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.channel: control.ControlServer | None = None
        self.http: Any = None

    async def open_control(self, path: Path, handler: control.Handler, *, required: bool) -> None:
        """Serve ``handler`` on ``path``.

        Raises ConfigError if it cannot be opened and ``required``; otherwise logs the error and goes
        on without it (replication matters more than the operator commands).
        """
        channel = control.ControlServer(path, handler)
        try:
            await channel.start()
        except OSError as e:
            if required:
                raise ConfigError(f"cannot open the control socket {path}: {e}") from None
            log.error(
                "cannot open the control socket %s: %s; status/suspend/resume/activate cannot reach this %s",
                path,
                e,
                self.role,
            )
            return
        self.channel = channel

    async def open_http(self, status: Callable[[], dict[str, Any]], address: tuple[str, int], wait: Any = None) -> None:
        """Serve /status and /metrics on ``address`` (and POST /wait with ``wait``).

        Raises ConfigError if the address cannot be bound.
        """
        # Imported only when asked for: aiohttp and prometheus_client take most of a second to load.
        from logship.admin.http import AdminServer

        http = AdminServer(status, self.role, wait)
        try:
            ahost, aport = await http.start(*address)
        except OSError as e:
            raise ConfigError(f"cannot serve admin on {address[0]}:{address[1]}: {e.strerror}") from None
        self.http = http
        log.info("admin endpoint on http://%s:%d/status and /metrics", ahost, aport)

    async def close(self) -> None:
        """Stop serving, HTTP first, then the control socket."""
        if self.http is not None:
            await self.http.stop()
            self.http = None
        if self.channel is not None:
            await self.channel.stop()
            self.channel = None
