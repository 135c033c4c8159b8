"""Compression, rate limit and window settings: flags for every target, TOML per target."""

from __future__ import annotations

from pathlib import Path

import pytest

from logship.config import ConfigError
from protocol.compression import Compression
from shipper.__main__ import build_parser
from shipper.config import ShipperConfig, config_from_args
from tests.helpers.source import make_secret


def _config(tmp_path: Path, *argv: str) -> ShipperConfig:
    return config_from_args(build_parser().parse_args(list(argv)))


def _flags(tmp_path: Path) -> list[str]:
    (tmp_path / "src").mkdir(exist_ok=True)
    secret = make_secret(tmp_path / "secret")
    return ["--stream", "s", "--source", str(tmp_path / "src"), "--secret-file", str(secret)]


def test_flags_apply_to_every_target(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        *_flags(tmp_path),
        "--target",
        "a:1",
        "--target",
        "b:2",
        "--compress",
        "zstd:7",
        "--rate-limit",
        "50mbit",
    )
    targets = config.streams[0].targets
    assert [t.compression for t in targets] == [Compression("zstd", 7)] * 2
    assert [t.rate_limit for t in targets] == [6_250_000] * 2
    assert config.sender.adaptive and config.sender.window_max == 64 << 20


def test_defaults_are_uncompressed_unlimited_adaptive(tmp_path: Path) -> None:
    config = _config(tmp_path, *_flags(tmp_path), "--target", "a:1")
    (target,) = config.streams[0].targets
    assert target.compression is None and target.rate_limit is None
    assert config.sender.adaptive and config.sender.window == 16 << 20


def test_fixed_window(tmp_path: Path) -> None:
    config = _config(tmp_path, *_flags(tmp_path), "--target", "a:1", "--window", "8MiB")
    assert not config.sender.adaptive and config.sender.window == 8 << 20


@pytest.mark.parametrize(
    "extra", [["--compress", "gzip"], ["--compress", "zstd:40"], ["--rate-limit", "fast"], ["--window", "big"]]
)
def test_bad_values_are_config_errors(tmp_path: Path, extra: list[str]) -> None:
    with pytest.raises(ConfigError):
        _config(tmp_path, *_flags(tmp_path), "--target", "a:1", *extra)


def test_toml_per_target_with_top_level_defaults(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    secret = make_secret(tmp_path / "secret")
    toml = tmp_path / "shipper.toml"
    toml.write_text(
        f"""
compress = "zstd"
[[stream]]
name = "s"
source = "{tmp_path / "src"}"
secret_file = "{secret}"
[[stream.target]]
address = "near:1"
compress = "none"
[[stream.target]]
address = "far:2"
rate_limit = "20mbit"
window_max = "256MiB"
"""
    )
    config = config_from_args(build_parser().parse_args(["--config", str(toml)]))
    near, far = config.streams[0].targets
    assert near.compression is None and near.rate_limit is None and near.sender is None
    assert far.compression == Compression("zstd", 3) and far.rate_limit == 2_500_000
    assert far.sender is not None and far.sender.window_max == 256 << 20


def test_toml_bad_rate_limit(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    secret = make_secret(tmp_path / "secret")
    toml = tmp_path / "shipper.toml"
    toml.write_text(
        f'[[stream]]\nname = "s"\nsource = "{tmp_path / "src"}"\nsecret_file = "{secret}"\n'
        '[[stream.target]]\naddress = "x:1"\nrate_limit = "lots"\n'
    )
    with pytest.raises(ConfigError):
        config_from_args(build_parser().parse_args(["--config", str(toml)]))


def test_each_sender_gets_its_targets_settings(tmp_path: Path) -> None:
    from shipper.service import ShipperService

    config = _config(tmp_path, *_flags(tmp_path), "--target", "a:1", "--compress", "zstd:2", "--rate-limit", "1MB")
    service = ShipperService(config.streams[0], "node", config.sender)
    (sender,) = service.senders
    assert sender.config.compression == Compression("zstd", 2)
    assert sender.config.rate_limit == 1_000_000
    assert sender.window.window == config.sender.window
