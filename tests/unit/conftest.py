"""Fixtures of the unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.config_files import config_files


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """The paths a config test's TOML names (tests/helpers/config_files.py), created under tmp_path."""
    return config_files(tmp_path)
