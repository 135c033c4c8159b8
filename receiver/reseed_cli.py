"""The ``reseed`` subcommand of ``python -m receiver`` (receiver/reseed.py does the work)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from receiver.copy_verb import run_verb
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


def cmd_reseed(data_dir: Path, args: argparse.Namespace) -> int:
    """Reseed through the running receiver, else on the data dir under its lock."""
    request = {
        "op": "reseed",
        "stream": args.stream,
        "delete_existing": args.delete_existing,
        "manual_resume": args.manual_resume,
    }

    def local() -> dict[str, Any]:
        return reseed_dir(data_dir / args.stream, args.delete_existing, args.manual_resume)

    return run_verb(data_dir, request, local, render, (ReseedRefused,), args.json)
