"""python -m receiver: accept shippers and keep verified, durable copies of their streams."""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import signal
import sys
from pathlib import Path

import uvloop

from protocol.config_util import ConfigError
from receiver.config import settings_from_args
from receiver.server import ReceiverServer, ServerConfig

log = logging.getLogger("receiver")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m receiver",
        description=(
            "Accept shippers over TCP, verify every chunk (xxh3_64) and every sealed segment (xxh3_128), "
            "fsync before acknowledging, and keep DIR/<stream>/log/ byte-identical to the source's sealed "
            "segments."
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
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def lock_data_dir(data_dir: Path) -> int:
    """Hold an exclusive lock on DIR/.lock for the life of the process.

    Raises ConfigError if another receiver holds it.
    """
    fd = os.open(data_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(f"another receiver is already using {data_dir} (lock {data_dir / '.lock'} is held)") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


async def serve(config: ServerConfig, host: str, port: int) -> int:
    server = ReceiverServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        bound_host, bound_port = await server.start(host, port)
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    log.info(
        "listening on %s:%d%s, data dir %s",
        bound_host,
        bound_port,
        " (TLS)" if config.tls is not None else "",
        config.data_dir,
    )
    await stop.wait()
    log.info("stopping: finishing writes in hand")
    await server.stop()
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s receiver[%(process)d] %(levelname)s %(message)s", stream=sys.stderr
    )
    try:
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
            handshake_timeout=settings.handshake_timeout,
            max_unauthenticated=settings.max_unauthenticated,
            tls=settings.tls,
        )
        host, port = settings.listen
        try:
            return uvloop.run(serve(config, host, port))
        finally:
            os.close(lock_fd)
    except ConfigError as e:
        print(f"receiver: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
