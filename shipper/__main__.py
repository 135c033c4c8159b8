"""python -m shipper: tail a stream's log directory and ship it to one or more receivers."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import socket
import sys
from pathlib import Path

import uvloop

from protocol.config_util import ConfigError, parse_address, parse_size, read_secret
from protocol.names import STREAM_NAME
from shipper.sender import SenderConfig
from shipper.service import ShipperService, StreamConfig
from shipper.tailer import DEFAULT_PATTERN, SealPolicy

log = logging.getLogger("shipper")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m shipper",
        description=(
            "Tail a stream's log directory (new segments and bytes appended to the active one) and ship it to "
            "receivers, each with its own cursor; resume from each receiver's durable position after any cut."
        ),
    )
    p.add_argument("--stream", required=True, metavar="NAME", help="stream name, [A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
    p.add_argument("--source", required=True, metavar="DIR", help="directory holding the stream's segments")
    p.add_argument(
        "--target", required=True, action="append", metavar="HOST:PORT", help="a receiver; repeat for several"
    )
    p.add_argument("--secret-file", required=True, metavar="FILE", help="shared secret (mode 0600)")
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
    p.add_argument("--window", default="16MiB", metavar="SIZE", help="unacknowledged bytes in flight (default 16MiB)")
    p.add_argument("--poll-interval", type=float, default=0.02, metavar="SECONDS", help="source directory poll")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def config_from_args(args: argparse.Namespace) -> tuple[StreamConfig, SenderConfig]:
    """Turn parsed arguments into configuration.

    Raises ConfigError for anything wrong, with a one-line message.
    """
    if not STREAM_NAME.fullmatch(args.stream):
        raise ConfigError(f"bad stream name {args.stream!r}: expected [A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}")
    source = Path(args.source)
    if not source.is_dir():
        raise ConfigError(f"source directory {source} does not exist or is not a directory")
    targets = tuple(parse_address(t) for t in args.target)
    if len(set(targets)) != len(targets):
        raise ConfigError("the same target is given twice")
    try:
        pattern = re.compile(args.pattern or DEFAULT_PATTERN)
    except re.error as e:
        raise ConfigError(f"bad --pattern {args.pattern!r}: {e}") from None
    if args.seal_idle is not None and args.seal_idle < 0:
        raise ConfigError("--seal-idle must not be negative")
    segment_size = parse_size(args.segment_size) if args.segment_size else None
    if segment_size == 0:
        raise ConfigError("--segment-size must be positive")
    chunk = parse_size(args.chunk_size)
    window = parse_size(args.window)
    if not 0 < chunk <= 4 << 20:
        raise ConfigError("--chunk-size must be between 1 byte and 4MiB")
    if window < chunk:
        raise ConfigError("--window must be at least --chunk-size")
    stream = StreamConfig(
        name=args.stream,
        source=source,
        targets=targets,
        secret=read_secret(args.secret_file),
        pattern=pattern,
        policy=SealPolicy(args.seal, args.seal_idle, segment_size),
        epoch=args.epoch,
        poll_interval=args.poll_interval,
    )
    return stream, SenderConfig(chunk_size=chunk, window=window)


async def run(service: ShipperService) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "shipping stream %s from %s to %s",
        service.stream.name,
        service.stream.source,
        ", ".join(s.name for s in service.senders),
    )
    await service.run(stop)
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s shipper[%(process)d] %(levelname)s %(message)s", stream=sys.stderr
    )
    try:
        stream, sender_config = config_from_args(args)
    except ConfigError as e:
        print(f"shipper: error: {e}", file=sys.stderr)
        return 2
    service = ShipperService(stream, f"{socket.gethostname()}/{stream.name}", sender_config)
    try:
        return uvloop.run(run(service))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
