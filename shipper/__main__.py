"""python -m shipper: tail a stream's log directory and ship it to one or more receivers.

Subcommands for the operator: ``status``, ``suspend``, ``resume``, ``wait`` (see ``--help`` of each); they talk
to the running shipper through the control socket in its state directory.
"""

from __future__ import annotations

import argparse
import logging
import sys

import uvloop

from logship.cli import LOG_LEVELS, Parser, add_umask_flag, add_version, apply_umask, daemon_logging, dispatch, guarded
from logship.config import DURATION_FORM
from logship.version import version
from shipper.commands import SUBCOMMANDS, operator_main
from shipper.config import config_from_args
from shipper.daemon import open_state, run
from shipper.service import tls_contexts


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m shipper",
        description=(
            "Tail a stream's log directory (new segments and bytes appended to the active one) and ship it to "
            "receivers, each with its own cursor; resume from each receiver's durable position after any cut. "
            "Give one stream with the flags below, or many with --config FILE. "
            f"Durations: {DURATION_FORM}."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version(p, version())
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
        "--seal-idle", metavar="DURATION", help="also seal the newest segment after this idle time (e.g. 5s)"
    )
    p.add_argument("--segment-size", metavar="BYTES", help="also seal a segment when it reaches this size")
    p.add_argument("--epoch", metavar="N", help="epoch to claim (default 0; raised by activation)")
    p.add_argument(
        "--history",
        metavar="FILE",
        help="the history file an activation wrote (DIR/<stream>/history.json): sent in HELLO, so that a "
        "standby past the fork of this epoch rewinds; the epoch claimed is its epoch unless --epoch is newer",
    )
    p.add_argument(
        "--seed-command",
        metavar="CMD",
        help="shell command writing a base image (a tar) to stdout, sent to a target whose copy is Seeding "
        "(`receiver reseed`); e.g. 'tar -C /var/lib/app -cf - .' or 'pg_basebackup -D - -Ft -X none'",
    )
    p.add_argument(
        "--chunk-size",
        metavar="SIZE",
        help="largest DATA chunk: auto (default) is half the smallest window, between 1MiB and 4MiB "
        "(4MiB with the default window; a receiver takes up to its --max-payload, 4MiB by default)",
    )
    p.add_argument(
        "--window",
        metavar="SIZE|auto",
        help="unacknowledged bytes in flight: auto (default) adapts to the link, starting at 16MiB and growing "
        "toward 2 x bandwidth x round trip up to --window-max; a size fixes it",
    )
    p.add_argument("--window-max", metavar="SIZE", help="largest adaptive window (default 64MiB)")
    p.add_argument(
        "--ack-timeout",
        metavar="DURATION",
        help="a target silent this long counts as cut: drop the connection and reconnect (default 30s)",
    )
    p.add_argument(
        "--compress",
        metavar="zstd[:LEVEL]",
        help="compress DATA payloads (zstd, level 1-19, default 3) to every target that supports it; "
        "digests stay over the uncompressed bytes",
    )
    p.add_argument(
        "--payload-mac",
        action="store_true",
        default=None,
        help="authenticate every DATA payload with a MAC under the session key (GMAC, AES-256-GCM; HMAC-SHA256 "
        "with a receiver that lacks it); frame headers "
        "are always authenticated. Use TLS where a link leaves a trusted network; this is for links without it",
    )
    p.add_argument(
        "--rate-limit",
        metavar="RATE",
        help="most bytes per second on the wire to each target: e.g. 50mbit, 1gbit, 800kbit (bits) or 6MB, 6MiB "
        "(bytes); default: no limit",
    )
    p.add_argument(
        "--poll-interval",
        metavar="DURATION",
        help="how often to look at the source directory where inotify is unavailable (default 20ms)",
    )
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
    add_umask_flag(p)
    p.add_argument("--log-level", default="INFO", choices=LOG_LEVELS, help="least severe log lines shown (INFO)")
    return p


EPILOG = """\
operator commands (python -m shipper COMMAND --help for each):
  status [--stream S] [--watch [SECONDS]] [--json]   state, queues and lag per stream and target
  suspend --stream S --target HOST:PORT              stop shipping to a target (kept across restarts)
  resume --stream S --target HOST:PORT               ship to it again
  wait --stream S --segment NAME (--offset N | --sealed) [--require POLICY] [--timeout SECONDS]
                                                     until the bytes are durable where POLICY says

example:
  python -m shipper --stream db1 --source /var/lib/db1/log --target standby-1:7000 \\
      --secret-file /etc/logship/db1.secret --seal-idle 5s
"""


def main(argv: list[str] | None = None) -> int:
    return dispatch(argv, SUBCOMMANDS, daemon_main, operator_main)


def daemon_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    daemon_logging("shipper", args.log_level)

    def body() -> int:
        apply_umask(args.umask)
        config = config_from_args(args)
        # Every file is loaded before anything starts: a bad certificate is a startup error.
        tls = tls_contexts(config.streams)
        state = open_state(config)
        # Once the start can no longer fail on a setting: a refused start stays one error line.
        logging.getLogger("shipper").info("logship %s shipper starting, node %s", version(), config.node)
        try:
            return uvloop.run(run(config, state, tls))
        finally:
            if state is not None:
                state.unlock()

    return guarded("shipper", body)


if __name__ == "__main__":
    sys.exit(main())
