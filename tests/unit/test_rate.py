"""Rates on the command line: bits per second as tc writes them, or bytes per second."""

from __future__ import annotations

import pytest

from logship.config import ConfigError, parse_rate


@pytest.mark.parametrize(
    ("text", "bytes_per_s"),
    [
        ("50mbit", 6_250_000),
        ("1gbit", 125_000_000),
        ("800kbit", 100_000),
        ("8bit", 1),
        ("1.5mbit", 187_500),
        ("6MB", 6_000_000),
        ("6MB/s", 6_000_000),
        ("2MiB", 2 * 1024 * 1024),
        ("4096", 4096),
        (" 100Mbit ", 12_500_000),
    ],
)
def test_parse_rate(text: str, bytes_per_s: float) -> None:
    assert parse_rate(text) == pytest.approx(bytes_per_s)


@pytest.mark.parametrize("text", ["", "fast", "0mbit", "-5mbit", "50 mbps", "1e6", "10xbit"])
def test_parse_rate_refuses(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_rate(text)
