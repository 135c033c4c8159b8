"""Test harness: real receiver/shipper processes, a source log writer, copy checks, a fault proxy."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import xxhash

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_secret(path: Path) -> Path:
    path.write_text(secrets.token_hex(32) + "\n")
    path.chmod(0o600)
    return path


def digest_file(path: Path, size: int | None = None) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        if size is None:
            while block := f.read(1 << 22):
                h.update(block)
        else:
            h.update(f.read(size))
    return h.hexdigest()


class Proc:
    """A real `python -m receiver|shipper` process with its stderr in a log file."""

    def __init__(self, module: str, args: list[str], log_path: Path) -> None:
        self.module = module
        self.args = args
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Proc:
        assert self.popen is None or self.popen.poll() is not None
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args],
            stdout=log,
            stderr=log,
            cwd=ROOT,
        )
        log.close()
        self.starts += 1
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill9(self) -> None:
        assert self.popen is not None
        os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM, wait; SIGKILL if it does not stop. Returns the exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def count(self, needle: str) -> int:
        return self.log_text().count(needle)


def receiver_proc(tmp: Path, port: int, secret: Path, name: str = "receiver", extra: list[str] | None = None) -> Proc:
    args = ["--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp / name), "--secret-file", str(secret)]
    return Proc("receiver", args + (extra or []), tmp / f"{name}.log")


_STATE_DIRS = itertools.count(1)


def shipper_proc(
    tmp: Path, stream: str, source: Path, ports: list[int], secret: Path, extra: list[str] | None = None
) -> Proc:
    args = ["--stream", stream, "--source", str(source), "--secret-file", str(secret)]
    # Each shipper its own state dir: a test may run two shippers of one stream at once.
    args += ["--state-dir", str(tmp / f"st-{stream}-{next(_STATE_DIRS)}")]
    for p in ports:
        args += ["--target", f"127.0.0.1:{p}"]
    return Proc("shipper", args + (extra or []), tmp / f"shipper-{stream}.log")


def segment_name(i: int) -> str:
    return f"E00{i:08X}.log"


@dataclass
class SourceWriter:
    """Write a segmented log like a database would: append to the newest segment, then start the next.

    Runs in a thread. ``sizes`` are the final sizes of the segments written in full; after them one
    more (active) segment keeps growing by ``tail_append`` bytes every ``tail_every`` seconds until
    ``stop()``.
    """

    source: Path
    sizes: list[int]
    rate: float = 8e6
    append: int = 64 * 1024
    seed: int = 1
    tail_append: int = 3000
    tail_every: float = 0.05
    written: int = 0
    done_full: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> SourceWriter:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        rnd = random.Random(self.seed)
        t0 = time.monotonic()
        for i, size in enumerate(self.sizes, start=1):
            if self._stop.is_set():
                return
            fd = os.open(self.source / segment_name(i), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                left = size
                while left and not self._stop.is_set():
                    n = min(left, self.append)
                    os.write(fd, rnd.randbytes(n))
                    left -= n
                    self.written += n
                    if self.rate:
                        ahead = self.written / self.rate - (time.monotonic() - t0)
                        if ahead > 0:
                            time.sleep(ahead)
            finally:
                os.close(fd)
        self.done_full.set()
        active = self.source / segment_name(len(self.sizes) + 1)
        fd = os.open(active, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            while not self._stop.wait(self.tail_every):
                os.write(fd, rnd.randbytes(self.tail_append))
                self.written += self.tail_append
        finally:
            os.close(fd)


def sealed_in_source(source: Path) -> list[str]:
    """Segments the `next` policy considers sealed: every one but the newest."""
    names = sorted(n for n in os.listdir(source) if not n.startswith("."))
    return names[:-1]


def assert_copy_converged(source: Path, copy_root: Path, expect: list[str]) -> int:
    """Assert log/ holds exactly ``expect``, each byte-identical to the source; return bytes compared."""
    log_dir = copy_root / "log"
    have = sorted(os.listdir(log_dir))
    assert have == sorted(expect), f"log/ holds {len(have)} segments, expected {len(expect)}"
    total = 0
    for name in have:
        src, dst = source / name, log_dir / name
        assert src.stat().st_size == dst.stat().st_size, f"{name}: size differs"
        assert digest_file(src) == digest_file(dst), f"{name}: digest differs"
        total += dst.stat().st_size
    return total


def check_no_corrupt(source: Path, copy_root: Path, seen: dict[str, str]) -> None:
    """Verify every segment in log/ not yet checked; raise AssertionError on any corrupt one."""
    log_dir = copy_root / "log"
    if not log_dir.exists():
        return
    for name in os.listdir(log_dir):
        if name in seen:
            continue
        dst = log_dir / name
        d = digest_file(dst)
        src_d = digest_file(source / name)
        assert d == src_d, f"corrupt segment installed: {name}"
        seen[name] = d


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.1, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_converged(source: Path, copy_root: Path, expect: list[str], seen: dict[str, str], timeout: float) -> None:
    """Wait until log/ holds exactly ``expect``, checking every newly installed segment on the way."""

    def converged() -> bool:
        check_no_corrupt(source, copy_root, seen)
        return sorted(seen) == sorted(expect)

    wait_until(converged, timeout, what=f"all {len(expect)} sealed segments in log/")


def partial_matches_prefix(source: Path, copy_root: Path) -> bool:
    """The copy's partial (if any) holds a prefix of the source's segment of the same name."""
    inc = copy_root / "incoming"
    for p in inc.glob("*.partial"):
        name = p.name[: -len(".partial")]
        size = p.stat().st_size
        # Both digests over the same ``size`` bytes: the partial may grow while we read it.
        if digest_file(source / name, size) != digest_file(p, size):
            return False
    return True


# -- fault proxy ---------------------------------------------------------------------------------

_PREFIX = struct.Struct(">I")


async def read_frame(r: asyncio.StreamReader) -> tuple[bytes, bytes, Any, bytes]:
    """Read one whole frame as the wire carries it: (length prefix, raw header, decoded header, the
    DATA payload or b"")."""
    prefix = await r.readexactly(4)
    (hlen,) = _PREFIX.unpack(prefix)
    header_raw = await r.readexactly(hlen)
    header = msgpack.unpackb(header_raw, raw=False)
    is_data = isinstance(header, dict) and header.get("t") == "DATA"
    payload = await r.readexactly(header["len"]) if is_data else b""
    return prefix, header_raw, header, payload


class FrameProxy:
    """A TCP proxy on 127.0.0.1 between shipper and receiver; subclasses decide what ``_forward`` does
    to the shipper->receiver frames and what ``_backward`` does to the receiver->shipper ones (by
    default: copied as they are, held while ``_open`` is cleared, a stall). Either direction ending
    closes the connection on both sides."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.server: asyncio.Server | None = None
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._open = asyncio.Event()
        self._open.set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._on_connect, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server:
            self.server.close()
        for w in self._writers:
            w.close()

    async def _on_connect(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            cw.close()
            return
        self._writers += [cw, uw]
        back = asyncio.create_task(self._back(ur, cw))
        try:
            await self._forward(cr, uw)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            uw.close()
            cw.close()
            back.cancel()

    async def _back(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await self._backward(r, w)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            # Closing the shipper's side ends the connection: the shipper drops it, and _forward then
            # sees its end of stream and closes the receiver's side.
            w.close()

    async def _backward(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            await self._open.wait()
            w.write(data)
            await w.drain()

    async def _forward(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class FaultProxy(FrameProxy):
    """A proxy that understands frames well enough to damage them where a test wants it.

    ``flip_data`` flips one payload byte of the next DATA frame, ``flip_seal`` one byte of the next SEAL's
    digest, ``cut_mid_frame`` forwards half of the next DATA frame and then drops both sides.
    """

    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port)
        self.pending: list[str] = []
        self.done: list[str] = []

    async def _forward(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            prefix, header_raw, header, payload = await read_frame(r)
            fault = self.pending[0] if self.pending else None
            if fault == "flip_data" and header.get("t") == "DATA" and len(payload) > 16:
                self.pending.pop(0)
                self.done.append(fault)
                b = bytearray(payload)
                b[len(b) // 2] ^= 0x5A
                payload = bytes(b)
            elif fault == "flip_seal" and header.get("t") == "SEAL" and header["size"] > 0:
                self.pending.pop(0)
                self.done.append(fault)
                h = bytearray(header_raw)
                h[-1] ^= 0x01  # the digest is the last field of a SEAL header
                header_raw = bytes(h)
            elif fault == "cut_mid_frame" and header.get("t") == "DATA" and len(payload) > 16:
                self.pending.pop(0)
                self.done.append(fault)
                w.write(prefix + header_raw + payload[: len(payload) // 2])
                await w.drain()
                return
            w.write(prefix + header_raw + payload)
            await w.drain()


class ProxyThread:
    """Run a FaultProxy on its own event loop in a thread, so synchronous tests can steer it."""

    def __init__(self, upstream_port: int) -> None:
        self.proxy = FaultProxy(upstream_port)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self.loop).result(10)
        return self.proxy

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
