"""python -m receiver: accept shippers, keep verified, durable copies of their streams, replay them.

Subcommands for the operator: ``status``, ``suspend``, ``resume``, ``activate`` (see ``--help`` of each).
They talk to the running receiver through its control socket (DIR/control.sock), or work on the data
dir directly, under its lock, when no receiver runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvloop

from logship.admin import control
from logship.cli import LOG_LEVELS, daemon_logging, dispatch, guarded, operator_logging
from logship.config import ConfigError
from logship.daemon import Surfaces, stop_event
from logship.files import lock_exclusive
from receiver.activation import activate, render_report
from receiver.config import load_toml, replay_from_doc, settings_from_args
from receiver.memory import map_large_buffers
from receiver.replayer import REPLAY_MODES
from receiver.server import ReceiverServer, ServerConfig, StreamCopy, existing_streams
from receiver.status import copy_row, render_rows
from receiver.store import SegmentStore

SUBCOMMANDS = ("status", "suspend", "resume", "activate")
CONTROL_SOCKET = "control.sock"

log = logging.getLogger("receiver")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m receiver",
        description=(
            "Accept shippers over TCP, verify every chunk (xxh3_64) and every sealed segment (xxh3_128), "
            "fsync before acknowledging, and keep DIR/<stream>/log/ byte-identical to the source's sealed "
            "segments."
        ),
        epilog=(
            "Operator commands: python -m receiver status|suspend|resume|activate --data-dir DIR ... "
            "(see python -m receiver status --help)."
        ),
    )
    p.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (port 0 picks one)")
    p.add_argument("--data-dir", metavar="DIR", help="where the copies live (one subdirectory per stream)")
    p.add_argument(
        "--secret-file",
        metavar="FILE",
        help="shared secret every shipper must prove (HMAC-SHA256) for streams without their own; mode 0600",
    )
    p.add_argument("--config", metavar="FILE", help="TOML file with these settings and per-stream tables")
    p.add_argument("--max-payload", metavar="SIZE", help="largest DATA chunk accepted (default 4MiB)")
    p.add_argument("--idle-timeout", type=float, metavar="SECONDS", help="drop silent shippers (default 60)")
    p.add_argument(
        "--handshake-timeout", type=float, metavar="SECONDS", help="time to finish TLS and the handshake (default 10)"
    )
    p.add_argument(
        "--max-unauthenticated",
        type=int,
        metavar="N",
        help="connections still in their handshake, at most; more are closed at once (default 64)",
    )
    p.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate (PEM; may hold the key too)")
    p.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM, mode 0600)")
    p.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="require every shipper to present a client certificate signed by this CA (needs --tls-cert)",
    )
    add_replay_flags(p)
    p.add_argument(
        "--admin", metavar="HOST:PORT", help="serve /status (JSON) and /metrics (Prometheus) here; off by default"
    )
    p.add_argument("--log-level", default="INFO", choices=LOG_LEVELS)
    return p


def add_replay_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("replay (defaults for every stream; per-stream tables in --config override them)")
    g.add_argument(
        "--replay",
        choices=REPLAY_MODES,
        help="directory (default): install replayed segments into DIR/<stream>/replica/; command: run "
        "--replay-command per segment",
    )
    g.add_argument(
        "--replay-command", metavar="CMD", help="shell command run per segment in log order; {path} {name} {stream}"
    )
    g.add_argument(
        "--inspect-cmd", metavar="CMD", help="inspector run before replay with the segment's path; non-zero vetoes"
    )
    g.add_argument(
        "--replay-lag", metavar="DURATION", help="replay only segments installed this long ago: 0 (default), 90s, 24h"
    )
    g.add_argument("--replay-retries", type=int, metavar="N", help="retries of a failing segment (default 3)")
    g.add_argument("--replay-backoff", metavar="DURATION", help="pause before the first retry, doubled after (1s)")


def control_path(data_dir: Path) -> Path:
    return data_dir / CONTROL_SOCKET


def lock_data_dir(data_dir: Path) -> int:
    """Hold an exclusive lock on DIR/.lock for the life of the process.

    Raises ConfigError if another receiver holds it.
    """
    fd = lock_exclusive(data_dir / ".lock")
    if fd is None:
        raise ConfigError(f"another receiver is already using {data_dir} (lock {data_dir / '.lock'} is held)")
    return fd


async def serve(config: ServerConfig, host: str, port: int, admin: tuple[str, int] | None = None) -> int:
    server = ReceiverServer(config)
    stop = stop_event()
    try:
        bound_host, bound_port = await server.start(host, port)
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    surfaces = Surfaces("receiver")
    try:
        await surfaces.open_control(control_path(config.data_dir), server.control, required=False)
        if admin is not None:
            await surfaces.open_http(server.status, admin)
    except BaseException:
        await surfaces.close()
        await server.stop()
        raise
    log.info(
        "listening on %s:%d%s, data dir %s",
        bound_host,
        bound_port,
        " (TLS)" if config.tls is not None else "",
        config.data_dir,
    )
    await stop.wait()
    log.info("stopping: finishing writes in hand")
    await surfaces.close()
    await server.stop()
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    return dispatch(argv, SUBCOMMANDS, daemon_main, operator_main)


def daemon_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    map_large_buffers()
    daemon_logging("receiver", args.log_level)

    def body() -> int:
        settings = settings_from_args(args)
        data_dir = settings.data_dir
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create data dir {data_dir}: {e.strerror}") from None
        lock_fd = lock_data_dir(data_dir)
        config = ServerConfig(
            data_dir=data_dir,
            secret_for=settings.secret_for,
            max_payload=settings.max_payload,
            idle_timeout=settings.idle_timeout,
            replay_for=settings.replay_for,
            handshake_timeout=settings.handshake_timeout,
            max_unauthenticated=settings.max_unauthenticated,
            tls=settings.tls,
        )
        host, port = settings.listen
        try:
            return uvloop.run(serve(config, host, port, settings.admin))
        finally:
            os.close(lock_fd)

    return guarded("receiver", body)


# -- operator subcommands ---------------------------------------------------------------------------


def operator_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m receiver", description="Operate the standby copies of a receiver.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--data-dir", metavar="DIR", help="the receiver's data dir (or data_dir in --config)")
        q.add_argument("--config", metavar="FILE", help="the receiver's TOML config file")

    q = sub.add_parser("status", help="show each stream copy: state, replay queue, last copied/replayed, lag")
    common(q)
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    for name, text in (("suspend", "stop replaying a stream (copying goes on)"), ("resume", "replay it again")):
        q = sub.add_parser(name, help=text)
        common(q)
        q.add_argument("--stream", required=True, metavar="S")
        q.add_argument("--comment", metavar="TEXT", help="why; shown by status")
    q = sub.add_parser(
        "activate",
        help="make a stream's copy the new primary: fence older shippers, replay all verified, report",
    )
    common(q)
    q.add_argument("--stream", required=True, metavar="S")
    q.add_argument(
        "--on-activate",
        metavar="CMD",
        help="shell command run after replay ({stream} {epoch} {replica}; env LOGSHIP_STREAM, LOGSHIP_EPOCH, "
        "LOGSHIP_REPLICA, LOGSHIP_TAIL)",
    )
    q.add_argument("--json", action="store_true", help="print the report as JSON")
    add_replay_flags(q)
    return p


def operator_main(argv: list[str]) -> int:
    args = operator_parser().parse_args(argv)
    operator_logging("receiver")

    def body() -> int:
        doc = load_toml(args.config) if args.config else {}
        data_dir_text = args.data_dir or doc.get("data_dir")
        if not data_dir_text:
            raise ConfigError("no data directory: give --data-dir DIR (or --config FILE with data_dir)")
        data_dir = Path(data_dir_text)
        if not data_dir.is_dir():
            raise ConfigError(f"data dir {data_dir} does not exist")
        if args.command == "status":
            return cmd_status(data_dir, args.json)
        if args.stream not in existing_streams(data_dir):
            raise ConfigError(f"no copy of stream {args.stream!r} in {data_dir}")
        if args.command in ("suspend", "resume"):
            return cmd_suspend_resume(data_dir, args.command, args.stream, args.comment)
        return cmd_activate(data_dir, args, doc)

    return guarded("receiver", body)


def _call(data_dir: Path, request: dict[str, Any], timeout: float = 30.0) -> dict[str, Any] | None:
    """Ask the receiver running on ``data_dir``; None when none answers."""
    try:
        return control.call(control_path(data_dir), request, timeout)
    except control.ControlUnavailable:
        return None


@contextlib.contextmanager
def _offline(data_dir: Path) -> Iterator[None]:
    """Hold the data-dir lock while working on the copies with no receiver running."""
    try:
        fd = lock_data_dir(data_dir)
    except ConfigError:
        raise ConfigError(
            f"a receiver holds the lock on {data_dir} but does not answer on {control_path(data_dir)}; try again"
        ) from None
    try:
        yield
    finally:
        os.close(fd)


def disk_status(data_dir: Path) -> dict[str, Any]:
    """Build the status snapshot from the data dir alone (no receiver running)."""
    now = time.time()
    rows = []
    for name in existing_streams(data_dir):
        store = SegmentStore(data_dir / name)
        rows.append(copy_row(name, store.load_state(), store.read_manifest(), now, None))
    return {"role": "receiver", "node": None, "pid": None, "copies": rows}


def cmd_status(data_dir: Path, as_json: bool) -> int:
    reply = _call(data_dir, {"op": "status"})
    if reply is not None:
        reply.pop("ok", None)
        snapshot, source = reply, f"running receiver, pid {reply.get('pid')}"
    else:
        snapshot, source = disk_status(data_dir), "data dir (no receiver running)"
    snapshot["source"] = source
    if as_json:
        print(json.dumps(snapshot, indent=1, sort_keys=True))
    else:
        print(f"receiver status of {data_dir} from the {source}")
        print(render_rows(snapshot["copies"], time.time()))
    return 0


def cmd_suspend_resume(data_dir: Path, command: str, stream: str, comment: str | None) -> int:
    reply = _call(data_dir, {"op": command, "stream": stream, "comment": comment})
    if reply is None:
        with _offline(data_dir):

            async def change() -> None:
                copy = StreamCopy(stream, SegmentStore(data_dir / stream))
                await (copy.suspend(comment) if command == "suspend" else copy.resume(comment))

            asyncio.run(change())
        where = "in the data dir (no receiver running)"
    else:
        where = "by the running receiver"
    print(f"stream {stream}: replay {'suspended' if command == 'suspend' else 'resumed'} {where}")
    return 0


def cmd_activate(data_dir: Path, args: argparse.Namespace, doc: dict[str, Any]) -> int:
    request = {"op": "activate", "stream": args.stream, "on_activate": args.on_activate}
    reply = _call(data_dir, request, timeout=3600.0)
    if reply is not None:
        report = reply["report"]
    else:
        default, own = replay_from_doc(doc, args)
        settings = own.get(args.stream, default)
        with _offline(data_dir):

            async def run() -> dict[str, Any]:
                copy = StreamCopy(args.stream, SegmentStore(data_dir / args.stream), settings)
                try:
                    return await activate(copy, args.on_activate)
                finally:
                    copy.store.close_manifest()

            report = asyncio.run(run())
    if args.json:
        print(json.dumps(report, indent=1, sort_keys=True))
    else:
        print(render_report(report))
    return 0 if report.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
