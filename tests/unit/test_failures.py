import errno

import pytest

from protocol.errors import ErrorCode
from protocol.failures import ERROR_CODES, FAILURES, Kind, classify, classify_os_error
from shipper.handshake import BACK_OFF_CODES

T, P = Kind.TRANSIENT, Kind.PERMANENT


@pytest.mark.parametrize(
    ("failure", "kind"),
    [
        ("chunk digest mismatch", T),
        ("connection lost", T),
        ("timeout", T),
        ("peer restart", T),
        ("disk full", T),
        ("io error", T),
        ("another shipper", T),
        ("receiver busy", T),
        ("segment digest mismatch", P),
        ("sealed source changed", P),
        ("inspector veto", P),
        ("chain gap", P),
        ("something nobody named", P),
    ],
)
def test_table(failure: str, kind: Kind) -> None:
    assert classify(failure) is kind


def test_every_named_failure_is_in_the_table_above() -> None:
    assert len(FAILURES) == 12


@pytest.mark.parametrize(
    ("code", "kind"), [(errno.ENOSPC, T), (errno.EIO, T), (errno.EDQUOT, T), (errno.ENOENT, P), (errno.EACCES, P)]
)
def test_os_errors(code: int, kind: Kind) -> None:
    assert classify_os_error(OSError(code, "x")) is kind


def test_the_codes_a_shipper_backs_off_from_are_the_transient_ones() -> None:
    assert set(BACK_OFF_CODES) == set(ERROR_CODES)
    assert all(code in set(ErrorCode) for code in ERROR_CODES)
    assert all(classify(failure) is T for failure in ERROR_CODES.values())
