"""bakelite.units: durations always need a unit; sizes accept bytes, SI and IEC; printing never fails."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bakelite.errors import ConfigError
from bakelite.units import DURATION_UNITS, format_duration, format_size, parse_duration, parse_size

SI = {"kB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4}
IEC = {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}

_numeric_strings = st.one_of(
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.from_regex(r"\A\s*[0-9]{1,6}(\.[0-9]{1,3})?\s*\Z"),
)


@given(st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.booleans()))
def test_bare_numbers_are_never_durations(value: object) -> None:
    with pytest.raises(ConfigError):
        parse_duration(value, key="defaults.debounce")


@given(_numeric_strings)
@example("250")
@example(" 30 ")
@example("1.5")
@example("nan")
@example("inf")
def test_numeric_strings_are_never_durations(value: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(value)


def test_bare_number_message_names_the_key_and_units() -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(250, key="database[app].debounce")
    assert info.value.message.startswith("database[app].debounce: ")
    assert info.value.hint is not None and "ms, s (sec, secs), m (min, mins)" in info.value.hint


@pytest.mark.parametrize(
    ("text", "seconds"), [(f"3{unit}", 3 * factor) for unit, factor in DURATION_UNITS.items()]
)
def test_every_duration_unit(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@given(st.integers(min_value=0, max_value=10**12))
@example(9)
def test_duration_round_trips_whole_milliseconds(ms: int) -> None:
    seconds = ms / 1000
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.integers(min_value=0, max_value=10**12))
def test_formatted_durations_are_readable_and_close(ms: int) -> None:
    seconds = ms / 1000
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, rel=1e-12, abs=1e-12)


@given(st.integers(min_value=0, max_value=2**20), st.sampled_from(sorted({**SI, **IEC})))
def test_sizes_round_trip_both_unit_families(n: int, unit: str) -> None:
    assert parse_size(f"{n}{unit}") == n * {**SI, **IEC}[unit]


@given(st.integers(min_value=0, max_value=2**62))
def test_integer_byte_counts_are_sizes(n: int) -> None:
    assert parse_size(n) == n


@given(st.integers(min_value=0, max_value=2**62))
def test_string_byte_counts_are_sizes(n: int) -> None:
    assert parse_size(str(n)) == n


@pytest.mark.parametrize("value", [-1, True, 1.5, "16 parsecs", "MiB", "1.0000001kB", None])
def test_bad_sizes(value: object) -> None:
    with pytest.raises(ConfigError):
        parse_size(value, key="defaults.max_wal_size")


@given(st.integers())
def test_format_size_never_crashes(n: int) -> None:
    assert isinstance(format_size(n), str)


def test_format_size_examples() -> None:
    assert format_size(0) == "0 B"
    assert format_size(1023) == "1023 B"
    assert format_size(1024) == "1.00 KiB"
    assert format_size(146 * 1024) == "146 KiB"
    assert format_size(1024**2) == "1.00 MiB"
