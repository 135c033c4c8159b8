"""Hypothesis against a live receiver session: after a real handshake, sequences of frames whose
headers are mutated field by field (any msgpack type), random bytes, odd length prefixes and cut-off
frames. Whatever arrives, the receiver answers or closes, keeps serving a bystander stream, and
never changes what it already stored (log/ byte for byte, and the partial's earlier bytes).

Examples: 40 in CI; LOGSHIP_FUZZ_EXAMPLES=N for a long run.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.server import ReceiverServer, ServerConfig
from tests.faults.common import FaultFigures, record
from tests.helpers.frames import data_header, raw_frame
from tests.helpers.rawclient import RawClient

SECRETS = {"s": b"s" * 32, "o": b"o" * 32}
SEG = "E0000000002.log"
EXAMPLES = int(os.environ.get("LOGSHIP_FUZZ_EXAMPLES") or 40)

packable_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what msgpack can carry
any_value = st.one_of(
    st.none(),
    st.booleans(),
    packable_ints,
    st.floats(allow_nan=True),
    st.text(max_size=300),
    st.binary(max_size=40),
    st.lists(packable_ints, max_size=3),
    st.dictionaries(st.text(max_size=5), packable_ints, max_size=3),
)
fields = st.sampled_from(["t", "stream", "seg", "off", "len", "xxh", "size", "extra"])
frames = st.one_of(
    st.tuples(st.just("mutate-data"), fields, any_value),
    st.tuples(st.just("mutate-seal"), fields, any_value),
    st.tuples(st.just("drop-field"), fields, st.none()),
    st.tuples(st.just("random"), st.binary(min_size=1, max_size=2000), st.none()),
    st.tuples(st.just("prefix"), st.integers(0, 2**32 - 1), st.binary(max_size=64)),
    st.tuples(st.just("cut"), st.integers(1, 40), st.none()),
    st.tuples(st.just("valid"), st.binary(min_size=1, max_size=3000), st.none()),
)


def build(kind: str, a: Any, b: Any, offset: int) -> bytes:
    payload = b"fuzz-payload"
    if kind == "mutate-data":
        header = data_header("s", SEG, offset, payload)
        header[a] = b
        return raw_frame(header, payload)
    if kind == "mutate-seal":
        seal: dict[str, Any] = {"t": "SEAL", "stream": "s", "seg": SEG, "size": offset, "xxh": b"\0" * 16, a: b}
        return raw_frame(seal)
    if kind == "drop-field":
        header = data_header("s", SEG, offset, payload)
        header.pop(a, None)
        return raw_frame(header, payload)
    if kind == "random":
        return a
    if kind == "prefix":
        return struct.pack(">I", a) + b
    if kind == "cut":
        return raw_frame(data_header("s", SEG, offset, payload), payload)[:a]
    return raw_frame(data_header("s", SEG, offset, a), a)


def test_live_session_survives_fuzzed_frames(tmp_path: Path) -> None:
    t0 = time.monotonic()
    loop = asyncio.new_event_loop()
    config = ServerConfig(
        data_dir=tmp_path / "data", secret_for=SECRETS.get, max_payload=64 * 1024, handshake_timeout=5
    )
    srv = ReceiverServer(config)
    _, port = loop.run_until_complete(srv.start("127.0.0.1", 0))
    sealed = os.urandom(5000)
    state: dict[str, Any] = {"examples": 0, "errors": 0, "frames": 0, "quarantined": 0, "failed": 0, "bystander": b""}

    async def prepare() -> RawClient:
        c = await RawClient.connect(port, {"s": SECRETS["s"]})
        await c.ship("s", "E0000000001.log", 0, sealed)
        await c.seal("s", "E0000000001.log", sealed)
        await c.ship("s", SEG, 0, b"head")
        await c.close()
        return await RawClient.connect(port, {"o": SECRETS["o"]}, node="bystander")

    bystander = loop.run_until_complete(prepare())
    part = tmp_path / "data" / "s" / "incoming" / f"{SEG}.partial"
    quarantine = tmp_path / "data" / "s" / "quarantine"

    async def one(example: list[tuple[str, Any, Any]]) -> None:
        before = part.read_bytes() if part.exists() else b""
        c = await RawClient.connect(port, {"s": SECRETS["s"]})
        pos = c.resumes["s"].position
        offset = pos.offset if pos.segment == SEG else 0
        for kind, a, b in example:
            c.send_raw(build(kind, a, b, offset))
            state["frames"] += 1
        try:
            await c.writer.drain()
            c.writer.write_eof()
            async with asyncio.timeout(10):
                while True:
                    msg = await c.recv(10)
                    if type(msg).__name__ == "Error":
                        state["errors"] += 1
        except (EOFError, ConnectionError, OSError):
            pass
        await c.close()
        assert (tmp_path / "data" / "s" / "log" / "E0000000001.log").read_bytes() == sealed
        after = part.read_bytes() if part.exists() else b""
        if after[: len(before)] != before:
            # The only way stored bytes may leave the partial: a SEAL whose digest does not match
            # moves the partial, whole, to quarantine/ (and the segment starts again).
            quarantined = [q.read_bytes() for q in quarantine.glob(f"{SEG}.*") if not q.name.endswith(".reason")]
            assert any(q[: len(before)] == before for q in quarantined), "bytes already stored vanished"
            state["quarantined"] += 1
        copy = srv.copies["s"]
        if copy.failed:
            # Three bad SEALs of one segment mark the copy Failed, by design; clear it as an operator
            # would, so that the fuzzing goes on.
            state["failed"] += 1
            # No transition clears it (an operator edits state.json): reach into the state directly.
            copy.state.failed = None
            await copy.save_state()
        # The bystander is served throughout.
        chunk = os.urandom(50)
        await bystander.ship("o", "E0000000001.log", len(state["bystander"]), chunk)
        state["bystander"] += chunk
        state["examples"] += 1

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        database=None,
    )
    @given(st.lists(frames, min_size=1, max_size=6))
    def fuzz(example: list[tuple[str, Any, Any]]) -> None:
        loop.run_until_complete(one(example))

    try:
        fuzz()
        o_part = tmp_path / "data" / "o" / "incoming" / "E0000000001.log.partial"
        assert o_part.read_bytes() == state["bystander"]
    finally:
        loop.run_until_complete(bystander.close())
        loop.run_until_complete(srv.stop())
        loop.close()
    seconds = round(time.monotonic() - t0, 1)
    record(
        "session_fuzz",
        [
            FaultFigures(
                "fuzzed frames into a live session (Hypothesis)",
                state["frames"],
                len(sealed),
                0,
                0,
                seconds,
                {
                    "examples": state["examples"],
                    "errors_answered": state["errors"],
                    "quarantined_by_bad_seal": state["quarantined"],
                    "failed_by_bad_seals": state["failed"],
                },
            )
        ],
    )
    print(f"\nfigures: {state['examples']} examples, {state['frames']} frames, {state['errors']} ERRORs, s={seconds}")
