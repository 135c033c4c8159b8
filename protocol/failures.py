"""Whether a failure is transient (retrying fixes it) or permanent (it needs an operator). No I/O.

One table for both daemons: a transient failure is retried with back-off and shown as Retrying with a
count, never Failed; a permanent one makes the copy (or the target) Failed once, with its reason.
"""

from __future__ import annotations

import enum
import errno


class Kind(enum.Enum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"


FAILURES: dict[str, Kind] = {
    # The link damaged a chunk: the source is intact, a resend (in smaller chunks) fixes it.
    "chunk digest mismatch": Kind.TRANSIENT,
    "connection lost": Kind.TRANSIENT,
    "timeout": Kind.TRANSIENT,
    "peer restart": Kind.TRANSIENT,
    "disk full": Kind.TRANSIENT,
    "io error": Kind.TRANSIENT,
    "another shipper": Kind.TRANSIENT,
    "receiver busy": Kind.TRANSIENT,
    # Every chunk verified and still the whole segment does not match: what was shipped is not what
    # the SEAL describes (after its retries), the source changed under us.
    "segment digest mismatch": Kind.PERMANENT,
    "sealed source changed": Kind.PERMANENT,
    "inspector veto": Kind.PERMANENT,
    "chain gap": Kind.PERMANENT,
}
"""Failure name -> its kind; the rows of docs/reliability.md's table."""

ERROR_CODES: dict[str, str] = {
    "no-space": "disk full",
    "storage-retry": "io error",
    "another-shipper": "another shipper",
    "busy": "receiver busy",
}
"""ERROR codes that name a transient failure of the receiver's: the shipper backs off from them and shows
Retrying (shipper/handshake.py's BACK_OFF_CODES are exactly these)."""

_TRANSIENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT}


def classify(failure: str) -> Kind:
    """Return the kind of the named failure; an unknown name is permanent (never hide what we do not know)."""
    return FAILURES.get(failure, Kind.PERMANENT)


def classify_os_error(error: BaseException) -> Kind:
    """Return whether an OSError of a write that can be redone is worth retrying (disk full, EIO)."""
    return Kind.TRANSIENT if isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS else Kind.PERMANENT


def errno_name(error: BaseException) -> str:
    """Return the symbolic name of an OSError's errno (``EIO``), or ``error`` when it has none."""
    number = getattr(error, "errno", None)
    return errno.errorcode.get(number, "error") if isinstance(number, int) else "error"
