"""The operator's subcommands of ``python -m shipper``: ``status``, ``suspend``, ``resume`` and ``wait``.

They talk to the running shipper through the control socket in its state directory; with no shipper
running, ``suspend`` and ``resume`` record the change in the state directory for the next start.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
from collections.abc import Iterator
from typing import Any

from logship.admin.live import Look, ha_of
from logship.admin.table import exit_status
from logship.cli import EXIT_FAILED, EXIT_USAGE, guarded, operator_logging, watch
from logship.config import ConfigError, parse_address, parse_duration
from logship.verbs import ask, run_copy_verb, stream_rows
from logship.verbs import operator_parser as base_parser
from shipper.config import state_dir_from
from shipper.state import StateBusy, StateDir
from shipper.status import table

SUBCOMMANDS = ("status", "suspend", "resume", "wait")

WAIT_HELP = (
    "Wait until bytes [0, N) of a segment (--offset N), or the whole sealed segment (--sealed), are durable "
    "(fsynced and acknowledged) or replayed at the targets the sync policy requires. POLICY is PostgreSQL's "
    "synchronous_standby_names syntax: 'ANY k (host:port, ...)' any k of them, 'FIRST k (host:port, ...)' the "
    "first k listed that are up, 'ALL' every target, 'ANY k' any k of the stream's targets; default: the "
    "stream's sync setting, else ANY 1. Positions come only from the targets' authenticated ACKs. A segment "
    "the shipper has not seen yet is looked for (up to 10s) first. Exit status: 0 satisfied, 1 timed out "
    "(the missing targets and why are printed), 2 usage error, no shipper answers, unknown stream or "
    "segment, or a policy naming targets the stream does not have."
)


def operator_parser() -> argparse.ArgumentParser:
    p, sub, common = base_parser(
        "python -m shipper",
        "Operate a running shipper.",
        [
            ("--state-dir", "DIR", "the shipper's state dir (default as for the daemon)"),
            ("--config", "FILE", "the shipper's TOML config file (for its state_dir)"),
        ],
        status_help="per stream and target: state, copy/replay queue, last copied, lag, retention",
        status_description="Show the running shipper's targets. Exit status: 0 every target Healthy, 1 any target "
        "not Healthy (Disconnected, Suspended, Failed, Fenced, ...), 2 cannot tell (no shipper answers, "
        "no such stream).",
    )
    q = sub.add_parser(
        "wait", help="wait until a segment's bytes are durable at the targets a policy requires", description=WAIT_HELP
    )
    common(q)
    q.add_argument("--stream", required=True, metavar="S", help="the stream")
    q.add_argument("--segment", required=True, metavar="NAME", help="the segment (a file name in the source dir)")
    what = q.add_mutually_exclusive_group(required=True)
    what.add_argument("--offset", type=int, metavar="N", help="wait for bytes [0, N) of the segment")
    what.add_argument("--sealed", action="store_true", help="wait for the whole segment, sealed in the copies")
    q.add_argument(
        "--level", choices=["durable", "replayed"], default="durable", help="durable (default) or also replayed"
    )
    q.add_argument("--require", metavar="POLICY", help="the sync policy (default: the stream's sync, else ANY 1)")
    q.add_argument("--timeout", metavar="SECONDS", default="60", help="give up after this long (default 60s)")
    q.add_argument("--json", action="store_true", help="print the outcome as JSON")
    for name, text in (
        ("suspend", "stop shipping a stream to one target (kept across restarts); the others go on"),
        ("resume", "ship to it again, from where it stopped"),
    ):
        q = sub.add_parser(name, help=text)
        common(q)
        q.add_argument("--stream", required=True, metavar="S", help="the stream")
        q.add_argument("--target", required=True, metavar="HOST:PORT", help="the target, as configured")
        q.add_argument("--comment", metavar="TEXT", help="why; shown by status")
    return p


def operator_main(argv: list[str]) -> int:
    args = operator_parser().parse_args(argv)
    operator_logging("shipper")

    def body() -> int:
        state = StateDir(state_dir_from(args.state_dir, args.config))
        if args.command == "status":
            looker = None if args.json else lambda: look_status(state, args.stream)
            return watch(lambda: cmd_status(state, args.json, args.stream), args.watch, args.count, looker)
        if args.command == "wait":
            return cmd_wait(state, args)
        host, port = parse_address(args.target)
        return cmd_suspend_resume(state, args.command, args.stream, f"{host}:{port}", args.comment)

    return guarded("shipper", body)


def cmd_status(state: StateDir, as_json: bool, stream: str | None = None) -> int:
    """Print the running shipper's status; return 0 all Healthy, 1 any target not, 2 cannot tell."""
    snapshot = ask(state.control_socket, {"op": "status"}, 10.0)
    if snapshot is None:
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
        return EXIT_USAGE
    snapshot.pop("ok", None)
    if stream is not None:
        snapshot["copies"] = stream_rows(snapshot.get("copies", []), stream)
        if not snapshot["copies"]:
            print(f"shipper: error: the running shipper ships no stream {stream!r}", file=sys.stderr)
            return EXIT_USAGE
    if as_json:
        print(json.dumps({**snapshot, "running": True}, indent=1, sort_keys=True))
    else:
        print(table(snapshot))
    return exit_status(snapshot.get("copies", []))


def look_status(state: StateDir, stream: str | None) -> Look:
    """One look at the running shipper's targets, for ``status --watch``."""
    snapshot = ask(state.control_socket, {"op": "status"}, 10.0)
    if snapshot is None:
        return Look(EXIT_USAGE, f"shipper of {state.path}", error=f"no shipper answers on {state.control_socket}")
    rows = stream_rows(snapshot.get("copies", []), stream)
    heading = f"shipper {snapshot.get('node', '?')} (pid {snapshot.get('pid', '?')})"
    ha = ha_of(snapshot, stream)  # the HA agent that started this shipper: shown under the heading, or as lines
    if not rows and stream is not None:
        return Look(EXIT_USAGE, heading, error=f"the running shipper ships no stream {stream!r}", ha=ha)
    return Look(exit_status(rows), heading, rows, ha=ha)


@contextlib.contextmanager
def offline(state: StateDir) -> Iterator[None]:
    """Hold the state dir's lock while changing it with no shipper running."""
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
        yield
    finally:
        state.unlock()


def cmd_suspend_resume(state: StateDir, command: str, stream: str, target: str, comment: str | None) -> int:
    request = {"op": command, "stream": stream, "target": target, "comment": comment}

    def local() -> dict[str, Any]:
        # No shipper runs: record it in the state dir, for the next start.
        state.set_suspended(stream, target, command == "suspend", comment)
        return {}

    def render(_report: dict[str, Any], where: str) -> str:
        return f"stream {stream} target {target}: {'suspended' if command == 'suspend' else 'resumed'} {where}"

    where = ("by the running shipper", f"in {state.path} (no shipper running; it takes effect at the next start)")
    online = functools.partial(ask, state.control_socket, request, 10.0)
    return run_copy_verb("shipper", online, lambda: offline(state), local, render, where)


def cmd_wait(state: StateDir, args: argparse.Namespace) -> int:
    """Ask the running shipper to wait; return 0 satisfied, 1 timed out (or failed: the source dir is gone),
    2 cannot mean anything."""
    timeout = parse_duration(args.timeout)
    request = {"op": "wait", "stream": args.stream, "segment": args.segment, "level": args.level}
    request |= {"offset": args.offset, "sealed": args.sealed, "require": args.require, "timeout": timeout}
    # The shipper answers at its own deadline; ours is later, so its answer (with reasons) comes first.
    reply = ask(state.control_socket, request, timeout + 15)
    if reply is None:
        print(f"shipper: error: no shipper answers on {state.control_socket}", file=sys.stderr)
        return EXIT_USAGE
    reply.pop("ok", None)
    outcome = reply.get("outcome")
    if outcome == "usage":
        print(f"shipper: error: {reply.get('error')}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(reply, indent=1, sort_keys=True))
    what = f"{args.segment} {'sealed' if args.sealed else f'[0, {args.offset})'}"
    if outcome == "satisfied":
        if not args.json:
            by = ", ".join(str(t["target"]) for t in reply.get("satisfied_by", []))
            took = f"{reply.get('policy')}, {reply.get('waited_seconds')}s"
            print(f"stream {args.stream}: {what} {args.level} at {by} ({took})")
        return 0
    if not args.json:
        waited = f"after {reply.get('waited_seconds', timeout):g}s" if outcome == "failed" else f"after {timeout:g}s"
        print(f"stream {args.stream}: {what} not {args.level} where {reply.get('policy')} requires {waited}")
        if reply.get("source"):
            print(f"  source: {reply['source']}")
        for m in reply.get("missing", []):
            print(f"  {m.get('target')}: {m.get('reason')}")
    return EXIT_FAILED
