"""One TOML shape for both daemons' files, [streams.NAME], with the older [[stream]] + name = accepted
by both, so no existing file breaks; mixing the two in one file is an error."""

from __future__ import annotations

from pathlib import Path

import pytest

import receiver.__main__ as receiver_main
import shipper.__main__ as shipper_main
from logship.config import ConfigError
from receiver.config import settings_from_args
from shipper.config import config_from_args

LISTED = '[[stream]]\nname = "s"\n{body}'
NAMED = "[streams.s]\n{body}"


def write(files: dict[str, str], name: str, text: str) -> str:
    path = Path(files["dir"]) / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("shape", [LISTED, NAMED], ids=["[[stream]]", "[streams.NAME]"])
def test_shipper_takes_both_shapes(files: dict[str, str], shape: str) -> None:
    body = f'source = "{files["src"]}"\nsecret_file = "{files["secret"]}"\n'
    target = "[[stream.target]]" if shape is LISTED else "[[streams.s.target]]"
    conf = write(files, "shipper.toml", shape.format(body=body) + f'{target}\naddress = "127.0.0.1:1"\n')
    config = config_from_args(shipper_main.build_parser().parse_args(["--config", conf]))
    assert [s.name for s in config.streams] == ["s"]
    assert [t.name for t in config.streams[0].targets] == ["127.0.0.1:1"]


@pytest.mark.parametrize("shape", [LISTED, NAMED], ids=["[[stream]]", "[streams.NAME]"])
def test_receiver_takes_both_shapes(files: dict[str, str], shape: str) -> None:
    top = f'listen = "127.0.0.1:0"\ndata_dir = "{files["data"]}"\nsecret_file = "{files["secret"]}"\n'
    conf = write(files, "receiver.toml", top + shape.format(body='replay_lag = "90s"\n'))
    settings = settings_from_args(receiver_main.build_parser().parse_args(["--config", conf]))
    assert list(settings.streams) == ["s"]
    assert settings.streams["s"].replay is not None and settings.streams["s"].replay.lag == 90


def test_mixing_the_shapes_is_one_line(files: dict[str, str]) -> None:
    top = f'listen = "127.0.0.1:0"\ndata_dir = "{files["data"]}"\nsecret_file = "{files["secret"]}"\n'
    conf = write(files, "receiver.toml", top + LISTED.format(body="") + "\n" + NAMED.format(body=""))
    with pytest.raises(ConfigError, match=r"both \[\[stream\]\] and \[streams.NAME\] tables"):
        settings_from_args(receiver_main.build_parser().parse_args(["--config", conf]))
