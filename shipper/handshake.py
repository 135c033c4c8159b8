"""The shipper's side of connecting to a target: the handshake, what its answers mean, and nothing
believed before the target proved the stream's secret.

An ERROR before the proven WELCOME is only a failed attempt: anyone on the path can send one. It
never puts a target in a permanent state; a refusal that retrying cannot fix (a wrong secret, a
protocol version, a stream name) only lengthens the pause before the next attempt.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
from collections.abc import Mapping, Sequence

from protocol.aio import ConnectionClosed, FramedConnection
from protocol.auth import PAYLOAD_MAC, PAYLOAD_MAC_GMAC
from protocol.errors import VersionMismatch
from protocol.handshake import sender_id as format_sender_id
from protocol.messages import REWRITE, Error, Fenced, Position, StreamResume
from protocol.seed import FEATURE as SEED_FEATURE
from protocol.session import ShipperHandshake
from shipper.probe import explain_hangup, explain_silence
from shipper.settings import SenderConfig

log = logging.getLogger("shipper")

SHIPPER_ID = f"{os.getpid()}.{secrets.token_hex(4)}"
"""This process's id: new at every start (the pid for the operator, random bits so that a reused pid
on another start differs). The receiver tells a restart from a second live shipper by it."""

_senders = itertools.count(1)


def sender_id() -> str:
    """Return a new id for HELLO: this process's, then ``/N`` for the Nth sender it started.

    Two targets of one process that reach one receiver (two names or routes of it) are then two
    shippers of the stream there, of one process: the receiver refuses the second instead of letting the
    two take the stream from each other (receiver/writers.py).
    """
    return format_sender_id(SHIPPER_ID, next(_senders))


PERMANENT_CODES = {
    "auth": "secret mismatch for stream {stream}: both ends must use the same secret file",
    "version": "protocol version mismatch: {text}",
    "bad-name": "the target refuses the stream name: {text}",
    "diverged": "the target's copy does not fit this shipper's history: {text}",
}
"""ERROR codes answering the handshake that retrying does not fix, and what to tell the operator."""


BACK_OFF_CODES = {
    "no-space": "the target's disk is full: {text}",
    "storage-retry": "the target's storage failed {text}",
    "another-shipper": "{text}",
    "busy": "the target is busy: {text}",
}
"""ERROR codes that say "not now": a transient state of the target that reconnecting at once cannot
change (its disk is full, another shipper ships the stream). The sender backs off (capped exponential,
jittered) and shows the target as Retrying with this text, never Failed."""

TOLD_TO_WAIT = {
    "no-space": (1.0, 10.0, 1),
    "storage-retry": (1.0, 10.0, 1),
    "another-shipper": (4.0, 30.0, 1),
    "busy": (0.5, 5.0, 4),
}
"""The first pause, the cap, and the answer in a row that is logged (a WARNING; those before it at
DEBUG) after a target said "not now" (BACK_OFF_CODES); the pause doubles in between. A full disk (or a
failing one: EIO) for minutes costs one attempt every ~10 s (and convergence after it heals waits at
most that); a second live shipper of the stream asks 4 times in its first minute, then every 30 s, and
gets in at most that long after the first one is gone. A receiver busy with handshakes (a thousand
streams starting at once) is asked again after 0.5-1-2-4-5 s, jittered, so that the shippers it turned
away come back spread out; each gets in a moment later, and a line per stream would bury the log: told
once it lasts."""


class Reconnect(Exception):
    """End this connection and try again after a pause."""


class Refused(Exception):
    """The target answered the handshake with an ERROR (unproven: it may not be the target at all)."""

    def __init__(self, text: str, code: str, permanent: bool, holder: str = "") -> None:
        super().__init__(text)
        self.code = code
        self.permanent = permanent
        """Whether retrying soon cannot help (the pause before the next attempt is long)."""
        self.holder = holder
        """For ``another-shipper``: the sid of the shipper holding the stream, if the target said."""


class Fenced_(Exception):
    """The target proved that the stream was activated there: stop shipping to it for good."""


def refusal(error: Error, stream: str) -> Refused:
    """Return what an ERROR answering the handshake means."""
    template = PERMANENT_CODES.get(error.code)
    if template is not None:
        return Refused(template.format(stream=stream, text=error.text), error.code, permanent=True)
    template = BACK_OFF_CODES.get(error.code)
    if template is not None:
        return Refused(template.format(stream=stream, text=error.text), error.code, False, error.holder)
    return Refused(f"refused: {error.code}: {error.text}", error.code, permanent=False)


def beyond_source(position: Position, names: Sequence[str], by_name: Mapping[str, object]) -> str:
    """Say why a resume position lies beyond what the source has ('' if it does not).

    A position on a segment the source no longer holds is fine when it is older than the newest one
    (retention removed it); a newer segment, or an offset past a segment's end, is not.
    """
    if not position.segment:
        return ""
    if not names or position.segment > names[-1]:
        return "a segment newer than the source's newest"
    info = by_name.get(position.segment)
    size = getattr(info, "size", None)
    if isinstance(size, int) and position.offset > size:
        return f"past the end of the source's {size} bytes"
    return ""


async def handshake(
    conn: FramedConnection,
    node: str,
    stream: str,
    secret: bytes,
    epoch: int,
    config: SenderConfig,
    shipper_id: str = SHIPPER_ID,
) -> tuple[ShipperHandshake, StreamResume | Fenced]:
    """Run the handshake for ``stream``; return it and the target's proven answer.

    Raises Refused for an ERROR answer (or no common version), AuthenticationFailed or
    RemoteProtocolError for an answer that does not prove the secret or is malformed, TimeoutError.
    """
    wanted: tuple[str, ...] = (config.compression.encoding,) if config.compression else ()
    if config.payload_mac:
        wanted = (*wanted, PAYLOAD_MAC, PAYLOAD_MAC_GMAC)  # GMAC if the receiver lists it, else HMAC-SHA256
    wanted = (*wanted, REWRITE)  # used only under --seal closed, and only if the target lists it too
    if config.seed is not None:
        wanted = (*wanted, SEED_FEATURE)  # issue 17: we can send a Seeding target its base image
    histories = {stream: config.history}
    hs = ShipperHandshake(node, os.urandom(32), {stream: secret}, {stream: epoch}, wanted, histories, shipper_id)
    try:
        challenge = await conn.recv(config.connect_timeout)
    except TimeoutError:
        raise TimeoutError(await explain_silence(conn, config.connect_timeout)) from None
    except ConnectionClosed as e:
        raise await explain_hangup(conn, e) from None
    if isinstance(challenge, Error):
        raise refusal(challenge, stream)
    try:
        conn.send(hs.receive_challenge(challenge))
    except VersionMismatch as e:
        raise Refused(PERMANENT_CODES["version"].format(stream=stream, text=e), "version", permanent=True) from None
    await conn.drain()
    answer = await conn.recv(config.connect_timeout)
    if isinstance(answer, Error):
        raise refusal(answer, stream)
    result = hs.receive_welcome(answer)[stream]
    if isinstance(result, StreamResume) and result.cut:
        log.warning(
            "stream %s: the target REWOUND its copy by %d bytes past the fork of this shipper's epoch %d; "
            "resuming at %s",
            stream,
            result.cut,
            result.epoch,
            result.position,
        )
    if isinstance(result, StreamResume):
        # From here on every frame both ways is tagged; the WELCOME was the last untagged one, and
        # no await since it was decoded: what follows it in the buffer is still undecoded.
        conn.authenticate(*hs.frame_auth())
    return hs, result
