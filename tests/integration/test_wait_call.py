"""``await Shipper.wait_durable(...)`` in the running service, against a real receiver process: an
application appends, waits, and finds the bytes on the receiver's disk; the stream's ``sync`` setting
is the default policy."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from shipper.config import from_doc
from shipper.daemon import Shipper
from shipper.wait import WaitUsageError
from tests.helpers.procs import Proc, receiver_proc
from tests.helpers.source import segment_name


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def test_wait_durable_call(tmp_path: Path, secret: Path, procs: list[Proc]) -> None:
    receivers = [receiver_proc(tmp_path, secret, name=f"r{i}").start() for i in range(2)]
    procs += receivers
    source = tmp_path / "src"
    source.mkdir()
    stream = {
        "name": "db",
        "source": str(source),
        "secret_file": str(secret),
        # The default policy: both targets.
        "sync": f"ANY 2 ({receivers[0].address}, {receivers[1].address})",
        "target": [{"address": r.address} for r in receivers],
    }
    config = from_doc({"node": "t", "stream": [stream]})

    async def scenario() -> None:
        shipper = Shipper(config, None)
        stop = asyncio.Event()
        running = asyncio.create_task(shipper.services["db"].run(stop))
        try:
            seg = segment_name(1)
            data = b""
            async with asyncio.timeout(120):
                for _ in range(20):
                    chunk = os.urandom(4096)
                    append(source / seg, chunk)
                    data += chunk
                    result = await shipper.wait_durable("db", seg, len(data), timeout=60)
                    assert result["outcome"] == "satisfied", result
                    assert result["policy"].startswith("ANY 2")
                    for i in range(2):
                        partial = tmp_path / f"r{i}" / "db" / "incoming" / f"{seg}.partial"
                        assert partial.read_bytes()[: len(data)] == data
                # Not yet appended: times out, naming both targets as behind by the bytes to come.
                result = await shipper.wait_durable("db", seg, len(data) + 1, timeout=0.3)
                assert result["outcome"] == "timeout"
                assert sorted(m["behind_bytes"] for m in result["missing"]) == [1, 1]
                assert result["source"] == f"the source has {len(data)} bytes of it so far"
                with pytest.raises(WaitUsageError, match="does not have"):
                    await shipper.wait_durable("db", seg, 1, require="ANY 1 (127.0.0.1:1)")
                with pytest.raises(WaitUsageError, match="no stream"):
                    await shipper.wait_durable("other", seg, 1)
        finally:
            stop.set()
            await running

    asyncio.run(scenario())


def test_sync_setting_is_checked_against_the_targets(tmp_path: Path, secret: Path) -> None:
    from logship.config import ConfigError

    stream = {"name": "db", "source": str(tmp_path), "secret_file": str(secret), "target": [{"address": "h:1"}]}
    assert from_doc({"stream": [{**stream, "sync": "ALL"}]}).streams[0].sync == "ALL"
    assert from_doc({"stream": [stream]}).streams[0].sync is None
    with pytest.raises(ConfigError, match=r"sync: .*names target"):
        from_doc({"stream": [{**stream, "sync": "FIRST 1 (h:2)"}]})
    with pytest.raises(ConfigError, match="bad sync policy"):
        from_doc({"stream": [{**stream, "sync": "MOST"}]})
