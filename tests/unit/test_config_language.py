"""One duration, size and rate syntax for every setting, on the command line and in TOML."""

from __future__ import annotations

import pytest

from logship.config import ConfigError, parse_duration, parse_rate, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("2", 2.0),
        ("2.5", 2.5),
        ("250ms", 0.25),
        ("5s", 5.0),
        ("90s", 90.0),
        ("15m", 900.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("1m30s", 90.0),
        ("1.5d", 129600.0),
        ("2d12h", 216000.0),
        ("1s500ms", 1.5),
        (0, 0.0),
        (30, 30.0),
        (0.25, 0.25),
    ],
)
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "bad", ["", "1w", "-5s", "abc", "5 hours", "30m1h", "1h1h", "s", "1.s", True, False, -1, [], None, float("nan")]
)
def test_bad_durations_are_one_line_errors(bad: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(bad)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    assert "bad duration" in str(info.value)


@pytest.mark.parametrize(("text", "size"), [("4096", 4096), ("64k", 65536), ("16MiB", 16 << 20), (4096, 4096), (0, 0)])
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["", "1.5k", "-1", "10 furlongs", True, -5, 1.5, None])
def test_bad_sizes(bad: object) -> None:
    with pytest.raises(ConfigError, match="bad size"):
        parse_size(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "rate"), [("50mbit", 50e6 / 8), ("6MB", 6e6), ("6MiB/s", 6 << 20), (1000, 1000.0)])
def test_rates(text: str | int, rate: float) -> None:
    assert parse_rate(text) == pytest.approx(rate)


@pytest.mark.parametrize("bad", ["", "fast", "0", True, None])
def test_bad_rates(bad: object) -> None:
    with pytest.raises(ConfigError, match="bad rate"):
        parse_rate(bad)  # type: ignore[arg-type]
