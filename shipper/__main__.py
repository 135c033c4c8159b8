"""python -m shipper: tail a stream's log directory and ship it to one or more receivers.

Subcommands for the operator: ``status``, ``suspend``, ``resume`` (see ``--help`` of each); they talk
to the running shipper through the control socket in its state directory.
"""

from __future__ import annotations

import argparse
import sys

import uvloop

from logship.cli import LOG_LEVELS, daemon_logging, dispatch, guarded
from shipper.commands import SUBCOMMANDS, operator_main
from shipper.config import config_from_args
from shipper.daemon import open_state, run
from shipper.service import tls_contexts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m shipper",
        description=(
            "Tail a stream's log directory (new segments and bytes appended to the active one) and ship it to "
            "receivers, each with its own cursor; resume from each receiver's durable position after any cut. "
            "Give one stream with the flags below, or many with --config FILE."
        ),
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file with [[stream]] tables (see docs); replaces the one-stream flags (--stream, --source, "
        "--target, ...); the other flags win over its top-level settings",
    )
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
        choices=["next", "closed", "immediate"],
        help="next (default): a segment is complete when a later one appears; closed: ... and its writer closed "
        "it (MariaDB binlogs); immediate: every file is complete on sight (an archive directory filled by rename)",
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


if __name__ == "__main__":
    sys.exit(main())
