"""The operator's control handler of a running receiver: status, suspend, resume, activate, fence."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from protocol.history import Fork, parse_position
from protocol.names import is_stream_name
from receiver.activation import ActivationRefused, activate
from receiver.copy import StreamCopy
from receiver.fence import FenceRefused, fence
from receiver.rejoin import RejoinRefused, rejoin_running
from receiver.reseed import ReseedRefused, reseed_running
from receiver.server import ReceiverServer

log = logging.getLogger("receiver")


class Control:
    """Answer control-channel requests for ``server``."""

    def __init__(self, server: ReceiverServer) -> None:
        self.server = server

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one control-channel request: status, suspend, resume, activate."""
        server = self.server
        op = request.get("op")
        if op == "status":
            return {"ok": True, **server.status()}
        stream = request.get("stream")
        new = op == "reseed" and is_stream_name(stream) and server.config.secret_for(stream) is not None
        if not new and (
            not isinstance(stream, str) or (stream not in server.known_streams() and stream not in server.copies)
        ):
            return {"ok": False, "error": f"no copy of stream {stream!r} in {server.config.data_dir}"}
        copy = server.copy(stream)
        comment = request.get("comment")
        if op == "suspend":
            await copy.suspend(comment)
            return {"ok": True, "row": copy.row(time.time())}
        if op == "resume":
            cleared = await copy.resume(comment)
            return {"ok": True, "row": copy.row(time.time()), "cleared": cleared}
        if op == "activate":
            epoch = request.get("epoch")
            if epoch is not None and (type(epoch) is not int or epoch < 1):
                return {"ok": False, "error": f"bad epoch {epoch!r}"}
            try:
                return {"ok": True, "report": await self.activate(copy, request.get("on_activate"), epoch)}
            except ActivationRefused as e:
                return {"ok": False, "error": str(e)}
        if op == "fence":
            epoch, fork = request.get("epoch"), request.get("fork")
            try:
                if type(epoch) is not int or epoch < 1:
                    raise ValueError(f"bad epoch {epoch!r}")
                position = parse_position(fork) if isinstance(fork, str) else None
                return {"ok": True, "report": await fence(copy, epoch, position)}
            except (ValueError, FenceRefused) as e:
                return {"ok": False, "error": str(e)}
        if op == "reseed":  # issue 17
            try:
                delete, manual = bool(request.get("delete_existing")), bool(request.get("manual_resume"))
                return {"ok": True, "report": await reseed_running(copy, delete, manual)}
            except ReseedRefused as e:
                return {"ok": False, "error": str(e)}
        if op == "rejoin":  # issue 16: a former primary becomes a standby of a newer epoch
            epoch, fork = request.get("epoch"), request.get("fork")
            try:
                if type(epoch) is not int or epoch < 1:
                    raise ValueError(f"bad epoch {epoch!r}")
                parsed = Fork.from_json(fork) if fork is not None else None
                pattern = request.get("pattern")
                if pattern is not None:
                    re.compile(str(pattern))
                reseed = bool(request.get("reseed"))
                report = await rejoin_running(copy, epoch, parsed, reseed, str(pattern) if pattern else None)
                return {"ok": True, "report": report}
            except (ValueError, re.error, RejoinRefused, ReseedRefused) as e:
                return {"ok": False, "error": str(e)}
        return {"ok": False, "error": f"unknown op {op!r}"}

    async def activate(self, copy: StreamCopy, on_activate: str | None, epoch: int | None = None) -> dict[str, Any]:
        """Stop accepting the stream, wait for its writer to finish the writes in hand, and activate it."""
        copy.activating = True
        owner = copy.owner
        if owner is not None:
            log.warning("stream %s: activation: closing the connection from %s", copy.name, owner.conn.peer)
            owner.conn.writer.close()
        async with copy.lock:
            # The session let go only after its writes in hand were durable: its last ACK is final now.
            acked, acked_sealed = (owner.acked, owner.acked_sealed) if owner is not None else (None, False)
            try:
                return await activate(copy, on_activate, acked, acked_sealed, epoch)
            finally:
                copy.activating = False
