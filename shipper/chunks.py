"""Send one DATA frame at a time over one connection, reading each chunk into a reused buffer.

``DataSender.send()`` reads the chunk a ``SendData`` step names, digests it and writes the frame; the
read buffer goes back to its pool once the transport has sent it (``protocol.buffers.SentBuffers``).
"""

from __future__ import annotations

import asyncio

from protocol.aio import FramedConnection
from protocol.buffers import SentBuffers
from protocol.digest import chunk_digest
from protocol.messages import Data
from shipper.source import SegmentReader, SendData


class DataSender:
    """DATA frames of one stream over one connection."""

    def __init__(self, conn: FramedConnection, reader: SegmentReader, stream: str) -> None:
        self.conn = conn
        self.reader = reader
        self.stream = stream
        self.buffers = SentBuffers()

    def _sent(self) -> int:
        """Bytes written to the connection that have left its transport (none once it closes)."""
        transport = self.conn.writer.transport
        if transport.is_closing():
            return -1
        return self.conn.bytes_out - transport.get_write_buffer_size()

    async def send(self, step: SendData) -> int | None:
        """Send the chunk of ``step``; return its bytes on the wire, None if the source had fewer bytes."""
        conn = self.conn
        buf = self.buffers.take(step.length, self._sent())
        if self.reader.read_into(step.segment, step.offset, buf) != step.length:
            self.buffers.give(buf)
            return None
        msg = Data(self.stream, step.segment, step.offset, chunk_digest(step.segment, step.offset, buf), buf)  # type: ignore[arg-type]
        if conn.compressor is not None:
            # zstd releases the GIL: compressing in a worker thread keeps this loop (and every
            # other stream and target in the process) responsive even at slow, high levels.
            packed = await asyncio.get_running_loop().run_in_executor(None, conn.compressor.compress, buf)
            wire = conn.send_packed(msg, packed)
            if packed is not None:
                # Only the compressed copy went to the transport.
                self.buffers.give(buf)
                return wire
        else:
            wire = conn.send(msg)
        self.buffers.handed(buf, conn.bytes_out)
        return wire
