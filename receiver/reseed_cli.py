"""The ``reseed`` subcommand of ``python -m receiver`` (receiver/reseed.py does the work)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from logship.cli import EXIT_FAILED
from receiver.reseed import ReseedRefused, render, reseed_dir


def add_reseed_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    q = sub.add_parser(
        "reseed",
        help="start a copy over from a base image sent by its shipper (its seed_command)",
        description="Move the copy's files aside to quarantine/reseed-<time>/ (or delete them), and mark it "
        "Seeding: the next shipper with a seed_command sends a base image, which is verified and unpacked into "
        "DIR/<stream>/base/; copying continues with the segment that follows the image. Through the control "
        "socket of a running receiver, else on the data dir under its lock.",
    )
    common(q)
    q.add_argument("--stream", required=True, metavar="S", help="the stream")
    q.add_argument("--delete-existing", action="store_true", help="delete the old copy instead of moving it aside")
    q.add_argument("--manual-resume", action="store_true", help="once seeded, replay waits for `resume`")
    q.add_argument("--json", action="store_true", help="print the report as JSON")


def cmd_reseed(
    data_dir: Path,
    args: argparse.Namespace,
    call: Callable[[Path, dict[str, Any]], dict[str, Any] | None],
    offline: Callable[[Path], AbstractContextManager[None]],
) -> int:
    request = {
        "op": "reseed",
        "stream": args.stream,
        "delete_existing": args.delete_existing,
        "manual_resume": args.manual_resume,
    }
    reply = call(data_dir, request)
    if reply is not None:
        if not reply.get("ok"):
            print(f"receiver: error: {reply.get('error')}", file=sys.stderr)
            return EXIT_FAILED
        report, where = reply["report"], "by the running receiver"
    else:
        with offline(data_dir):
            try:
                report = reseed_dir(data_dir / args.stream, args.delete_existing, args.manual_resume)
            except ReseedRefused as e:
                print(f"receiver: error: {e}", file=sys.stderr)
                return EXIT_FAILED
        where = "in the data dir (no receiver running)"
    if args.json:
        print(json.dumps({**report, "where": where}, indent=1, sort_keys=True))
    else:
        print(render(report, where))
    return 0
