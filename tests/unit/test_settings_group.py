"""The per-stream settings groups (receiver/settings_group.py) as replay and retention use them: the file's
top level, then the flags, make the defaults; a stream's table overrides them; errors name file, table, key."""

from __future__ import annotations

import argparse

import pytest

from logship.config import ConfigError
from receiver.replay_config import replay_from_doc
from receiver.retention_config import RetentionSettings, retention_from_doc

REPLAY, RETENTION = replay_from_doc, retention_from_doc


def test_flags_override_the_file_and_a_stream_table_overrides_both() -> None:
    doc = {"truncation_lag": "1h", "keep_min": 4, "streams": {"db1": {"keep_min": 7}, "db2": {"secret_file": "s"}}}
    default, own = RETENTION(doc, argparse.Namespace(truncation_lag="2h", keep_min=None), "f.toml")
    assert default == RetentionSettings(truncation_lag=7200.0, keep_min=4)
    assert own == {"db1": RetentionSettings(truncation_lag=7200.0, keep_min=7)}  # db2 has none of its own


@pytest.mark.parametrize(
    "group, doc, error",
    [
        (RETENTION, {"keep_min": "many"}, "f.toml: keep_min: "),
        (RETENTION, {"keep": "some"}, "f.toml: keep must be one of replayed, all, not 'some'"),
        (RETENTION, {"streams": {"db1": {"truncation_lag": "soon"}}}, "f.toml: streams.db1: truncation_lag: "),
        (RETENTION, {"streams": {"db1": 3}}, "f.toml: streams.db1 must be a table"),
        (REPLAY, {"replay": "tape"}, "replay: replay must be one of directory, command, not 'tape'"),
        (REPLAY, {"replay_lag": "later"}, "f.toml: replay_lag: "),
        (REPLAY, {"streams": {"db1": {"replay_rerun": "maybe"}}}, "f.toml: streams.db1: replay_rerun must be one of"),
    ],
)
def test_a_bad_value_is_one_error_naming_where(group: object, doc: dict[str, object], error: str) -> None:
    with pytest.raises(ConfigError) as e:
        group(doc, argparse.Namespace(), "f.toml")  # type: ignore[operator]
    assert str(e.value).startswith(error), str(e.value)


def test_a_bad_flag_names_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"^--replica-keep: "):
        RETENTION({}, argparse.Namespace(replica_keep="lots"), "f.toml")
