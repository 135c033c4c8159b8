"""python -m receiver: accept shippers, keep verified, durable copies of their streams, replay them.

Subcommands for the operator: ``status``, ``suspend``, ``resume``, ``activate`` (see ``--help`` of each;
receiver/operator.py). They talk to the running receiver through its control socket (DIR/control.sock),
or work on the data dir directly, under its lock, when no receiver runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import ssl
import sys
import time

import uvloop

from logship.admin.progress import ProgressLog
from logship.cli import (
    EXIT_FAILED,
    LOG_LEVELS,
    Parser,
    add_umask_flag,
    add_version,
    apply_umask,
    daemon_logging,
    dispatch,
    guarded,
)
from logship.config import DURATION_FORM, ConfigError
from logship.daemon import Surfaces, stop_event
from logship.dirwatch import watch_dir
from logship.tasks import first_to_end
from logship.tls import server_tls_context
from logship.version import version
from receiver.config import ReceiverSettings, ServerConfig, add_replay_flags, settings_from_args
from receiver.control import Control
from receiver.datadir import control_path, lock_data_dir
from receiver.memory import map_large_buffers
from receiver.operator import SUBCOMMANDS, operator_main
from receiver.retention_config import add_retention_flags
from receiver.server import ReceiverServer

log = logging.getLogger("receiver")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m receiver",
        description=(
            "Accept shippers over TCP, verify every chunk (xxh3_64) and every sealed segment (xxh3_128), "
            "fsync before acknowledging, and keep DIR/<stream>/log/ byte-identical to the source's sealed "
            f"segments. Durations: {DURATION_FORM}."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version(p, version())
    p.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (port 0 picks one)")
    p.add_argument("--data-dir", metavar="DIR", help="where the copies live (one subdirectory per stream)")
    p.add_argument(
        "--secret-file",
        metavar="FILE",
        help="shared secret every shipper must prove (HMAC-SHA256) for streams without their own; mode 0600",
    )
    p.add_argument("--config", metavar="FILE", help="TOML file with these settings and per-stream tables")
    p.add_argument("--max-payload", metavar="SIZE", help="largest DATA chunk accepted (default 4MiB)")
    p.add_argument("--idle-timeout", metavar="DURATION", help="drop silent shippers (default 60s)")
    p.add_argument("--handshake-timeout", metavar="DURATION", help="time to finish TLS and the handshake (default 10s)")
    p.add_argument(
        "--max-unauthenticated",
        metavar="N",
        help="connections still in their handshake, at most; more are told busy and closed at once (default 64)",
    )
    p.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate (PEM; may hold the key too)")
    p.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM, mode 0600)")
    p.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="require every shipper to present a client certificate signed by this CA (needs --tls-cert)",
    )
    p.add_argument(
        "--min-free",
        metavar="SIZE|PERCENT",
        help="free space the data dir keeps (e.g. 64MiB, 1%%): below it shippers are told to back off until "
        "space returns (default 64MiB, at most 1%% of the file system)",
    )
    add_replay_flags(p)
    add_retention_flags(p)
    p.add_argument(
        "--no-rewind",
        action="store_true",
        default=None,  # not given: the config file's no_rewind (default false)
        help="refuse a shipper whose history forks before the end of a copy (ERROR diverged) instead of moving "
        "the copy's tail past the fork into quarantine/ and resuming there",
    )
    p.add_argument(
        "--seed-install-command",
        metavar="CMD",
        help="install a reseeded copy's verified base image with this shell command (env LOGSHIP_STREAM, "
        "LOGSHIP_SEED_IMAGE: the tar, LOGSHIP_BASE: DIR/<stream>/base) instead of unpacking it into base/",
    )
    p.add_argument(
        "--admin", metavar="HOST:PORT", help="serve /status (JSON) and /metrics (Prometheus) here; off by default"
    )
    add_umask_flag(p)
    p.add_argument("--log-level", default="INFO", choices=LOG_LEVELS, help="least severe log lines shown (INFO)")
    return p


EPILOG = """\
operator commands (python -m receiver COMMAND --help for each):
  status --data-dir DIR [--stream S] [--watch [SECONDS]] [--json]   state, queues and lag per stream
  suspend|resume --data-dir DIR --stream S                          stop / restart replaying a copy
  activate --data-dir DIR --stream S [--epoch N] [--yes]            make a copy the new primary
  fence --data-dir DIR --stream S --epoch N [--fork SEG@OFF]        refuse shippers older than epoch N
  reseed --data-dir DIR --stream S [--delete-existing] [--manual-resume]  start over from a base image

example:
  python -m receiver --listen 0.0.0.0:7000 --data-dir /var/lib/logship \\
      --secret-file /etc/logship/default.secret --replay-lag 1h30m --admin 127.0.0.1:9100
"""


def tls_context(settings: ReceiverSettings) -> ssl.SSLContext | None:
    """Load the TLS files of ``settings``; None for plain TCP.

    Raises ConfigError if a certificate, key or CA cannot be loaded.
    """
    files = settings.tls
    return server_tls_context(files.cert, files.key, files.ca) if files is not None else None


async def serve(config: ServerConfig, host: str, port: int, admin: tuple[str, int] | None = None) -> int:
    server = ReceiverServer(config)
    stop = stop_event()
    try:
        bound_host, bound_port = await server.start(host, port)
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    surfaces = Surfaces("receiver")
    try:
        await surfaces.open_control(control_path(config.data_dir), Control(server).handle, required=False)
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
    watch = asyncio.create_task(watch_dir(config.data_dir), name="data-dir-watch")
    # A progress line every few seconds while a shipper's heartbeats show this copy whole segments behind.
    progress = asyncio.create_task(ProgressLog(lambda: server.status()["copies"], log).run(time.time))
    await first_to_end(watch, progress, asyncio.create_task(stop.wait(), name="stop-signal"))
    gone = watch.result() if watch.done() and not watch.cancelled() else None
    if gone is not None:
        # Nothing can be stored any more: exit, so that the service manager restarts the receiver on a
        # fresh data dir (it rebuilds from the shippers), instead of a zombie that accepts and fails.
        log.error("data dir %s %s: exiting so that the receiver is restarted", config.data_dir, gone)
        for step in (surfaces.close, server.stop):
            # Each step may trip over the missing files: the line above is the one that matters.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(step(), 10)
        return EXIT_FAILED
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
        apply_umask(args.umask)
        settings = settings_from_args(args)
        tls = tls_context(settings)
        data_dir = settings.data_dir
        created = not data_dir.exists()  # a misspelt --data-dir means an empty copy and a full re-send: say so
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            mode = data_dir.stat().st_mode
        except OSError as e:
            raise ConfigError(f"cannot create data dir {data_dir}: {e.strerror}") from None
        if mode & 0o002:
            # Anyone could plant or swap files that replay would take for verified copies.
            raise ConfigError(
                f"data dir {data_dir} is writable by others (mode {mode & 0o777:04o}); run: chmod o-w {data_dir}"
            )
        lock_fd = lock_data_dir(data_dir)
        # The first log line, once the start can no longer fail on a setting: a journal then says
        # which version ran, and a refused start stays one error line.
        log.info("logship %s receiver starting", version())
        if created:
            log.info("created new data dir %s: empty, so every shipper sends its stream from the start", data_dir)
        config = ServerConfig(
            data_dir=data_dir,
            secret_for=settings.secret_for,
            max_payload=settings.max_payload,
            idle_timeout=settings.idle_timeout,
            replay_for=settings.replay_for,
            handshake_timeout=settings.handshake_timeout,
            max_unauthenticated=settings.max_unauthenticated,
            tls=tls,
            no_rewind=settings.no_rewind,
            min_free=settings.min_free,
            seed_install=args.seed_install_command,
            retention_for=settings.retention_for,
        )
        host, port = settings.listen
        try:
            return uvloop.run(serve(config, host, port, settings.admin))
        finally:
            os.close(lock_fd)

    return guarded("receiver", body)


if __name__ == "__main__":
    sys.exit(main())
