"""The running shipper: one service per stream, the suspensions it keeps in its state directory, and
the control handler behind ``status``, ``suspend``, ``resume`` and ``wait``."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Mapping
from typing import Any

from logship.admin.progress import ProgressLog
from logship.config import ConfigError
from logship.daemon import Surfaces, stop_event
from logship.ha.view_file import shipper_views
from logship.tasks import cancel_and_wait
from shipper.config import ShipperConfig
from shipper.service import ShipperService, tls_contexts
from shipper.settings import TlsFiles
from shipper.state import StateBusy, StateDir, Suspension, check_socket_path
from shipper.status_state import StatusKeeper
from shipper.wait import Waiters, WaitUsageError, handle

log = logging.getLogger("shipper")


class Shipper:
    """The running shipper: its services, the suspensions it persists, and its control handler."""

    def __init__(
        self, config: ShipperConfig, state: StateDir | None, tls: Mapping[TlsFiles, ssl.SSLContext] | None = None
    ) -> None:
        """Wire every stream of ``config``; ``tls``: its TLS contexts (built here if None)."""
        self.config = config
        self.state = state
        self.suspensions = state.load_suspensions() if state is not None else {}
        contexts = tls_contexts(config.streams) if tls is None else tls
        self.services = {
            stream.name: ShipperService(
                stream,
                f"{config.node}/{stream.name}",
                config.sender,
                {t: s for (st, t), s in self.suspensions.items() if st == stream.name},
                contexts,
            )
            for stream in config.streams
        }
        stats = [((n, sender.name), sender.stats) for n, sv in self.services.items() for sender in sv.senders]
        self.keeper = StatusKeeper(state.path, stats) if state is not None else None
        self.waiters = {stream.name: Waiters(self.services[stream.name], stream.sync) for stream in config.streams}
        for stream, target in self.suspensions:
            service = self.services.get(stream)
            if service is None or target not in service.by_name:
                log.warning("state dir names a suspended target %s of stream %s that is not configured", target, stream)

    def status(self) -> dict[str, Any]:
        now = time.time()
        ha = shipper_views(os.environ, now)  # the HA agent that started this shipper, while it reports
        return {
            "role": "shipper",
            "node": self.config.node,
            "pid": os.getpid(),
            "state_dir": str(self.state.path) if self.state is not None else None,
            "copies": [row for service in self.services.values() for row in service.rows(now)],
            **({"ha": ha} if ha else {}),
        }

    async def wait_durable(
        self,
        stream: str,
        segment: str,
        offset: int | None = None,
        *,
        level: str = "durable",
        require: str | None = None,
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        """Wait until bytes of ``segment`` are durable (or replayed) where the sync policy says.

        See ``shipper.wait.Waiters.wait_durable``; raises WaitUsageError (also for an unknown stream).
        """
        waiters = self.waiters.get(stream)
        if waiters is None:
            raise WaitUsageError(f"no stream {stream!r} here")
        return await waiters.wait_durable(segment, offset, level=level, require=require, timeout=timeout)

    async def wait(self, request: dict[str, Any]) -> dict[str, Any]:
        """Serve a wait request (control socket, POST /wait)."""
        return await handle(self.waiters, request)

    async def control(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "status":
            return {"ok": True, **self.status()}
        if op == "wait":
            return await self.wait(request)
        if op not in ("suspend", "resume"):
            return {"ok": False, "error": f"unknown op {op!r}"}
        stream, target = str(request.get("stream")), str(request.get("target"))
        service = self.services.get(stream)
        if service is None:
            return {"ok": False, "error": f"no stream {stream!r} here"}
        if target not in service.by_name:
            return {"ok": False, "error": f"stream {stream} has no target {target}"}
        comment = request.get("comment")
        key = (stream, target)
        if op == "suspend":
            suspension = Suspension(None if comment is None else str(comment), time.time())
            self.suspensions[key] = suspension
            await self._save()
            service.suspend(target, suspension)
        else:
            if self.suspensions.pop(key, None) is not None:
                await self._save()
            service.resume(target)
        return {"ok": True}

    async def _save(self) -> None:
        if self.state is None:
            raise RuntimeError("this shipper runs without a state directory; it cannot keep a suspension")
        await asyncio.to_thread(self.state.save_suspensions, dict(self.suspensions))


def open_state(config: ShipperConfig) -> StateDir | None:
    """Create and lock the state directory.

    A busy or unusable default state directory only costs the control channel and the persisted
    suspensions (with a warning); one the operator named is an error (ConfigError).
    """
    state = StateDir(config.state_dir)
    try:
        state.create()
        check_socket_path(state.control_socket)
        state.lock()
        state.load_suspensions()
    except (OSError, ValueError, StateBusy) as e:
        if config.state_dir_given:
            raise ConfigError(f"state dir {config.state_dir}: {e}") from None
        log.warning(
            "cannot use the default state dir %s (%s); running without control channel and kept suspensions: "
            "give --state-dir",
            config.state_dir,
            e,
        )
        state.unlock()
        return None
    return state


async def run(
    config: ShipperConfig, state: StateDir | None = None, tls: Mapping[TlsFiles, ssl.SSLContext] | None = None
) -> int:
    stop = stop_event()
    shipper = Shipper(config, state, tls)
    surfaces = Surfaces("shipper")
    try:
        if state is not None:
            await surfaces.open_control(state.control_socket, shipper.control, required=True)
        if config.admin is not None:
            await surfaces.open_http(shipper.status, config.admin, wait=shipper.wait)
        if state is not None:
            log.info("state dir %s (control socket, kept suspensions and status)", state.path)
        for service in shipper.services.values():
            log.info(
                "shipping stream %s from %s to %s%s",
                service.stream.name,
                service.stream.source,
                ", ".join(s.name for s in service.senders),
                f"; retention on (truncation lag {service.stream.truncation_lag:g}s)" if service.stream.retain else "",
            )
        # Beside the services: the status kept for the next run, and a progress line during a catch-up.
        progress = ProgressLog(
            lambda: shipper.status()["copies"], log, behind=lambda: any(s.behind() for s in shipper.services.values())
        )
        helpers = [asyncio.create_task(progress.run(time.time))]
        if shipper.keeper is not None:
            helpers.append(asyncio.create_task(shipper.keeper.run()))
        try:
            await asyncio.gather(*(service.run(stop) for service in shipper.services.values()))
        finally:
            await cancel_and_wait(*helpers)
    finally:
        await surfaces.close()
    log.info("stopped")
    return 0
