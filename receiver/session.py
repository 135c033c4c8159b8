"""One shipper's connection: the handshake, the admission of each stream it claims, and the serve loop.

``admit()`` is the pure decision for one claimed stream: refuse it (the copy is Failed), fence the
shipper (the copy was activated, or knows a newer epoch), or attach it, taking over from the current
writer if there is one. At most one connection writes a stream at a time: a newer connection for the
same stream closes the older one and attaches once that one finished its write in hand (the stream's
lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from logship.admin.wording import resume_text
from protocol.aio import ConnectionClosed, FramedConnection
from protocol.auth import FrameAuthFailed
from protocol.buffers import BufferPool
from protocol.compression import ENCODINGS, agreed
from protocol.errors import ErrorCode, ProtocolError, RemoteProtocolError
from protocol.messages import REWRITE, START, Ack, Data, Error, Heartbeat, Message, Nack, Position, Seal, StreamResume
from protocol.session import Accepted, ReceiverHandshake
from receiver.admission import Slot
from receiver.committer import Attachment
from receiver.config import ServerConfig
from receiver.copy import StreamCopy
from receiver.ingest import Ingest, Verdict
from receiver.rewind import check_history
from receiver.rewrite import Rewrites
from receiver.seed import resume_point, seeding_hello, serve_seed
from receiver.space import SpaceGuard
from receiver.storage_retry import is_storage_retry
from receiver.store import Recovered
from receiver.writers import Writer, take_over

log = logging.getLogger("receiver")


# -- the decision (pure) ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attach:
    """Attach the stream; with ``take_over``, close the connection that writes it now first."""

    take_over: bool = False


@dataclass(frozen=True, slots=True)
class Fence:
    """Answer FENCED with the copy's epoch and attach no further stream; ``why`` goes to the log."""

    why: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """The copy is Failed: end the handshake with an ERROR (code ``failed``)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Rejoining:
    """A newer primary's shipper at a former primary's copy (issue 16): ERROR ``rejoining``, and the
    shipper retries until the copy rejoins that epoch as a standby (receiver/rejoin.py); not fenced."""

    why: str


Admit = Attach | Fence | Refuse | Rejoining


class NotNow(ProtocolError):
    """Answer ERROR ``code`` (no-space, another-shipper: the shipper backs off) and close; logged at
    WARNING only when ``loud`` (the first time), so a shipper knocking while it lasts adds no lines."""

    def __init__(self, message: str, code: str, loud: bool = False, holder: str = "") -> None:
        super().__init__(message, code)
        self.loud = loud
        self.holder = holder
        """another-shipper: the sid of the shipper holding the stream (ERROR ``holder``)."""


def admit(claimed: int, epoch: int, failed: str | None, activated: bool, busy: bool) -> Admit:
    """Decide what a shipper of epoch ``claimed`` gets for a copy at ``epoch``; ``busy``: another connection has it."""
    if failed:
        return Refuse(failed)
    if activated and claimed > epoch:
        return Rejoining(f"led epoch {epoch} here and has not rejoined epoch {claimed} yet")
    if activated:
        # The copy is a primary now: no shipper of its epoch or an older one writes into it any more.
        return Fence(f"activated at epoch {epoch} (fenced; epoch claimed {claimed})")
    if claimed < epoch:
        return Fence(f"epoch {claimed} is older than {epoch} (fenced)")
    return Attach(take_over=busy)


# -- the connection ---------------------------------------------------------------------------------


class Session:
    """One connection from accept to close: handshake, attach the claimed streams, serve their frames."""

    def __init__(
        self,
        conn: FramedConnection,
        config: ServerConfig,
        copy_for: Callable[[str], StreamCopy],
        pool: BufferPool,
        space: SpaceGuard | None = None,
    ) -> None:
        self.conn = conn
        self.config = config
        self.copy_for = copy_for
        self.pool = pool
        self.space = space
        self.hs = ReceiverHandshake(config.node, os.urandom(32), config.secret_for)
        self.cut: dict[str, int] = {}
        """Per stream, the bytes its copy rewound past the fork of the shipper's epoch at this handshake."""
        self.frames_refused = 0
        self.rewrites = Rewrites()
        """Frames after the handshake whose tag or payload MAC failed (0 or 1: the first one closes)."""
        self.seeding: str | None = None
        """The Seeding stream whose base image this connection carries (receiver/seed.py), if any."""

    async def run(self, slot: Slot) -> None:
        """Serve the connection until it ends; ``slot`` is given back once the handshake is over."""
        conn = self.conn
        attachments: dict[str, Attachment[StreamCopy]] = {}
        try:
            try:
                attachments = await self._handshake()
            finally:
                slot.release()
            if attachments and self.seeding is not None:  # issue 17: this connection carries a base image
                await serve_seed(conn, attachments[self.seeding].copy, self.config)
            elif attachments:
                await self._serve(attachments)
        except NotNow as e:
            # A full disk is logged once by the guard, a second shipper once per shipper id.
            log.log(logging.WARNING if e.loud else logging.DEBUG, "%s: %s; told to back off", conn.peer, e)
            with contextlib.suppress(Exception):
                conn.send(Error(e.code, str(e), e.holder))
        except FrameAuthFailed as e:
            self.frames_refused += 1
            log.warning("%s: refused a frame: %s; closing (nothing of it was applied)", conn.peer, e)
            with contextlib.suppress(Exception):
                conn.send(Error(e.code, str(e)))
        except ProtocolError as e:
            log.warning("%s: %s (%s); closing", conn.peer, e, e.code)
            with contextlib.suppress(Exception):
                conn.send(Error(e.code, str(e)))
        except TimeoutError:
            log.warning("%s: timed out; closing", conn.peer)
        except ConnectionClosed as e:
            log.info("%s: connection closed: %s", conn.peer, e)
        finally:
            for att in attachments.values():
                await att.detach()
                if att.copy.owner is att:
                    att.copy.owner = None
                att.copy.lock.release()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):  # not wait_for: see FramedConnection.close
                    await conn.drain()

    async def _handshake(self) -> dict[str, Attachment[StreamCopy]]:
        conn = self.conn
        hs = self.hs
        conn.send(hs.challenge())
        await conn.drain()
        hello = await conn.recv(self.config.handshake_timeout)
        accepted = hs.receive_hello(hello)
        self._check_space(*(claim.stream for claim in accepted))
        attachments: dict[str, Attachment[StreamCopy]] = {}
        resumes: list[StreamResume] = []
        try:
            for claim in accepted:
                copy = self.copy_for(claim.stream)
                decision = admit(claim.epoch, copy.epoch, copy.failed, copy.activated, copy.owner is not None)
                if isinstance(decision, Refuse):
                    raise RemoteProtocolError(f"stream {copy.name} is Failed: {decision.reason}", code="failed")
                if isinstance(decision, Rejoining):
                    raise NotNow(f"stream {copy.name} {decision.why}", ErrorCode.REJOINING)
                if isinstance(decision, Fence):
                    self._fence(copy, decision.why)
                    return attachments
                newcomer = Writer(hs.peer_node, hs.peer_shipper, str(conn.peer))
                self._one_writer(copy, newcomer)
                if decision.take_over and copy.owner is not None:
                    log.info(
                        "stream %s: new connection from %s takes over from %s",
                        copy.name,
                        conn.peer,
                        copy.owner.conn.peer,
                    )
                    copy.owner.taken_over_by = newcomer
                    copy.owner.conn.writer.close()
                if copy.owner is None and copy.attaching is None:
                    # Until it is attached, a connection that comes meanwhile is judged against this one
                    # (two targets of one shipper connect at the same instant: refused at once, not left
                    # waiting for the stream's lock until the handshake times out).
                    copy.attaching = newcomer
                try:
                    att = await self._attach(copy, claim)
                finally:
                    if copy.attaching is newcomer:
                        copy.attaching = None
                if att is not None:
                    att.who = newcomer
                if att is None:
                    # Activated while we waited for the stream's lock.
                    self._fence(copy, None)
                    return attachments
                attachments[copy.name] = att
                cut = self.cut.get(copy.name, 0)
                seed = seeding_hello(copy, hs.features, len(accepted))  # issue 17: raises if it cannot seed
                if seed:
                    self.seeding = copy.name
                resumes.append(hs.resume(copy.name, copy.epoch, att.acked, att.acked_sealed, cut, seed))
            # Announce every payload encoding we decode; accept compressed DATA only in one both listed.
            conn.decoder.encodings = agreed(hs.features, ENCODINGS)
            conn.decoder.pool = self.pool
            conn.send(hs.welcome(resumes, (*ENCODINGS, REWRITE)))
            # Every frame after WELCOME is tagged both ways. No await since the send: the shipper can
            # only tag once it read the WELCOME, so no tagged byte can have been decoded untagged.
            conn.authenticate(*hs.frame_auth())
            for att in attachments.values():
                # Tell the shipper at once what is already replayed: its retention waits for that, and
                # an idle stream would otherwise send no ACK to carry it (e.g. replay caught up while
                # detached).
                if att.copy.replayed_position != START:
                    conn.send(Ack(att.copy.name, att.acked, att.acked_sealed, att.copy.replayed_position))
            await conn.drain()
        except BaseException:
            # Also when the peer vanished while we answered: the streams must not stay locked to a
            # connection that is gone (every later shipper would time out waiting for the lock).
            for att in attachments.values():
                await att.detach()
                att.copy.owner = None
                att.copy.lock.release()
            raise
        return attachments

    async def _attach(self, copy: StreamCopy, claim: Accepted) -> Attachment[StreamCopy] | None:
        """Take the stream's lock, recover its copy from disk and attach it; None (lock released) if it
        was activated meanwhile."""
        async with asyncio.timeout(self.config.handshake_timeout):
            await copy.lock.acquire()
        try:
            if copy.activated:
                copy.lock.release()
                return None
            if claim.epoch > copy.epoch:
                copy.state.adopt_epoch(claim.epoch)
                await copy.save_state()
            rec = await self._recover(copy)
            rec, self.cut[copy.name] = await check_history(copy, claim.epoch, claim.history, rec, self.config.no_rewind)
        except BaseException:
            copy.lock.release()
            raise
        if rec.discarded:
            log.warning("stream %s: cut %d unverified bytes from the tail of %s", copy.name, rec.discarded, rec.active)
        if rec.active is not None:
            durable, sealed = Position(rec.active, rec.offset), False
        else:
            durable, sealed = Position(*resume_point(copy, rec.last_sealed, rec.last_sealed_size)), True
        # A reseeded copy's log continues after its base (issue 17), not after nothing.
        ingest = Ingest(resume_point(copy, rec.last_sealed, 0)[0], rec.active, rec.offset, rec.hasher)
        att = Attachment(copy, self.conn, ingest, durable, sealed, self.config.max_pending, self.pool, self.space)
        copy.owner = att
        copy.attached_once = True
        log.info(
            "stream %s: %s attached, %s",
            copy.name,
            self.conn.peer,
            resume_text(durable.segment, durable.offset, sealed),
        )
        return att

    async def _recover(self, copy: StreamCopy) -> Recovered:
        """Recover the copy from disk; raise NotNow (storage-retry) while its storage fails (EIO)."""
        trouble = self.space.storage if self.space is not None else None

        def recover() -> Recovered:
            if trouble is not None:
                trouble.before_recover(copy.store, copy.name)  # a cut of an unacknowledged tail, if one failed
            return copy.store.recover()

        try:
            return await asyncio.get_running_loop().run_in_executor(None, recover)
        except OSError as e:
            if trouble is None or not is_storage_retry(e):
                raise
            # Logged once per episode by the tracker: the NotNow itself only at DEBUG.
            raise NotNow(trouble.failed_recovery(copy.name, e), ErrorCode.STORAGE_RETRY) from None

    def _one_writer(self, copy: StreamCopy, newcomer: Writer) -> None:
        """Raise NotNow (another-shipper) if a live shipper that took over from this one writes ``copy``."""
        owner = copy.owner
        # Judged against the connection about to take over, if one is (it waits for the lock): the
        # old one is closing, and a shipper it displaced must not slip in behind it.
        current = copy.attaching if owner is None else owner.taken_over_by or owner.who
        refused = take_over(current, newcomer)
        if refused is None:
            return
        assert current is not None
        loud = newcomer.shipper not in current.refused
        current.refused.add(newcomer.shipper)
        text = f"stream {copy.name}: {refused}; this shipper (node {newcomer.node}, id {newcomer.shipper}) waits"
        raise NotNow(text, ErrorCode.ANOTHER_SHIPPER, loud, current.shipper)

    def _check_space(self, *streams: str) -> None:
        """Raise NotNow (no-space) when the data dir is below its min_free (the shipper backs off)."""
        problem = self.space.problem() if self.space is not None else None
        if problem is not None:
            assert self.space is not None
            self.space.refused(*streams)
            raise NotNow(problem, ErrorCode.NO_SPACE)

    def _fence(self, copy: StreamCopy, why: str | None) -> None:
        if why is not None:
            log.error("%s: refused stream %s: %s", self.conn.peer, copy.name, why)
        self.conn.send(self.hs.fenced(copy.name, copy.epoch))

    async def _serve(self, attachments: dict[str, Attachment[StreamCopy]]) -> None:
        conn = self.conn
        while True:
            for att in attachments.values():
                if att.error is not None:
                    return
                if not att.room.is_set():
                    await att.room.wait()
            msg = await conn.recv(self.config.idle_timeout)
            if isinstance(msg, Data | Seal):
                # Checked before the frame is taken: below min_free nothing more is accepted (what
                # is already queued is still written and acknowledged by detach()).
                self._check_space(msg.stream)
                att = attachments.get(msg.stream)
                if att is None:
                    raise RemoteProtocolError(f"stream {msg.stream} was not named in HELLO", code="bad-stream")
                if not await self._ingest(att, msg):
                    return
            elif isinstance(msg, Heartbeat):
                if msg.stream is not None and msg.head is not None and msg.stream in attachments:
                    attachments[msg.stream].copy.source_head = (msg.head, time.time())
                conn.send(Heartbeat())
            elif isinstance(msg, Error):
                log.warning("%s: peer reported %s: %s", conn.peer, msg.code, msg.text)
                return
            else:
                raise RemoteProtocolError(f"unexpected {type(msg).__name__} after handshake", code="bad-type")
            if conn.writer.transport.get_write_buffer_size() > 1 << 20:
                await conn.drain()

    async def _ingest(self, att: Attachment[StreamCopy], msg: Message) -> bool:
        copy = att.copy
        if isinstance(msg, Data):
            if msg.rewrite:  # bytes already held, changed on the source (receiver/rewrite.py)
                self.rewrites.on_rewrite(att, msg, REWRITE in self.hs.features)
                return True
            copy.bytes_received += len(msg.payload)
            outcome = att.ingest.on_data(msg)
        else:
            assert isinstance(msg, Seal)
            if not await self.rewrites.before_seal(att, msg):
                return False
            outcome = att.ingest.on_seal(msg)
        if outcome.verdict is Verdict.ACCEPT:
            att.submit(outcome.ops)
        elif outcome.verdict is Verdict.RESEND:
            copy.resends += 1
            log.warning(
                "stream %s: %s at %s; asking for a resend (resends so far: %d)",
                copy.name,
                outcome.reason,
                outcome.resend_from,
                copy.resends,
            )
            if outcome.ops:
                att.submit(outcome.ops)
            assert outcome.resend_from is not None
            self.conn.send(Nack(copy.name, outcome.resend_from, outcome.reason))
        elif outcome.verdict is Verdict.FAIL:
            log.error("stream %s: Failed: %s; keeping everything received so far", copy.name, outcome.reason)
            copy.state.fail(outcome.reason)
            await copy.save_state()
            self.conn.send(Error("failed", f"stream {copy.name} Failed: {outcome.reason}"))
            return False
        return True
