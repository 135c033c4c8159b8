"""One path from flags and file to a ShipperConfig: flags are a document laid over the file's top level."""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path

import pytest
import trustme

from logship.config import ConfigError
from shipper.__main__ import build_parser
from shipper.config import DEFAULTS, config_from_args, flags_doc, from_doc, state_dir_from
from shipper.service import tls_contexts
from shipper.settings import DEFAULT_CHUNK_SIZE, DEFAULT_WINDOW, LARGE_CHUNK_SIZE, SenderConfig, TlsFiles
from tests.helpers.source import make_secret

MiB = 1024 * 1024


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "src").mkdir(exist_ok=True)
    return tmp_path / "src", make_secret(tmp_path / "secret")


def _toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "shipper.toml"
    path.write_text(text)
    return str(path)


def test_flags_and_the_same_file_give_the_same_config(tmp_path: Path) -> None:
    src, secret = _setup(tmp_path)
    flags = config_from_args(
        _parse(
            *("--stream", "s", "--source", str(src), "--secret-file", str(secret)),
            *("--target", "a:1", "--target", "b:2", "--seal", "immediate", "--epoch", "3", "--window", "8MiB"),
            *("--retain", "--truncation-lag", "1h", "--retain-until", "durable", "--compress", "zstd"),
        )
    )
    conf = _toml(
        tmp_path,
        f'window = "8MiB"\ncompress = "zstd"\n'
        f'[[stream]]\nname = "s"\nsource = "{src}"\nsecret_file = "{secret}"\nseal = "immediate"\nepoch = 3\n'
        'retain = true\ntruncation_lag = "1h"\n'
        '[[stream.target]]\naddress = "a:1"\nretain_until = "durable"\n'
        '[[stream.target]]\naddress = "b:2"\nretain_until = "durable"\n',
    )
    assert config_from_args(_parse("--config", conf)) == flags


def test_defaults_come_from_one_table(tmp_path: Path) -> None:
    src, secret = _setup(tmp_path)
    args = _parse("--stream", "s", "--source", str(src), "--secret-file", str(secret), "--target", "a:1")
    # Nothing the operator did not give is in the flags' document: the defaults are filled in by from_doc.
    assert set(flags_doc(args)) == {"stream"}
    config = config_from_args(args)
    (stream,) = config.streams
    assert DEFAULTS["chunk_size"] == "auto" and config.sender.chunk_size == LARGE_CHUNK_SIZE
    assert config.sender.window == DEFAULT_WINDOW and config.sender.adaptive
    assert config.sender.ack_timeout == DEFAULTS["ack_timeout"] == SenderConfig().ack_timeout
    assert stream.poll_interval == DEFAULTS["poll_interval"] and stream.epoch == 0 and stream.policy.mode == "next"
    assert stream.retain is False and stream.targets[0].wait_for_replay


def test_a_flag_wins_over_the_files_top_level_and_a_table_wins_over_both(tmp_path: Path) -> None:
    src, secret = _setup(tmp_path)
    conf = _toml(
        tmp_path,
        f'window = "64MiB"\nack_timeout = 9\nstate_dir = "{tmp_path}/file-st"\n'
        f'[[stream]]\nname = "s"\nsource = "{src}"\nsecret_file = "{secret}"\nretain = false\n'
        '[[stream.target]]\naddress = "a:1"\n'
        '[[stream.target]]\naddress = "b:2"\nwindow = "32MiB"\n',
    )
    config = config_from_args(
        _parse("--config", conf, "--window", "8MiB", "--retain", "--state-dir", str(tmp_path / "flag-st"))
    )
    a, b = config.streams[0].targets
    assert config.sender.window == 8 << 20 and config.sender.ack_timeout == 9
    assert a.sender is None and b.sender is not None and b.sender.window == 32 << 20
    assert config.streams[0].retain is False
    assert config.state_dir == tmp_path / "flag-st" and config.state_dir_given


def test_stream_flags_with_a_config_file_are_an_error(tmp_path: Path) -> None:
    # Issue 18 changes this: the flags used to be ignored without a word, now they are refused.
    src, secret = _setup(tmp_path)
    conf = _toml(
        tmp_path,
        f'[[stream]]\nname = "s"\nsource = "{src}"\nsecret_file = "{secret}"\n[[stream.target]]\naddress = "a:1"\n',
    )
    with pytest.raises(ConfigError, match=r"^--stream, --epoch, --target: not with --config"):
        config_from_args(_parse("--config", conf, "--stream", "other", "--target", "z:9", "--epoch", "5"))
    config = config_from_args(_parse("--config", conf, "--ack-timeout", "9s"))
    assert [(s.name, s.epoch, [t.name for t in s.targets]) for s in config.streams] == [("s", 0, ["a:1"])]
    assert config.sender.ack_timeout == 9


def test_top_level_retention_settings_in_the_file_are_every_streams(tmp_path: Path) -> None:
    src, secret = _setup(tmp_path)
    conf = _toml(
        tmp_path,
        f'retain = true\nretain_until = "durable"\n'
        f'[[stream]]\nname = "s"\nsource = "{src}"\nsecret_file = "{secret}"\n[[stream.target]]\naddress = "a:1"\n',
    )
    config = from_doc(tomllib.loads(Path(conf).read_text()), conf)
    assert config.streams[0].retain and not config.streams[0].targets[0].wait_for_replay


def test_errors_keep_their_words(tmp_path: Path) -> None:
    src, secret = _setup(tmp_path)
    base = ("--stream", "s", "--source", str(src), "--secret-file", str(secret), "--target", "a:1")
    with pytest.raises(ConfigError, match=r"^missing --source, --target \(or give --config FILE\)$"):
        config_from_args(_parse("--stream", "s", "--secret-file", str(secret)))
    with pytest.raises(ConfigError, match=r"^command line: a TLS key needs a TLS certificate$"):
        config_from_args(_parse(*base, "--tls-key", str(secret)))
    conf = _toml(tmp_path, 'window = "8MiB"\nwindows = 1\n')
    with pytest.raises(ConfigError, match=f"^{conf}: unknown setting\\(s\\) windows$"):
        config_from_args(_parse("--config", conf))
    with pytest.raises(ConfigError, match="cannot read config file"):
        config_from_args(_parse("--config", str(tmp_path / "none.toml")))
    conf = _toml(tmp_path, f'[[stream]]\nname = "s"\nsource = "{src}"\n[[stream.target]]\naddress = "a:1"\n')
    with pytest.raises(ConfigError, match=f"^{conf}: stream s: target a:1 has no secret_file$"):
        config_from_args(_parse("--config", conf))


def test_tls_files_are_loaded_by_the_wiring_with_the_same_errors(tmp_path: Path) -> None:
    src, secret = _setup(tmp_path)
    ca = trustme.CA()
    ca_pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    base = ("--stream", "s", "--source", str(src), "--secret-file", str(secret), "--target", "a:1", "--target", "b:2")
    config = config_from_args(_parse(*base, "--tls-ca", str(ca_pem)))
    a, b = config.streams[0].targets
    assert a.tls == b.tls == TlsFiles(None, None, ca_pem)
    contexts = tls_contexts(config.streams)
    assert list(contexts) == [a.tls]
    config = config_from_args(_parse(*base, "--tls-ca", str(tmp_path / "missing.pem")))
    with pytest.raises(ConfigError, match=r"^TLS: cannot read"):
        tls_contexts(config.streams)


def test_operator_commands_find_the_state_dir_the_same_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGSHIP_SHIPPER_STATE_DIR", str(tmp_path / "env"))
    conf = _toml(tmp_path, f'state_dir = "{tmp_path}/file"\n')
    assert state_dir_from(None, None) == tmp_path / "env"
    assert state_dir_from(None, conf) == tmp_path / "file"
    assert state_dir_from(str(tmp_path / "flag"), conf) == tmp_path / "flag"
    with pytest.raises(ConfigError, match="cannot read config file"):
        state_dir_from(None, str(tmp_path / "none.toml"))


def test_history_file_gives_the_history_and_the_epoch(tmp_path: Path) -> None:
    src, secret = _setup(tmp_path)
    history = tmp_path / "history.json"
    fork = {"epoch": 2, "fork": {"seg": "E1", "off": 5}, "xxh": "00" * 16}
    history.write_text('{"stream": "s", "history": [' + json.dumps(fork) + "]}")
    base = ("--stream", "s", "--source", str(src), "--secret-file", str(secret), "--target", "a:1")
    (stream,) = config_from_args(_parse(*base, "--history", str(history))).streams
    assert stream.epoch == 2 and stream.history.epoch == 2
    assert stream.history.forks[0].position is not None and stream.history.forks[0].position.offset == 5
    (stream,) = config_from_args(_parse(*base, "--history", str(history), "--epoch", "3")).streams
    assert stream.epoch == 3
    with pytest.raises(ConfigError, match="older than the history's epoch 2"):
        config_from_args(_parse(*base, "--history", str(history), "--epoch", "1"))
    history.write_text('{"stream": "other", "history": []}')
    with pytest.raises(ConfigError, match="history of stream 'other'"):
        config_from_args(_parse(*base, "--history", str(history)))
    with pytest.raises(ConfigError, match="cannot read history file"):
        config_from_args(_parse(*base, "--history", str(tmp_path / "missing.json")))


@pytest.mark.parametrize(
    ("flags", "chunk", "window_min"),
    [
        ((), LARGE_CHUNK_SIZE, 8 * MiB),  # adaptive: half its 8 MiB floor
        (("--window-max", "4MiB"), 2 * MiB, 4 * MiB),  # a lower cap lowers the floor, and the chunk with it
        (("--window", "16MiB"), LARGE_CHUNK_SIZE, None),
        (("--window", "1MiB"), DEFAULT_CHUNK_SIZE, None),  # never below 1 MiB while the window holds it
        (("--window", "512KiB"), 512 * 1024, None),  # nor above a fixed window (was refused: window < chunk)
        (("--window", "16MiB", "--chunk-size", "1MiB"), DEFAULT_CHUNK_SIZE, None),  # a given size wins
        (("--chunk-size", "auto"), LARGE_CHUNK_SIZE, 8 * MiB),
    ],
)
def test_auto_chunk_size_is_half_the_smallest_window(
    tmp_path: Path, flags: tuple[str, ...], chunk: int, window_min: int | None
) -> None:
    src, secret = _setup(tmp_path)
    config = config_from_args(
        _parse("--stream", "s", "--source", str(src), "--secret-file", str(secret), "--target", "a:1", *flags)
    )
    assert config.sender.chunk_size == chunk
    if window_min is not None:
        assert config.sender.adaptive and config.sender.window_min == window_min
    assert config.sender.chunk_size <= min(config.sender.window, config.sender.window_min)
