"""Every setting is checked at start: a bad value in either daemon's TOML or flags is one stderr line
naming file, table and key (or the flag) and the expected form, and exit status 2 (issue 18)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import receiver.__main__ as receiver_main
import shipper.__main__ as shipper_main
from logship.version import version
from receiver.config import settings_from_args
from receiver.space_config import MinFree
from shipper.config import config_from_args
from tests.helpers.config_files import receiver_toml, run_main, shipper_toml

# (where the bad value goes, the TOML line, the words the one line must hold after "FILE: ")
SHIPPER_FILE_CASES = [
    ("stream", 'epoch = "one"', r"stream s: epoch: bad number 'one': expected a whole number"),
    ("stream", "epoch = -1", r"stream s: epoch: bad number -1"),
    ("stream", "seal_idle = true", r"stream s: seal_idle: bad duration True: expected e\.g\. 0, 250ms"),
    ("stream", 'seal_idle = "5 hours"', r"stream s: seal_idle: bad duration '5 hours'"),
    ("stream", 'seal = "sometimes"', r"bad seal mode 'sometimes': expected next, closed or immediate"),
    ("stream", 'segment_size = "huge"', r"stream s: segment_size: bad size 'huge': expected e\.g\. 4096"),
    ("stream", 'retain = "yes"', r"stream s: retain: bad switch 'yes': expected true or false"),
    ("stream", 'truncation_lag = "1h"', r"stream s: archive_dir and truncation_lag only apply with retain = true"),
    ("top", 'ack_timeout = "30x"', r"ack_timeout: bad duration '30x'"),
    ("top", "poll_interval = false", r"poll_interval: bad duration False"),
    ("top", 'window = "lots"', r"window: bad size 'lots'"),
    ("top", "node = 7", r"node: bad value 7: expected a non-empty string"),
    ("top", 'archive_dir = "/tmp"', r"archive_dir only apply with retain = true, which no stream has"),
    ("target", 'rate_limit = "fast"', r"stream s target 127\.0\.0\.1:1: rate_limit: bad rate 'fast'"),
    ("target", "compress = 3", r"stream s target 127\.0\.0\.1:1: compress: bad value 3"),
    ("target", "chunk_size = -5", r"stream s target 127\.0\.0\.1:1: chunk_size: bad size -5"),
]


@pytest.mark.parametrize(("table", "line", "words"), SHIPPER_FILE_CASES)
def test_a_bad_shipper_toml_value_is_one_line_and_exit_2(
    files: dict[str, str], capsys: pytest.CaptureFixture[str], table: str, line: str, words: str
) -> None:
    conf = shipper_toml(files, **{table: line})
    code, out, err = run_main(shipper_main.main, ["--config", conf], capsys)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1, err
    assert re.match(rf"shipper: error: {re.escape(conf)}: .*{words}", err), err


def test_an_archive_dir_that_is_the_source_is_refused(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    conf = shipper_toml(files, stream=f'retain = true\narchive_dir = "{files["src"]}"')
    code, _, err = run_main(shipper_main.main, ["--config", conf], capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"stream s: archive_dir {files['src']} is the source directory itself" in err


def shipper_flags(files: dict[str, str], *more: str) -> list[str]:
    return [
        "--stream",
        "s",
        "--source",
        files["src"],
        "--target",
        "127.0.0.1:1",
        "--secret-file",
        files["secret"],
        *more,
    ]


SHIPPER_FLAG_CASES = [
    (["--seal-idle", "5x"], r"--seal-idle: bad duration '5x'"),
    (["--ack-timeout", "soon"], r"--ack-timeout: bad duration 'soon'"),
    (["--poll-interval=-1s"], r"--poll-interval: bad duration '-1s'"),
    (["--epoch", "one"], r"--epoch: bad number 'one'"),
    (["--window", "big"], r"--window: bad size 'big'"),
    (["--archive-dir", "/tmp"], r"--archive-dir only apply with --retain"),
    (["--truncation-lag", "1h"], r"--truncation-lag only apply with --retain"),
    (["--targe", "127.0.0.1:2"], r"unrecognized arguments: --targe 127\.0\.0\.1:2 \(see python -m shipper --help\)"),
    (["--seal", "often"], r"argument --seal: invalid choice: 'often'"),
]


@pytest.mark.parametrize(("more", "words"), SHIPPER_FLAG_CASES)
def test_a_bad_shipper_flag_is_one_line_and_exit_2(
    files: dict[str, str], capsys: pytest.CaptureFixture[str], more: list[str], words: str
) -> None:
    code, out, err = run_main(shipper_main.main, shipper_flags(files, *more), capsys)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1, err
    assert re.search(words, err), err


@pytest.mark.parametrize("flag", [["--stream", "t"], ["--source", "/x"], ["--target", "h:1"], ["--seal-idle", "1"]])
def test_stream_flags_beside_a_config_file_are_refused(
    files: dict[str, str], capsys: pytest.CaptureFixture[str], flag: list[str]
) -> None:
    code, _, err = run_main(shipper_main.main, ["--config", shipper_toml(files), *flag], capsys)
    assert (
        code == 2 and err == f"shipper: error: {flag[0]}: not with --config (the file's [[stream]] tables say that)\n"
    )


def test_every_shipper_time_setting_takes_the_duration_syntax(files: dict[str, str]) -> None:
    conf = shipper_toml(
        files,
        top='ack_timeout = "1m30s"\npoll_interval = "250ms"',
        stream=f'seal_idle = "5s"\nretain = true\narchive_dir = "{files["archive"]}"\ntruncation_lag = "1h30m"',
    )
    config = config_from_args(shipper_main.build_parser().parse_args(["--config", conf]))
    (stream,) = config.streams
    assert (config.sender.ack_timeout, stream.poll_interval) == (90.0, 0.25)
    assert (stream.policy.seal_idle, stream.truncation_lag) == (5.0, 5400.0)
    flags = shipper_flags(files, "--seal-idle", "250ms", "--ack-timeout", "2m", "--poll-interval", "1s")
    config = config_from_args(shipper_main.build_parser().parse_args(flags))
    assert (config.streams[0].policy.seal_idle, config.sender.ack_timeout, config.streams[0].poll_interval) == (
        0.25,
        120.0,
        1.0,
    )


RECEIVER_FILE_CASES = [
    ("stream", 'replay_retries = "three"', r"streams\.s: replay_retries: bad number 'three'"),
    ("stream", 'replay_lag = "1h30"', r"streams\.s: replay_lag: bad duration '1h30'"),
    ("stream", "replay_backoff = true", r"streams\.s: replay_backoff: bad duration True"),
    ("stream", "secret_file = 5", r"streams\.s: secret_file: bad value 5"),
    ("top", "idle_timeout = true", r"idle_timeout: bad duration True"),
    ("top", 'handshake_timeout = "soon"', r"handshake_timeout: bad duration 'soon'"),
    ("top", "max_unauthenticated = -1", r"max_unauthenticated: bad number -1"),
    ("top", 'max_payload = "big"', r"max_payload: bad size 'big'"),
    ("top", "replay_retries = 1.5", r"replay_retries: bad number 1\.5"),
    ("top", "admin = 9100", r"admin: bad value 9100: expected a non-empty string"),
    ("top", 'min_free = "lots"', r"min_free: bad min_free 'lots'"),
]


@pytest.mark.parametrize(("table", "line", "words"), RECEIVER_FILE_CASES)
def test_a_bad_receiver_toml_value_is_one_line_and_exit_2(
    files: dict[str, str], capsys: pytest.CaptureFixture[str], table: str, line: str, words: str
) -> None:
    conf = receiver_toml(files, **{table: line})
    code, out, err = run_main(receiver_main.main, ["--config", conf], capsys)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1, err
    assert re.match(rf"receiver: error: {re.escape(conf)}: {words}", err), err


def test_a_stream_name_the_wire_refuses_is_refused_at_start(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = Path(receiver_toml(files))
    path.write_text(path.read_text().replace("[streams.s]", '[streams."a..b"]'))
    code, _, err = run_main(receiver_main.main, ["--config", str(path)], capsys)
    assert code == 2 and f"{path}: bad stream name 'a..b'" in err
    code, _, err = run_main(shipper_main.main, ["--stream", "a..b", *shipper_flags(files)[2:]], capsys)
    assert code == 2 and "bad stream name 'a..b'" in err and err.count("\n") == 1


RECEIVER_FLAG_CASES = [
    (["--idle-timeout", "5x"], r"--idle-timeout: bad duration '5x'"),
    (["--handshake-timeout", "1m1h"], r"--handshake-timeout: bad duration .1m1h.: units largest first"),
    (["--replay-lag", "later"], r"--replay-lag: bad duration 'later'"),
    (["--replay-retries", "three"], r"--replay-retries: bad number 'three'"),
    (["--max-unauthenticated", "-3"], r"--max-unauthenticated: bad number '-3'"),
    (["--min-free", "120%"], r"--min-free: bad min_free '120%'"),
    (["--listn", "127.0.0.1:1"], r"unrecognized arguments: --listn"),
]


@pytest.mark.parametrize(("more", "words"), RECEIVER_FLAG_CASES)
def test_a_bad_receiver_flag_is_one_line_and_exit_2(
    files: dict[str, str], capsys: pytest.CaptureFixture[str], more: list[str], words: str
) -> None:
    argv = ["--listen", "127.0.0.1:0", "--data-dir", files["data"], "--secret-file", files["secret"], *more]
    code, out, err = run_main(receiver_main.main, argv, capsys)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1, err
    assert re.search(words, err), err


def test_every_receiver_time_setting_takes_the_duration_syntax(files: dict[str, str]) -> None:
    conf = receiver_toml(files, top='idle_timeout = "90s"\nhandshake_timeout = "2.5s"', stream='replay_lag = "1h30m"')
    argv = ["--config", conf, "--replay-lag", "1h30m", "--replay-backoff", "250ms", "--replay-retries", "5"]
    settings = settings_from_args(receiver_main.build_parser().parse_args(argv))
    assert (settings.idle_timeout, settings.handshake_timeout) == (90.0, 2.5)
    assert (settings.replay.lag, settings.replay.backoff, settings.replay.retries) == (5400.0, 0.25, 5)
    assert settings.replay_for("s").lag == 5400.0


def test_min_free_from_the_file_and_the_flag(files: dict[str, str]) -> None:
    conf = receiver_toml(files, top='min_free = "2%"')
    parse = receiver_main.build_parser().parse_args
    assert settings_from_args(parse(["--config", conf])).min_free == MinFree(percent=2.0)
    assert settings_from_args(parse(["--config", conf, "--min-free", "1GiB"])).min_free == MinFree(size=1 << 30)


@pytest.mark.parametrize("main", [shipper_main.main, receiver_main.main])
def test_version(main: object, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(main, ["--version"], capsys)
    assert (code, out) == (0, f"logship {version()}\n")
    assert version() != "unknown"  # the tests run from an installed (editable) tree
