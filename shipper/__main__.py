"""python -m shipper: tail a stream's log directory and ship it to one or more receivers."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import uvloop

from protocol.config_util import ConfigError
from shipper.config import ShipperConfig, config_from_args
from shipper.service import ShipperService

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
        default="next",
        help="next (default): a segment is complete when a later one appears; immediate: every file is complete "
        "on sight (an archive directory filled by rename)",
    )
    p.add_argument(
        "--seal-idle", type=float, metavar="SECONDS", help="also seal the newest segment after this idle time"
    )
    p.add_argument("--segment-size", metavar="BYTES", help="also seal a segment when it reaches this size")
    p.add_argument("--epoch", type=int, default=0, help="epoch to claim (default 0; raised by activation)")
    p.add_argument("--chunk-size", default="1MiB", metavar="SIZE", help="largest DATA chunk (default 1MiB)")
    p.add_argument(
        "--window",
        default="auto",
        metavar="SIZE|auto",
        help="unacknowledged bytes in flight: auto (default) adapts to the link, starting at 16MiB and growing "
        "toward 2 x bandwidth x round trip up to --window-max; a size fixes it",
    )
    p.add_argument("--window-max", default="64MiB", metavar="SIZE", help="largest adaptive window (default 64MiB)")
    p.add_argument(
        "--ack-timeout",
        type=float,
        default=30.0,
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
    p.add_argument("--poll-interval", type=float, default=0.02, metavar="SECONDS", help="source directory poll")
    p.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="use TLS and accept only a receiver whose certificate this CA signed (without it: the system CAs, "
        "if --tls-cert is given)",
    )
    p.add_argument("--tls-cert", metavar="FILE", help="use TLS with this client certificate (PEM; may hold the key)")
    p.add_argument("--tls-key", metavar="FILE", help="the client certificate's private key (PEM, mode 0600)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


async def run(config: ShipperConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    services = [ShipperService(stream, f"{config.node}/{stream.name}", config.sender) for stream in config.streams]
    for service in services:
        log.info(
            "shipping stream %s from %s to %s",
            service.stream.name,
            service.stream.source,
            ", ".join(s.name for s in service.senders),
        )
    await asyncio.gather(*(service.run(stop) for service in services))
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s shipper[%(process)d] %(levelname)s %(message)s", stream=sys.stderr
    )
    try:
        config = config_from_args(args)
    except ConfigError as e:
        print(f"shipper: error: {e}", file=sys.stderr)
        return 2
    try:
        return uvloop.run(run(config))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
