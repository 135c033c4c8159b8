"""python -m shipper: tail a stream's log directory and ship it to one or more receivers.

Subcommands for the operator: ``status``, ``suspend``, ``resume`` (see ``--help`` of each); they talk
to the running shipper through the control socket in its state directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import ssl
import sys
import time
from collections.abc import Mapping
from typing import Any

import uvloop

from logship.admin import control
from logship.cli import LOG_LEVELS, daemon_logging, dispatch, guarded, operator_logging
from logship.config import ConfigError, parse_address
from logship.daemon import Surfaces, stop_event
from shipper.config import ShipperConfig, config_from_args, state_dir_from
from shipper.service import ShipperService, tls_contexts
from shipper.settings import TlsFiles
from shipper.state import StateBusy, StateDir, Suspension, check_socket_path
from shipper.status import table

SUBCOMMANDS = ("status", "suspend", "resume")

log = logging.getLogger("shipper")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m shipper",
        description=(
            "Tail a stream's log directory (new segments and bytes appended to the active one) and ship it to "
            "receivers, each with its own cursor; resume from each receiver's durable position after any cut. "
            "Give one stream with the flags below, or many with --config FILE."
        ),
    )
    p.add_argument("--config", metavar="FILE", help="TOML file with [[stream]] tables (see docs); replaces the flags")
    p.add_argument("--stream", metavar="NAME", help="stream name, [A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
    p.add_argument("--source", metavar="DIR", help="directory holding the stream's segments")
    p.add_argument("--target", action="append", metavar="HOST:PORT", help="a receiver; repeat for several")
    p.add_argument("--secret-file", metavar="FILE", help="shared secret (mode 0600)")
    p.add_argument(
        "--pattern",
        metavar="REGEX",
        help="file names that are segments (full match); default: every name not starting with '.' and not "
        "ending in .tmp or .partial",
    )
    p.add_argument(
        "--seal",
        choices=["next", "immediate"],
        help="next (default): a segment is complete when a later one appears; immediate: every file is complete "
        "on sight (an archive directory filled by rename)",
    )
    p.add_argument(
        "--seal-idle", type=float, metavar="SECONDS", help="also seal the newest segment after this idle time"
    )
    p.add_argument("--segment-size", metavar="BYTES", help="also seal a segment when it reaches this size")
    p.add_argument("--epoch", type=int, help="epoch to claim (default 0; raised by activation)")
    p.add_argument("--chunk-size", metavar="SIZE", help="largest DATA chunk (default 1MiB)")
    p.add_argument(
        "--window",
        metavar="SIZE|auto",
        help="unacknowledged bytes in flight: auto (default) adapts to the link, starting at 16MiB and growing "
        "toward 2 x bandwidth x round trip up to --window-max; a size fixes it",
    )
    p.add_argument("--window-max", metavar="SIZE", help="largest adaptive window (default 64MiB)")
    p.add_argument(
        "--ack-timeout",
        type=float,
        metavar="SECONDS",
        help="a target silent this long counts as cut: drop the connection and reconnect (default 30)",
    )
    p.add_argument(
        "--compress",
        metavar="zstd[:LEVEL]",
        help="compress DATA payloads (zstd, level 1-19, default 3) to every target that supports it; "
        "digests stay over the uncompressed bytes",
    )
    p.add_argument(
        "--rate-limit",
        metavar="RATE",
        help="most bytes per second on the wire to each target: e.g. 50mbit, 1gbit, 800kbit (bits) or 6MB, 6MiB "
        "(bytes); default: no limit",
    )
    p.add_argument("--poll-interval", type=float, metavar="SECONDS", help="source directory poll")
    p.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="use TLS and accept only a receiver whose certificate this CA signed (without it: the system CAs, "
        "if --tls-cert is given)",
    )
    p.add_argument("--tls-cert", metavar="FILE", help="use TLS with this client certificate (PEM; may hold the key)")
    p.add_argument("--tls-key", metavar="FILE", help="the client certificate's private key (PEM, mode 0600)")
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where suspended targets are kept and the control socket lives (default: $LOGSHIP_SHIPPER_STATE_DIR, "
        "else /var/lib/logship/shipper for root, else ~/.local/state/logship/shipper)",
    )
    p.add_argument(
        "--admin", metavar="HOST:PORT", help="serve /status (JSON) and /metrics (Prometheus) here; off by default"
    )
    p.add_argument(
        "--retain",
        action="store_true",
        default=None,
        help="remove source segments once every target holds them durably (and replayed); off by default",
    )
    p.add_argument("--archive-dir", metavar="DIR", help="with --retain: move segments here instead of deleting them")
    p.add_argument(
        "--truncation-lag",
        metavar="DURATION",
        help="with --retain: keep a segment this long (e.g. 90s, 1h) after the last target got it (default 0)",
    )
    p.add_argument(
        "--retain-until",
        choices=["replayed", "durable"],
        help="with --retain: wait until each target replayed a segment (default), or only until it holds it durably",
    )
    p.add_argument("--log-level", default="INFO", choices=LOG_LEVELS)
    return p


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
        for stream, target in self.suspensions:
            service = self.services.get(stream)
            if service is None or target not in service.by_name:
                log.warning("state dir names a suspended target %s of stream %s that is not configured", target, stream)

    def status(self) -> dict[str, Any]:
        now = time.time()
        return {
            "role": "shipper",
            "node": self.config.node,
            "pid": os.getpid(),
            "state_dir": str(self.state.path) if self.state is not None else None,
            "copies": [row for service in self.services.values() for row in service.rows(now)],
        }

    async def control(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "status":
            return {"ok": True, **self.status()}
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
            await surfaces.open_http(shipper.status, config.admin)
        for service in shipper.services.values():
            log.info(
                "shipping stream %s from %s to %s%s",
                service.stream.name,
                service.stream.source,
                ", ".join(s.name for s in service.senders),
                f"; retention on (truncation lag {service.stream.truncation_lag:g}s)" if service.stream.retain else "",
            )
        await asyncio.gather(*(service.run(stop) for service in shipper.services.values()))
    finally:
        await surfaces.close()
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    return dispatch(argv, SUBCOMMANDS, daemon_main, operator_main)


def daemon_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    daemon_logging("shipper", args.log_level)

    def body() -> int:
        config = config_from_args(args)
        # Every file is loaded before anything starts: a bad certificate is a startup error.
        tls = tls_contexts(config.streams)
        state = open_state(config)
        try:
            return uvloop.run(run(config, state, tls))
        finally:
            if state is not None:
                state.unlock()

    return guarded("shipper", body)


# -- operator subcommands ---------------------------------------------------------------------------


def operator_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m shipper", description="Operate a running shipper.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--state-dir", metavar="DIR", help="the shipper's state dir (default as for the daemon)")
        q.add_argument("--config", metavar="FILE", help="the shipper's TOML config file (for its state_dir)")

    q = sub.add_parser("status", help="per stream and target: state, copy/replay queue, last copied, lag, retention")
    common(q)
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    for name, text in (
        ("suspend", "stop shipping a stream to one target (kept across restarts); the others go on"),
        ("resume", "ship to it again, from where it stopped"),
    ):
        q = sub.add_parser(name, help=text)
        common(q)
        q.add_argument("--stream", required=True, metavar="S")
        q.add_argument("--target", required=True, metavar="HOST:PORT")
        q.add_argument("--comment", metavar="TEXT", help="why; shown by status")
    return p


def operator_main(argv: list[str]) -> int:
    args = operator_parser().parse_args(argv)
    operator_logging("shipper")

    def body() -> int:
        state = StateDir(state_dir_from(args.state_dir, args.config))
        if args.command == "status":
            return cmd_status(state, args.json)
        host, port = parse_address(args.target)
        return cmd_suspend_resume(state, args.command, args.stream, f"{host}:{port}", args.comment)

    return guarded("shipper", body)


def cmd_status(state: StateDir, as_json: bool) -> int:
    try:
        snapshot = control.call(state.control_socket, {"op": "status"})
    except control.ControlUnavailable:
        suspended = state.load_suspensions() if state.path.is_dir() else {}
        if as_json:
            rows = [
                {"stream": st, "target": t, "state": "Suspended", "suspended": True, "comment": s.comment}
                for (st, t), s in sorted(suspended.items())
            ]
            print(json.dumps({"role": "shipper", "running": False, "state_dir": str(state.path), "copies": rows}))
        else:
            print(f"no shipper answers on {state.control_socket}")
            for (st, t), s in sorted(suspended.items()):
                print(f"  suspended: stream {st} target {t}: {s.comment or '(no comment)'}")
        return 1
    snapshot.pop("ok", None)
    if as_json:
        print(json.dumps({**snapshot, "running": True}, indent=1, sort_keys=True))
    else:
        print(table(snapshot))
    return 0


def cmd_suspend_resume(state: StateDir, command: str, stream: str, target: str, comment: str | None) -> int:
    try:
        control.call(state.control_socket, {"op": command, "stream": stream, "target": target, "comment": comment})
        where = "by the running shipper"
    except control.ControlUnavailable:
        # No shipper runs: record it in the state dir, under its lock, for the next start.
        try:
            state.create()
            state.lock()
        except StateBusy:
            raise ConfigError(
                f"a shipper holds {state.path} but does not answer on {state.control_socket}; try again"
            ) from None
        except OSError as e:
            raise ConfigError(f"state dir {state.path}: {e}") from None
        try:
            state.set_suspended(stream, target, command == "suspend", comment)
        finally:
            state.unlock()
        where = f"in {state.path} (no shipper running; it takes effect at the next start)"
    print(f"stream {stream} target {target}: {'suspended' if command == 'suspend' else 'resumed'} {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
