"""One connection fills a 100 Mbit/s, 50 ms link (>= 0.9 of the rate on incompressible data).

A minute of load on a 2-core machine, so it runs only with LOGSHIP_HEAVY=1; the same measurement by
hand: scripts/wan ship --rate 100mbit --rtt 50ms --size 256MiB --data random.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.wan.conftest import lab_for_tests
from tests.wan.lab import Wan
from tests.wan.ship import ship

pytestmark = pytest.mark.skipif(
    os.environ.get("LOGSHIP_HEAVY") != "1", reason="heavy: set LOGSHIP_HEAVY=1 (about a minute of a 100 Mbit/s link)"
)


@pytest.fixture
def link() -> Iterator[Wan]:
    yield from lab_for_tests(f"h{os.getpid()}-", 100e6, 0.05)


def _args(**kw: object) -> argparse.Namespace:
    base = {
        "size": "192MiB",
        "segment_size": "16MiB",
        "data": "random",
        "compress": None,
        "rate_limit": None,
        "shipper_args": "",
        "timeout": 300,
    }
    base.update(kw)
    return argparse.Namespace(**base)


def test_one_connection_fills_100mbit_50ms(link: Wan, tmp_path: Path) -> None:
    figures = ship(link, tmp_path, _args())
    print(f"\nfigures: {figures}")
    assert figures["fraction_of_link"] >= 0.9  # type: ignore[operator]


def test_rate_limit_across_the_link(link: Wan, tmp_path: Path) -> None:
    figures = ship(link, tmp_path, _args(size="64MiB", rate_limit="40mbit"))
    print(f"\nfigures: {figures}")
    assert 0.3 <= figures["fraction_of_link"] <= 0.42  # type: ignore[operator]
