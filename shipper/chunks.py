"""Send one DATA frame at a time over one connection, reading each chunk into a reused buffer.

``DataSender.send()`` reads the chunk a ``SendData`` step names, digests it and writes the frame; the
read buffer goes back to its pool once the transport has sent it (``protocol.buffers.SentBuffers``).
A large chunk of a sealed segment is mapped from the page cache instead (``SegmentReader.view``).
"""

from __future__ import annotations

import asyncio
from functools import partial

from protocol.aio import FramedConnection
from protocol.buffers import SentBuffers
from protocol.digest import chunk_digest
from protocol.messages import Data
from shipper.source import SegmentReader, SendData

MAP_AT = 256 * 1024
"""The chunk length from which a sealed segment's chunk is mapped rather than copied into a buffer.

The copy out of the page cache was the shipper's largest cost (perf: a quarter of its samples, the
source's pages coming from DRAM and written again into the buffer); mapped, the digests read the
pages once and the socket copies them from the CPU's cache. Smaller chunks (a trickle's appends)
cost less to copy than to map and unmap. Only sealed segments: a file that shrinks under a mapping
turns the next access into SIGBUS; a sealed one does not change (the tailer says so loudly if it
does), and one that is already shorter is not mapped (``view`` returns None).
"""


class DataSender:
    """DATA frames of one stream over one connection."""

    def __init__(self, conn: FramedConnection, reader: SegmentReader, stream: str) -> None:
        self.conn = conn
        self.reader = reader
        self.stream = stream
        self.buffers = SentBuffers()
        # A reader that watches every byte read (--seal closed: shipper/rewrite.py) reads them all.
        self._maps = type(reader).read_into is SegmentReader.read_into

    def _sent(self) -> int:
        """Bytes written to the connection that have left its transport (none once it closes)."""
        transport = self.conn.writer.transport
        if transport.is_closing():
            return -1
        return self.conn.bytes_out - transport.get_write_buffer_size()

    async def send(self, step: SendData) -> int | None:
        """Send the chunk of ``step``; return its bytes on the wire, None if the source had fewer bytes."""
        conn = self.conn
        if step.sealed and step.length >= MAP_AT and conn.compressor is None and self._maps:
            sealer = conn.sealer
            # The payload MAC first: it runs at GMAC's pace over pages coming from memory, and the two
            # digests after it read them from the cache (mac_cost --mac-first: 0.94 x its hash, 1.08 x after).
            first = partial(sealer.premac, self.stream) if sealer is not None and sealer.payload_mac else None
            view = self.reader.view(step.segment, step.offset, step.length, first)
            if view is not None:
                # The transport may keep the view until it has sent it; the mapping lives as long.
                digest = chunk_digest(step.segment, step.offset, view)
                return conn.send(Data(self.stream, step.segment, step.offset, digest, view))  # type: ignore[arg-type]
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
