"""``no_rewind`` in the receiver's TOML: the same switch as ``--no-rewind`` (the flag wins), checked at
start like every other value (a string is a mistake: one line, exit 2)."""

from __future__ import annotations

import pytest

import receiver.__main__ as receiver_main
from receiver.config import settings_from_args
from tests.helpers.config_files import receiver_toml, run_main


def settings(argv: list[str]) -> bool:
    return settings_from_args(receiver_main.build_parser().parse_args(argv)).no_rewind


def test_no_rewind_from_toml_and_flag(files: dict[str, str]) -> None:
    assert settings(["--config", receiver_toml(files)]) is False
    assert settings(["--config", receiver_toml(files, top="no_rewind = true")]) is True
    assert settings(["--config", receiver_toml(files, top="no_rewind = false"), "--no-rewind"]) is True
    flags = ["--listen", "127.0.0.1:0", "--data-dir", files["data"], "--secret-file", files["secret"]]
    assert settings([*flags, "--no-rewind"]) is True
    assert settings(flags) is False


def test_a_quoted_no_rewind_is_one_line_and_exit_2(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    conf = receiver_toml(files, top='no_rewind = "yes"')
    code, out, err = run_main(receiver_main.main, ["--config", conf], capsys)
    assert (code, out) == (2, "")
    assert err == f"receiver: error: {conf}: no_rewind: bad switch 'yes': expected true or false (no quotes)\n", err
