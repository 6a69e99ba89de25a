"""Durations and byte sizes: parsing what users write and printing what they read.

Durations always need a unit (a bare ``250`` could mean ms or s: a 1000x footgun); sizes accept raw
byte counts, SI units (1000-based) and IEC units (1024-based).
"""

from __future__ import annotations

import re
from decimal import Decimal

from bakelite.errors import ConfigError

DURATION_UNITS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hrs": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
}
DURATION_UNITS_TEXT = "ms, s (sec, secs), m (min, mins), h (hr, hrs), d (day, days)"

SIZE_UNITS: dict[str, int] = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
SIZE_UNITS_TEXT = "a byte count, or kB, MB, GB (1000-based) or KiB, MiB, GiB (1024-based)"

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*$")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_duration(value: object, key: str = "duration") -> float:
    """Parse a unit-suffixed duration such as ``"250ms"`` or ``"7d"`` into seconds."""
    if isinstance(value, bool | int | float):
        raise ConfigError(
            f"{key}: a duration needs a unit, got bare number {value!r}",
            hint=f'write it as a string with a unit, e.g. "{value}s"; units: {DURATION_UNITS_TEXT}',
        )
    if not isinstance(value, str):
        raise ConfigError(f'{key}: expected a duration string like "30s", got {type(value).__name__}')
    m = _DURATION_RE.match(value)
    if not m:
        if value.strip().replace(".", "", 1).isdigit():
            raise ConfigError(
                f"{key}: a duration needs a unit, got {value!r}",
                hint=f'e.g. "{value.strip()}s"; units: {DURATION_UNITS_TEXT}',
            )
        raise ConfigError(f"{key}: cannot read duration {value!r}", hint=f"units: {DURATION_UNITS_TEXT}")
    number, unit = m.group(1), m.group(2)
    factor = DURATION_UNITS.get(unit)
    if factor is None:
        raise ConfigError(
            f"{key}: unknown duration unit {unit!r} in {value!r}", hint=f"units: {DURATION_UNITS_TEXT}"
        )
    # Exact decimal arithmetic, so "9ms" is exactly the float nearest 0.009 and printing round-trips.
    return float(Decimal(number) * Decimal(round(factor * 1000)) / 1000)


def format_duration(seconds: float) -> str:
    """Print seconds in the largest unit that represents them exactly (parse_duration reads it back)."""
    if seconds < 0:
        raise ValueError("negative duration")
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    for unit, factor_ms in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % factor_ms == 0:
            return f"{ms // factor_ms}{unit}"
    return f"{ms}ms"


def parse_size(value: object, key: str = "size") -> int:
    """Parse a byte size: an integer, ``"512kB"`` (SI) or ``"16MiB"`` (IEC)."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a byte size, got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{key}: a size cannot be negative ({value})")
        return value
    if not isinstance(value, str):
        raise ConfigError(f'{key}: expected a byte size like "16MiB", got {type(value).__name__}')
    m = _SIZE_RE.match(value)
    if not m:
        raise ConfigError(f"{key}: cannot read size {value!r}", hint=f"use {SIZE_UNITS_TEXT}")
    number, unit = m.group(1), m.group(2)
    factor = SIZE_UNITS.get(unit.lower()) if unit else 1
    if factor is None:
        raise ConfigError(f"{key}: unknown size unit {unit!r} in {value!r}", hint=f"use {SIZE_UNITS_TEXT}")
    # "MB" vs "mb": only the documented spellings' case-insensitive forms are accepted.
    result = Decimal(number) * factor
    if result != result.to_integral_value():
        raise ConfigError(f"{key}: {value!r} is not a whole number of bytes")
    return int(result)


def format_size(n: int) -> str:
    """Human-readable IEC size, e.g. ``146 KiB`` or ``1.00 MiB``."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            if value < 10:
                return f"{value:.2f} {unit}"
            if value < 100:
                return f"{value:.1f} {unit}"
            return f"{value:.0f} {unit}"
    raise AssertionError("unreachable")


def format_age(seconds: float) -> str:
    """Compact age such as ``42s``, ``5m``, ``3h``, ``2d``."""
    s = max(0.0, seconds)
    if s < 60:
        return f"{int(s)}s"
    if s < 3600:
        return f"{int(s // 60)}m"
    if s < 86400:
        return f"{int(s // 3600)}h"
    return f"{int(s // 86400)}d"
