"""A real ReceiverServer and a real ShipperService in the test's event loop, on 127.0.0.1 port 0, no
subprocess: the window, resume and wiring of the shipper against the receiver it talks to."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from protocol.messages import Position
from receiver.server import ReceiverServer, ServerConfig
from shipper import sender as sender_module
from shipper.sender import TargetSender, TargetState
from shipper.service import ShipperService
from shipper.settings import DEFAULT_PATTERN, SealPolicy, SenderConfig, StreamConfig, TargetConfig
from shipper.tailer import WAKE_GRID

STREAM = "db1"
SECRET = b"loopback-secret-of-32-bytes-----"
# Quick reconnects: a test that takes the receiver away waits for the sender to come back.
FAST = SenderConfig(backoff_max=0.2, connect_timeout=5.0)


def segment(i: int) -> str:
    return f"E00{i:08X}.log"


def write_segment(source: Path, i: int, size: int) -> bytes:
    data = os.urandom(size)
    (source / segment(i)).write_bytes(data)
    return data


def append(source: Path, i: int, size: int) -> bytes:
    data = os.urandom(size)
    with open(source / segment(i), "ab") as f:
        f.write(data)
    return data


async def until(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not cond():  # noqa: ASYNC110 - a sender's counters have no event to wait on
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def receiver(data_dir: Path) -> ReceiverServer:
    return ReceiverServer(ServerConfig(data_dir, lambda stream: SECRET if stream == STREAM else None))


def stream_config(source: Path, port: int, policy: SealPolicy) -> StreamConfig:
    return StreamConfig(
        STREAM,
        source,
        (TargetConfig(("127.0.0.1", port), SECRET),),
        re.compile(DEFAULT_PATTERN),
        policy,
        poll_interval=0.01,
    )


@asynccontextmanager
async def shipping(stream: StreamConfig, sender: SenderConfig) -> AsyncIterator[TargetSender]:
    """Run a ShipperService for ``stream`` until the block ends; yield its one sender."""
    service = ShipperService(stream, "loopback", sender)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        yield service.senders[0]
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task


def acked(sender: TargetSender) -> tuple[Position, bool]:
    return sender.stats.acked, sender.stats.acked_sealed


def assert_copy(data_dir: Path, expect: dict[str, bytes]) -> None:
    log = data_dir / STREAM / "log"
    assert sorted(p.name for p in log.iterdir()) == sorted(expect)
    for name, data in expect.items():
        assert (log / name).read_bytes() == data, f"{name} differs from the source"


async def ship_sealed(source: Path, data_dir: Path, sender_config: SenderConfig, last: str) -> TargetSender:
    """Ship ``source``, every segment sealed on sight, until the SEAL of ``last`` is acknowledged."""
    server = receiver(data_dir)
    _, port = await server.start("127.0.0.1", 0)
    try:
        async with shipping(stream_config(source, port, SealPolicy("immediate")), sender_config) as sender:
            end = (Position(last, (source / last).stat().st_size), True)
            await until(lambda: acked(sender) == end, f"the SEAL of {last} to be acknowledged")
            return sender
    finally:
        await server.stop()


async def test_sealed_segments_arrive_byte_for_byte(tmp_path: Path) -> None:
    source, data_dir = tmp_path / "src", tmp_path / "copy"
    source.mkdir()
    expect = {segment(i): write_segment(source, i, size) for i, size in enumerate((300_000, 0, 70_001, 2_500_000), 1)}
    sender = await ship_sealed(source, data_dir, FAST, segment(4))
    assert sender.state is TargetState.HEALTHY
    assert sender.stats.connects == 1 and sender.stats.resends == 0
    assert sender.stats.bytes_sent == sum(map(len, expect.values()))
    assert sender.stats.last_copied == segment(4) and sender.send_window.in_flight_bytes == 0
    assert_copy(data_dir, expect)


async def test_a_small_fixed_window_still_ships_everything_in_order(tmp_path: Path) -> None:
    source, data_dir = tmp_path / "src", tmp_path / "copy"
    source.mkdir()
    expect = {segment(i): write_segment(source, i, 200_000 + i) for i in (1, 2, 3)}
    small = SenderConfig(chunk_size=4096, window=16384, adaptive=False, backoff_max=0.2)
    sender = await ship_sealed(source, data_dir, small, segment(3))
    assert sender.window.window == 16384
    assert sender.stats.bytes_sent == sum(map(len, expect.values())) and sender.stats.resends == 0
    assert_copy(data_dir, expect)


async def test_a_receiver_that_goes_away_and_comes_back_is_resumed_where_it_was(tmp_path: Path) -> None:
    source, data_dir = tmp_path / "src", tmp_path / "copy"
    source.mkdir()
    # The newest segment is the active one: under the "next" policy it stays open while it grows.
    data = {segment(1): write_segment(source, 1, 400_000), segment(2): write_segment(source, 2, 150_000)}
    server = receiver(data_dir)
    _, port = await server.start("127.0.0.1", 0)
    policy = SealPolicy("next")
    async with shipping(stream_config(source, port, policy), FAST) as sender:
        await until(lambda: acked(sender) == (Position(segment(2), 150_000), False), "the active segment's bytes")
        await server.stop()
        await until(lambda: sender.state is TargetState.DISCONNECTED, "the sender to see the cut")
        # While the receiver is away the source goes on: the active segment grows, then a new one starts.
        data[segment(2)] += append(source, 2, 50_000)
        data[segment(3)] = write_segment(source, 3, 80_000)
        await asyncio.sleep(0.3)  # a reconnect attempt or two find nobody listening
        assert sender.stats.connects == 1
        server = receiver(data_dir)
        await server.start("127.0.0.1", port)
        try:
            await until(lambda: acked(sender) == (Position(segment(3), 80_000), False), "the resumed copy")
            assert sender.stats.connects == 2 and sender.state is TargetState.HEALTHY
            # Resumed at the receiver's durable position: not one byte was sent twice.
            assert sender.stats.bytes_sent == sum(map(len, data.values()))
            assert sender.stats.last_copied == segment(2)
        finally:
            await server.stop()
    assert_copy(data_dir, {segment(1): data[segment(1)], segment(2): data[segment(2)]})
    partial = data_dir / STREAM / "incoming" / f"{segment(3)}.partial"
    assert partial.read_bytes() == data[segment(3)]


async def _idle_heartbeats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: SenderConfig, seconds: float
) -> tuple[list[float], TargetSender]:
    """Ship one small sealed segment, then return when each heartbeat of ``seconds`` of idling was sent."""
    source, data_dir = tmp_path / "src", tmp_path / "copy"
    source.mkdir()
    write_segment(source, 1, 1000)
    sent: list[float] = []
    real = sender_module.heartbeat

    def counted(*args: Any) -> Any:
        sent.append(time.monotonic())
        return real(*args)

    monkeypatch.setattr(sender_module, "heartbeat", counted)
    server = receiver(data_dir)
    _, port = await server.start("127.0.0.1", 0)
    try:
        async with shipping(stream_config(source, port, SealPolicy("immediate")), config) as sender:
            await until(lambda: acked(sender) == (Position(segment(1), 1000), True), "the SEAL to be acknowledged")
            start = len(sent)
            await asyncio.sleep(seconds)
            beats = sent[start:]
    finally:
        await server.stop()
    return beats, sender


async def test_an_idle_sender_sends_one_heartbeat_per_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The source-head heartbeat and the idle one were both sent each interval (1000 idle streams: 200
    # frames a second each way instead of 100, each answered by the receiver).
    config = SenderConfig(heartbeat=0.2, backoff_max=0.2)
    beats, sender = await _idle_heartbeats(tmp_path, monkeypatch, config, 2.0)
    assert sender.stats.connects == 1
    # 10 intervals: about 10 heartbeats (a slow machine sends fewer), never two an interval.
    assert 3 <= len(beats) <= 13, f"{len(beats)} heartbeats in 2 s at a 0.2 s interval"


async def test_idle_heartbeats_fall_due_on_the_wake_grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each idle stream's heartbeat on its own timer cost a wake-up of both daemons per heartbeat (1000 idle
    # streams: most of their idle CPU); on the shared grid they go out together.
    interval = 0.4
    step = min(WAKE_GRID, interval / 8)
    beats, _ = await _idle_heartbeats(tmp_path, monkeypatch, SenderConfig(heartbeat=interval), 2.5)
    assert len(beats) >= 4, beats
    # Off the grid by a few ms at most (timer resolution); at random 1 in 3 would be, by chance.
    aligned = [t for t in beats if min(t % step, step - t % step) < 0.008]
    assert len(aligned) >= len(beats) - 1, [round(t % step, 4) for t in beats]
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert all(interval - step - 0.02 <= g <= interval + 0.05 for g in gaps), gaps
