"""Restore targets as users write them, and restore points as users read them.

``--timestamp`` accepts RFC 3339 (``2026-05-25T12:00:00Z``, ``2026-05-25T14:00:00.250+02:00``) or a
relative ``<N> <unit> ago`` (``90s ago``, ``1.5h ago``, ``2 days ago``) with the duration units of
the config plus their long forms.  Times are printed in UTC and rounded *up* to the millisecond, so a
printed restore point pasted back into ``--timestamp`` lands on that point, never on the one before.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, timezone

from bakelite.errors import UsageError
from bakelite.units import DURATION_UNITS

# Long forms on top of the config's duration units; case-sensitive on purpose, like the config, so
# "5M ago" is refused rather than silently read as minutes (or, as some tools do, months).
RELATIVE_UNITS: dict[str, float] = {
    **DURATION_UNITS,
    "msec": 0.001,
    "millisecond": 0.001,
    "milliseconds": 0.001,
    "second": 1.0,
    "seconds": 1.0,
    "minute": 60.0,
    "minutes": 60.0,
    "hour": 3600.0,
    "hours": 3600.0,
}

ACCEPTED_FORMS = (
    "RFC 3339 such as 2026-05-25T12:00:00Z (a UTC offset like +02:00 and fractional seconds are "
    "allowed), or '<N> <unit> ago' such as '90s ago', '5m ago', '1 hour ago', '2 days ago'; units: "
    "ms, s/sec/second(s), m/min/minute(s), h/hr/hour(s), d/day(s)"
)

_RFC3339_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)
_RELATIVE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s+[Aa][Gg][Oo]$")


def parse_timestamp(text: str, now: float) -> float:
    """Parse an RFC 3339 or ``<N> <unit> ago`` restore target into epoch seconds."""
    value = text.strip()
    m = _RFC3339_RE.match(value)
    if m:
        return _rfc3339(text, m)
    m = _RELATIVE_RE.match(value)
    if m:
        number, unit = m.group(1), m.group(2)
        factor = RELATIVE_UNITS.get(unit)
        if factor is None:
            raise UsageError(f"unknown unit {unit!r} in --timestamp {text!r}", hint=f"use {ACCEPTED_FORMS}")
        return now - float(number) * factor
    if re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?$", value):
        # A time without an offset is ambiguous (local? UTC?): say exactly what to add.
        raise UsageError(
            f"--timestamp {text!r} has no UTC offset",
            hint=f"append Z for UTC ({value}Z) or an offset such as +02:00",
        )
    raise UsageError(f"cannot read --timestamp {text!r}", hint=f"use {ACCEPTED_FORMS}")


def _rfc3339(text: str, m: re.Match[str]) -> float:
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    fraction = m.group(7) or ""
    if m.group(8):
        tz = UTC
    else:
        hours, minutes = int(m.group(10)), int(m.group(11))
        if hours > 23 or minutes > 59:
            raise UsageError(f"--timestamp {text!r} has an invalid UTC offset", hint=f"use {ACCEPTED_FORMS}")
        sign = 1 if m.group(9) == "+" else -1
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=tz)
    except ValueError as e:
        raise UsageError(
            f"--timestamp {text!r} is not a valid time ({e})", hint=f"use {ACCEPTED_FORMS}"
        ) from e
    # Whole seconds from datetime, the fraction added separately: nanosecond digits are kept as far
    # as a float can hold them instead of being cut to microseconds.
    return moment.timestamp() + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def format_time(t: float) -> str:
    """UTC RFC 3339 rounded up to the millisecond (``.mmm`` only when not a whole second)."""
    # The smallest millisecond that parse_timestamp reads back as >= t, computed with the very
    # arithmetic the parser uses, so pasting a printed point can never land on the commit before.
    ms = math.floor(t * 1000) - 1
    while _ms_value(ms) < t:
        ms += 1
    whole, frac = divmod(ms, 1000)
    stamp = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{frac:03d}Z" if frac else f"{stamp}Z"


def _ms_value(ms: int) -> float:
    whole, frac = divmod(ms, 1000)
    return float(whole) + (frac / 1000 if frac else 0.0)


def to_datetime(t: float) -> datetime:
    """Epoch seconds as an aware UTC datetime (what reports carry)."""
    return datetime.fromtimestamp(t, UTC)
