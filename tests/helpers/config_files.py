"""Config files for the unit tests of both daemons' settings: the paths they name, the TOML written, and
a daemon's ``main`` run in this process."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.source import make_secret


def config_files(tmp_path: Path) -> dict[str, str]:
    """A source dir, an archive dir and a secret under ``tmp_path``, and where a data dir goes: the paths the
    config tests write into their TOML files."""
    (tmp_path / "src").mkdir()
    (tmp_path / "archive").mkdir()
    return {
        "src": str(tmp_path / "src"),
        "archive": str(tmp_path / "archive"),
        "secret": str(make_secret(tmp_path / "secret")),
        "data": str(tmp_path / "data"),
        "dir": str(tmp_path),
    }


def run_main(main: object, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run a daemon's ``main(argv)`` in this process; argparse's exits become exit codes too."""
    try:
        code = main(argv)  # type: ignore[operator]
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def shipper_toml(files: dict[str, str], top: str = "", stream: str = "", target: str = "") -> str:
    """Write a shipper TOML of stream s (one target) with ``top``, ``stream`` and ``target`` lines added."""
    path = Path(files["dir"]) / "shipper.toml"
    path.write_text(
        f'{top}\n[[stream]]\nname = "s"\nsource = "{files["src"]}"\nsecret_file = "{files["secret"]}"\n'
        f'{stream}\n[[stream.target]]\naddress = "127.0.0.1:1"\n{target}\n'
    )
    return str(path)


def receiver_toml(files: dict[str, str], top: str = "", stream: str = "") -> str:
    """Write a receiver TOML of stream s with ``top`` and ``stream`` lines added."""
    path = Path(files["dir"]) / "receiver.toml"
    path.write_text(
        f'listen = "127.0.0.1:0"\ndata_dir = "{files["data"]}"\nsecret_file = "{files["secret"]}"\n{top}\n'
        f"[streams.s]\n{stream}\n"
    )
    return str(path)
