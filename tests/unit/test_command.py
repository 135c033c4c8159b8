"""The ``logship`` console command sends each command to the side it belongs to."""

from __future__ import annotations

from pathlib import Path

import pytest

from logship import command


@pytest.mark.parametrize(
    ("cmd", "argv", "side"),
    [
        ("activate", ["--stream", "s"], "receiver"),
        ("fence", ["--stream", "s", "--epoch", "1"], "receiver"),
        ("wait", ["--stream", "s"], "shipper"),
        ("status", [], "shipper"),
        ("status", ["--state-dir", "/x"], "shipper"),
        ("status", ["--data-dir", "/x"], "receiver"),
        ("status", ["--data-dir=/x"], "receiver"),
        ("suspend", ["--stream", "s", "--target", "h:1"], "shipper"),
        ("suspend", ["--stream", "s", "--data-dir", "/x"], "receiver"),
    ],
)
def test_side_of(cmd: str, argv: list[str], side: str) -> None:
    assert command.side_of(cmd, argv) == side


def test_config_with_data_dir_is_the_receivers(tmp_path: Path) -> None:
    receiver, shipper = tmp_path / "r.toml", tmp_path / "s.toml"
    receiver.write_text('data_dir = "/var/lib/x"\n')
    shipper.write_text('[[stream]]\nname = "a"\n')
    assert command.side_of("status", ["--config", str(receiver)]) == "receiver"
    assert command.side_of("status", ["--config", str(shipper)]) == "shipper"


def test_version_and_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert command.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("logship ")
    assert command.main([]) == 2
    assert "usage: logship COMMAND" in capsys.readouterr().out
    assert command.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_ship_and_receive_reach_the_daemons_parsers(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd, words in (("ship", "Tail a stream's log directory"), ("receive", "Accept shippers over TCP")):
        with pytest.raises(SystemExit) as info:
            command.main([cmd, "--help"])
        assert info.value.code == 0
        assert words in capsys.readouterr().out


def test_loadgen_writes_segments(tmp_path: Path) -> None:
    assert command.main(["loadgen", "--dir", str(tmp_path), "--segments", "2", "--segment-size", "4096"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["E0000000001.log", "E0000000002.log"]
    assert all(p.stat().st_size == 4096 for p in tmp_path.iterdir())


def test_ha_is_routed_to_the_agent_and_refuses_a_missing_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert command.main(["ha", "--config", str(tmp_path / "absent.toml")]) == 2
    assert "absent.toml" in capsys.readouterr().err
