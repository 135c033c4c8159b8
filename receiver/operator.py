"""The operator subcommands of ``python -m receiver``: status, suspend, resume, activate, fence, reseed.

They talk to the running receiver through its control socket (DIR/control.sock), or work on the data
dir directly, under its lock, when no receiver runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from logship.admin.live import Look, ha_of
from logship.admin.table import exit_status
from logship.cli import EXIT_FAILED, EXIT_USAGE, guarded, operator_logging, watch
from logship.config import ConfigError, load_toml
from logship.verbs import operator_parser as base_parser
from logship.verbs import stream_rows
from protocol.history import parse_position
from protocol.messages import Position
from protocol.names import is_stream_name
from receiver.activation import ActivationRefused, activate, render_report
from receiver.config import add_replay_flags, replay_from_doc
from receiver.copy import StreamCopy
from receiver.copy_verb import call, offline, run_verb
from receiver.datadir import existing_streams
from receiver.fence import FenceRefused, fence
from receiver.ha_view import add_views, ha_lines
from receiver.history_file import history_rows
from receiver.reseed_cli import add_reseed_parser, cmd_reseed
from receiver.retention import retention_fields
from receiver.retention_config import retention_from_doc
from receiver.state import load_state
from receiver.status import copy_row, render_rows
from receiver.store import SegmentStore

SUBCOMMANDS = ("status", "suspend", "resume", "activate", "fence", "reseed")


def _epoch(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an epoch (an integer >= 1)")
    return int(text)


def _fork(text: str) -> Position:
    try:
        return parse_position(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def operator_parser() -> argparse.ArgumentParser:
    p, sub, common = base_parser(
        "python -m receiver",
        "Operate the standby copies of a receiver.",
        [
            ("--data-dir", "DIR", "the receiver's data dir (or data_dir in --config)"),
            ("--config", "FILE", "the receiver's TOML config file"),
        ],
        status_help="show each stream copy: state, replay queue, last copied/replayed, lag",
        status_description="Show each stream copy. Exit status: 0 every copy Healthy (or Activated), 1 any copy "
        "not (Disconnected, Suspended, Failed, ...; every copy read from disk with no receiver running is "
        "Disconnected), 2 cannot tell (no data dir, no such stream).",
    )
    for name, text in (
        ("suspend", "stop replaying a stream (copying goes on)"),
        ("resume", "replay it again; also clears a Failed copy, so shippers are accepted again"),
    ):
        q = sub.add_parser(name, help=text)
        common(q)
        q.add_argument("--stream", required=True, metavar="S", help="the stream")
        q.add_argument("--comment", metavar="TEXT", help="why; shown by status")
    q = sub.add_parser(
        "activate",
        help="make a stream's copy the new primary: fence older shippers, replay all verified, report",
    )
    common(q)
    q.add_argument("--stream", required=True, metavar="S", help="the stream whose copy becomes the primary")
    q.add_argument(
        "--on-activate",
        metavar="CMD",
        help="shell command run after replay ({stream} {epoch} {replica}; env LOGSHIP_STREAM, LOGSHIP_EPOCH, "
        "LOGSHIP_REPLICA, LOGSHIP_TAIL)",
    )
    q.add_argument(
        "--epoch",
        type=_epoch,
        metavar="N",
        help="the new epoch, allocated outside (refused unless newer than every epoch this copy knows); "
        "without it: the next one here, and every other standby must then be fenced by hand",
    )
    q.add_argument(
        "--yes",
        action="store_true",
        help="do not ask for confirmation (asked only when stdin and stderr are a terminal)",
    )
    q.add_argument("--json", action="store_true", help="print the report as JSON")
    add_replay_flags(q)
    q.add_argument(
        "--replica-keep",
        metavar="N|consumer",
        help="as the daemon's (or replica_keep in --config): with consumer, segments the database removed "
        "from replica/ before the oldest one left there are not missing",
    )
    q = sub.add_parser(
        "fence",
        help="tell a standby that epoch N exists: it refuses (and drops) shippers of older epochs from now on",
        description="Raise the epoch of a standby's copy to N (persisted): shippers of older epochs are fenced, "
        "an attached one is dropped. With --fork, a shipper of epoch N must fork there. Through the control "
        "socket of a running receiver, else on the data dir under its lock.",
    )
    common(q)
    q.add_argument("--stream", required=True, metavar="S", help="the stream")
    q.add_argument("--epoch", required=True, type=_epoch, metavar="N", help="the new primary's epoch")
    q.add_argument("--fork", type=_fork, metavar="SEG@OFF", help="where epoch N forked (the activation report's fork)")
    q.add_argument("--json", action="store_true", help="print the report as JSON")
    add_reseed_parser(sub, common)
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
            looker = None if args.json else lambda: look_status(data_dir, args.stream)
            return watch(lambda: cmd_status(data_dir, args.json, args.stream), args.watch, args.count, looker)
        if args.command == "reseed":
            # A brand-new standby may be seeded before its first shipper ever connected (issue 17).
            if not is_stream_name(args.stream):
                raise ConfigError(f"{args.stream!r} is not a stream name")
            return cmd_reseed(data_dir, args)
        if args.stream not in existing_streams(data_dir):
            raise ConfigError(f"no copy of stream {args.stream!r} in {data_dir}")
        if args.command in ("suspend", "resume"):
            return cmd_suspend_resume(data_dir, args.command, args.stream, args.comment)
        if args.command == "fence":
            return cmd_fence(data_dir, args)
        return cmd_activate(data_dir, args, doc)

    return guarded("receiver", body)


def disk_status(data_dir: Path) -> dict[str, Any]:
    """Build the status snapshot from the data dir alone (no receiver running)."""
    now = time.time()
    rows = []
    for name in existing_streams(data_dir):
        store = SegmentStore(data_dir / name)
        state, manifest = load_state(store.state_path), store.read_manifest()
        row = copy_row(name, state, manifest, now, None, history=history_rows(store.root))
        rows.append({**row, **retention_fields(manifest, store.read_manifest_base())})
    ha = add_views(rows, data_dir, now)
    return {"role": "receiver", "node": None, "pid": None, "copies": rows, **({"ha": ha} if ha else {})}


def look_status(data_dir: Path, stream: str | None) -> Look:
    """One look at the copies, for ``status --watch``: the running receiver's, else the data dir's."""
    reply = call(data_dir, {"op": "status"})
    if reply is not None:
        snapshot, heading = reply, f"receiver of {data_dir} (pid {reply.get('pid')})"
    else:
        snapshot, heading = disk_status(data_dir), f"receiver of {data_dir} (no receiver running: from the data dir)"
    rows = stream_rows(snapshot.get("copies", []), stream)
    ha = ha_of(snapshot, stream)  # the node's HA agent, also for a stream it leads with no copy here
    if not rows and stream is not None:
        return Look(EXIT_USAGE, heading, error=f"no copy of stream {stream!r} in {data_dir}", ha=ha)
    return Look(exit_status(rows), heading, rows, ha=ha)


def cmd_status(data_dir: Path, as_json: bool, stream: str | None = None) -> int:
    """Print the copies' status; return 0 all Healthy (or Activated), 1 any copy not, 2 cannot tell."""
    reply = call(data_dir, {"op": "status"})
    if reply is not None:
        reply.pop("ok", None)
        snapshot, source = reply, f"running receiver, pid {reply.get('pid')}"
    else:
        snapshot, source = disk_status(data_dir), "data dir (no receiver running)"
    snapshot["source"] = source
    if stream is not None:
        snapshot["copies"] = stream_rows(snapshot["copies"], stream)
        if not snapshot["copies"]:
            print(f"receiver: error: no copy of stream {stream!r} in {data_dir}", file=sys.stderr)
            return EXIT_USAGE
    if as_json:
        print(json.dumps(snapshot, indent=1, sort_keys=True))
    else:
        print(f"receiver status of {data_dir} from the {source}")
        print(render_rows(snapshot["copies"], time.time()))
        for line in ha_lines(snapshot):  # an agent's stream with no copy here (the primary's)
            print(line)
    return exit_status(snapshot["copies"])


def cmd_suspend_resume(data_dir: Path, command: str, stream: str, comment: str | None) -> int:
    def local() -> dict[str, Any]:
        async def change() -> str | None:
            copy = StreamCopy(stream, SegmentStore(data_dir / stream))
            if command == "suspend":
                await copy.suspend(comment)
                return None
            return await copy.resume(comment)

        return {"cleared": asyncio.run(change())}

    def render(report: dict[str, Any], where: str) -> str:
        done = f"stream {stream}: replay {'suspended' if command == 'suspend' else 'resumed'} {where}"
        if cleared := report.get("cleared"):
            return f"stream {stream}: copy failure cleared ({cleared}); shippers are accepted again\n{done}"
        return done

    return run_verb(data_dir, {"op": command, "stream": stream, "comment": comment}, local, render, key=None)


def cmd_fence(data_dir: Path, args: argparse.Namespace) -> int:
    fork = str(args.fork) if args.fork is not None else None
    request = {"op": "fence", "stream": args.stream, "epoch": args.epoch, "fork": fork}

    def local() -> dict[str, Any]:
        copy = StreamCopy(args.stream, SegmentStore(data_dir / args.stream))
        return asyncio.run(fence(copy, args.epoch, args.fork))

    def render(report: dict[str, Any], where: str) -> str:
        state = "fenced at" if report["raised"] else "already at"
        return f"stream {args.stream}: {state} epoch {report['epoch']} {where}; older shippers are refused"

    return run_verb(data_dir, request, local, render, (FenceRefused,), args.json)


def _confirmed(data_dir: Path, args: argparse.Namespace) -> bool:
    """Ask at a terminal (issue 18): activation cannot be undone. Scripts and --yes go on.

    Asked only when stdin and stderr (where the question goes) are both a terminal: a script that
    captures the output, or feeds stdin, runs on without a question nobody would see.
    """
    if args.yes or not (sys.stdin.isatty() and sys.stderr.isatty()):
        return True
    epoch = f"epoch {args.epoch}" if args.epoch else "the next epoch"
    print(
        f"activate stream {args.stream} in {data_dir} at {epoch}? This cannot be undone [y/N] ", end="", file=sys.stderr
    )
    sys.stderr.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def cmd_activate(data_dir: Path, args: argparse.Namespace, doc: dict[str, Any]) -> int:
    if not _confirmed(data_dir, args):
        print(f"stream {args.stream}: not activated", file=sys.stderr)
        return EXIT_FAILED
    request = {"op": "activate", "stream": args.stream, "on_activate": args.on_activate, "epoch": args.epoch}
    reply = call(data_dir, request, timeout=3600.0)
    if reply is not None:
        report = reply["report"]
    else:
        default, own = replay_from_doc(doc, args, args.config or "config file")
        settings = own.get(args.stream, default)
        # The config file's retention too: whether replica/ is pruned by its database (activation's check).
        kept, own_kept = retention_from_doc(doc, args, args.config or "config file")
        retention = own_kept.get(args.stream, kept)
        with offline(data_dir):

            async def run() -> dict[str, Any]:
                copy = StreamCopy(args.stream, SegmentStore(data_dir / args.stream), settings, retention)
                try:
                    return await activate(copy, args.on_activate, epoch=args.epoch)
                finally:
                    copy.store.close_manifest()

            try:
                report = asyncio.run(run())
            except ActivationRefused as e:
                print(f"receiver: error: {e}", file=sys.stderr)
                return EXIT_FAILED
    if args.json:
        print(json.dumps(report, indent=1, sort_keys=True))
    else:
        print(render_report(report))
    return 0 if report.get("ok") else 1
