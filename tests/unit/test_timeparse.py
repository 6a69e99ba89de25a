"""--timestamp parsing (RFC 3339 and "N unit ago") and the printed form of restore points."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bakelite.errors import UsageError
from bakelite.ops.timeparse import format_time, parse_timestamp

NOW = datetime(2026, 5, 30, 12, 0, 0, tzinfo=UTC).timestamp()


def utc(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-05-25T12:00:00Z", utc(2026, 5, 25, 12, 0, 0)),
        ("2026-05-25t12:00:00z", utc(2026, 5, 25, 12, 0, 0)),
        ("2026-05-25 12:00:00Z", utc(2026, 5, 25, 12, 0, 0)),
        ("2026-05-25T14:00:00+02:00", utc(2026, 5, 25, 12, 0, 0)),
        ("2026-05-25T06:30:00-05:30", utc(2026, 5, 25, 12, 0, 0)),
        ("2026-05-25T12:00:00.250Z", utc(2026, 5, 25, 12, 0, 0) + 0.25),
        ("2026-05-25T12:00:00.5+00:00", utc(2026, 5, 25, 12, 0, 0) + 0.5),
        ("  2026-05-25T12:00:00Z  ", utc(2026, 5, 25, 12, 0, 0)),
    ],
)
def test_rfc3339(text: str, expected: float) -> None:
    assert parse_timestamp(text, NOW) == pytest.approx(expected, abs=1e-6)


def test_rfc3339_keeps_sub_microsecond_digits_as_far_as_a_float_can() -> None:
    base = utc(2026, 5, 25, 12, 0, 0)
    assert parse_timestamp("2026-05-25T12:00:00.123456789Z", NOW) == pytest.approx(
        base + 0.123456789, abs=1e-6
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s ago", 90),
        ("5m ago", 300),
        ("1 hour ago", 3600),
        ("2 days ago", 172800),
        ("30 minutes ago", 1800),
        ("1.5h ago", 5400),
        ("1 day ago", 86400),
        ("10 seconds ago", 10),
        ("1 second ago", 1),
        ("3 hrs ago", 10800),
        ("250ms ago", 0.25),
        ("7d AGO", 7 * 86400),
        ("0s ago", 0),
        ("2 mins ago", 120),
    ],
)
def test_relative(text: str, seconds: float) -> None:
    assert parse_timestamp(text, NOW) == pytest.approx(NOW - seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "1 hour",
        "ago",
        "5M ago",  # not minutes, not months: refused
        "5 fortnights ago",
        "-5m ago",
        "2026-05-25",
        "2026-05-25T12:00Z",
        "2026-13-25T12:00:00Z",
        "2026-02-30T12:00:00Z",
        "2026-05-25T25:00:00Z",
        "2026-05-25T12:00:00+24:00",
        "1748606103",
        "in 5 minutes",
    ],
)
def test_rejected(text: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_timestamp(text, NOW)
    # The hint names the accepted forms.
    assert e.value.hint is not None and "RFC 3339" in e.value.hint and "ago" in e.value.hint


def test_missing_offset_says_what_to_add() -> None:
    with pytest.raises(UsageError) as e:
        parse_timestamp("2026-05-25T12:00:00", NOW)
    assert "offset" in e.value.message
    assert e.value.hint is not None and "2026-05-25T12:00:00Z" in e.value.hint


def test_usage_error_exit_code() -> None:
    with pytest.raises(UsageError) as e:
        parse_timestamp("soon", NOW)
    assert e.value.exit_code == 2


@pytest.mark.parametrize(
    ("t", "text"),
    [
        (utc(2026, 5, 30, 11, 55, 3), "2026-05-30T11:55:03Z"),
        (utc(2026, 5, 30, 11, 55, 3) + 0.25, "2026-05-30T11:55:03.250Z"),
        (utc(2026, 5, 30, 11, 55, 3) + 0.0001, "2026-05-30T11:55:03.001Z"),
        (utc(2026, 5, 30, 11, 55, 3) + 0.9999, "2026-05-30T11:55:04Z"),
    ],
)
def test_format_time(t: float, text: str) -> None:
    assert format_time(t) == text


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_printed_point_pasted_back_lands_on_it(t: float) -> None:
    # Rounded up, never down, and by less than a millisecond.
    back = parse_timestamp(format_time(t), NOW)
    assert t <= back < t + 0.0011
