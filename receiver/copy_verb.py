"""How the receiver's operator verbs reach a copy: through the running receiver's control socket, else on
the data dir under its lock (logship/verbs.py has the shape both daemons share)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from logship.config import ConfigError
from logship.verbs import Report, ask, run_copy_verb
from receiver.datadir import control_path, lock_data_dir

WHERE = ("by the running receiver", "in the data dir (no receiver running)")
"""Where a verb was carried out: by the receiver (control socket), or by the command on the data dir."""


def call(data_dir: Path, request: dict[str, Any], timeout: float = 30.0) -> dict[str, Any] | None:
    """Ask the receiver running on ``data_dir``; None when none answers."""
    return ask(control_path(data_dir), request, timeout)


@contextlib.contextmanager
def offline(data_dir: Path) -> Iterator[None]:
    """Hold the data-dir lock while working on the copies with no receiver running."""
    try:
        fd = lock_data_dir(data_dir)
    except ConfigError:
        raise ConfigError(
            f"a receiver holds the lock on {data_dir} but does not answer on {control_path(data_dir)}; try again"
        ) from None
    try:
        yield
    finally:
        os.close(fd)


def run_verb(
    data_dir: Path,
    request: dict[str, Any],
    local: Callable[[], Report],
    render: Callable[[Report, str], str],
    refused: tuple[type[Exception], ...] = (),
    as_json: bool = False,
    key: str | None = "report",
) -> int:
    """Send ``request`` to the running receiver (its reply's ``key`` is the report; None: the whole
    reply), else run ``local()`` under the data dir's lock; print; return the exit status."""

    def online() -> Report | None:
        reply = call(data_dir, request)
        return reply if reply is None or key is None else reply[key]

    return run_copy_verb("receiver", online, lambda: offline(data_dir), local, render, WHERE, refused, as_json)
