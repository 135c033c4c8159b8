"""The shapes both daemons' operator subcommands share: a ``status`` subcommand, and a verb on one copy
(fence, suspend, resume, reseed) that the running daemon carries out through its control socket or, when
none answers, the command itself does on disk under the daemon's lock, then says where it was done.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from logship.admin import control
from logship.cli import EXIT_FAILED, Parser, add_status_flags
from logship.config import parse_duration

Report = dict[str, Any]


def ask(path: Path, request: dict[str, Any], timeout: float = 30.0) -> dict[str, Any] | None:
    """Return the reply of the daemon whose control socket is ``path``; None when none answers.

    Raises ControlError when it answers ``ok: false`` (``guarded`` reports that, exit 1).
    """
    try:
        return control.call(path, request, timeout)
    except control.ControlUnavailable:
        return None


def run_copy_verb(
    role: str,
    online: Callable[[], Report | None],
    offline: Callable[[], AbstractContextManager[object]],
    local: Callable[[], Report],
    render: Callable[[Report, str], str],
    where: tuple[str, str],
    refused: tuple[type[Exception], ...] = (),
    as_json: bool = False,
) -> int:
    """Carry out one verb: ``online()`` (the running daemon's report, None when none answers), else
    ``local()`` inside ``offline()`` (the daemon's lock). ``where`` says by whom: (online, offline).

    Print ``render(report, where)``, or with ``as_json`` the report with ``where`` added; return 0. An
    error of a ``refused`` type from ``local()`` is one ``<role>: error:`` line, exit 1.
    """
    report = online()
    if report is not None:
        done_by = where[0]
    else:
        with offline():
            try:
                report = local()
            except refused as e:
                print(f"{role}: error: {e}", file=sys.stderr)
                return EXIT_FAILED
        done_by = where[1]
    if as_json:
        print(json.dumps({**report, "where": done_by}, indent=1, sort_keys=True))
    else:
        print(render(report, done_by))
    return 0


def operator_parser(
    prog: str, description: str, flags: Sequence[tuple[str, str, str]], status_help: str, status_description: str
) -> tuple[argparse.ArgumentParser, Any, Callable[[argparse.ArgumentParser], None]]:
    """Return a daemon's operator parser with its ``status`` subcommand, the subparsers to add the others
    to, and ``common(q)``, which adds the daemon's ``flags`` (name, metavar, help) to a subcommand."""
    p = Parser(prog=prog, description=description)
    sub = p.add_subparsers(dest="command", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        for name, metavar, text in flags:
            q.add_argument(name, metavar=metavar, help=text)

    q = sub.add_parser("status", help=status_help, description=status_description)
    common(q)
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_status_flags(q, parse_duration)
    return p, sub, common


def stream_rows(rows: list[dict[str, Any]], stream: str | None) -> list[dict[str, Any]]:
    """The status rows of ``stream`` (all of them when None)."""
    return [row for row in rows if stream is None or row.get("stream") == stream]
