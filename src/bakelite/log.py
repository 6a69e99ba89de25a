"""Logging setup: stderr only, text or JSON lines, levels from ``--log-level`` or ``$BAKELITE_LOG``.

A level spec is a comma-separated list of ``level`` (everything) and ``target=level`` (one logger and
its children) items, e.g. ``info``, ``bakelite=debug`` or ``warning,bakelite.storage=debug``.  Every
module logs through ``logging.getLogger(__name__)`` and passes context as ``extra={...}`` with fixed
field names (``db``, ``backend``, ``key``...); both formats print those fields.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from bakelite.errors import ConfigError, UsageError

ENV_VAR = "BAKELITE_LOG"

# "trace" and "off" come from the tracing-filter vocabulary users may already know.
LEVELS: dict[str, int] = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "off": logging.CRITICAL + 10,
}
LEVELS_TEXT = "trace, debug, info, warning, error, critical, off"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime", "taskName"}
)


@dataclass(frozen=True)
class LogFilter:
    """A parsed level spec: an optional level for everything plus per-logger levels."""

    default: int | None
    targets: tuple[tuple[str, int], ...]


def parse_filter(spec: str) -> LogFilter:
    """Parse ``info`` / ``bakelite=debug`` / ``warning,bakelite.storage=debug``; ValueError if invalid."""
    default: int | None = None
    targets: dict[str, int] = {}
    items = [item.strip() for item in spec.split(",")]
    if not any(items):
        raise ValueError("empty log level")
    for item in items:
        if not item:
            continue
        target, sep, level_text = item.rpartition("=")
        level = LEVELS.get(level_text.strip().lower())
        if level is None:
            raise ValueError(f"unknown log level {level_text.strip()!r} (use {LEVELS_TEXT})")
        if not sep:
            default = level
            continue
        # Accept the Rust-style "bakelite::storage" spelling as well as Python's dotted names.
        name = target.strip().replace("::", ".")
        if not name:
            raise ValueError(f"missing logger name in {item!r}")
        targets[name] = level
    return LogFilter(default=default, targets=tuple(targets.items()))


def _rfc3339(created: float) -> str:
    """A record's creation time as RFC 3339 UTC with milliseconds."""
    return datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a caller attached with ``extra=``."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


def _plain(value: Any) -> Any:
    """A JSON-friendly stand-in for values json cannot encode."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


class TextFormatter(logging.Formatter):
    """``<ts> <LEVEL> <logger>: <msg> key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record as a single text line (plus any traceback)."""
        line = f"{_rfc3339(record.created)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg`` and the ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record as a single JSON line."""
        doc: dict[str, Any] = {
            "ts": _rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            # An extra never overwrites a core field; it is kept under a prefixed name instead.
            doc[f"extra_{key}" if key in doc else key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=_plain, ensure_ascii=False)


class StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is at emit time (so redirection and test capture work)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        """The current ``sys.stderr``."""
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        # StreamHandler.__init__ assigns the stream; the property always follows sys.stderr instead.
        pass


_handler: logging.Handler | None = None
_configured_targets: list[str] = []
_last_call: tuple[str | None, bool, str] | None = None


def setup_logging(level: str | None, json_lines: bool, default: str = "warning") -> None:
    """Send logs to stderr at ``level`` (else ``$BAKELITE_LOG``, else ``default``); JSON lines if asked."""
    global _handler, _last_call
    _last_call = (level, json_lines, default)
    if level:
        try:
            spec = parse_filter(level)
        except ValueError as e:
            raise UsageError(f"--log-level: {e}") from None
    elif os.environ.get(ENV_VAR, "").strip():
        try:
            spec = parse_filter(os.environ[ENV_VAR])
        except ValueError as e:
            raise ConfigError(
                f"{ENV_VAR}: {e}", hint=f"e.g. {ENV_VAR}=info or {ENV_VAR}=bakelite=debug"
            ) from None
    else:
        spec = parse_filter(default)

    root = logging.getLogger()
    # Re-running setup (tests, or after an env file set BAKELITE_LOG) must not stack handlers or
    # leave per-logger levels from the previous spec behind.
    if _handler is not None:
        root.removeHandler(_handler)
    for name in _configured_targets:
        logging.getLogger(name).setLevel(logging.NOTSET)
    _configured_targets.clear()

    root.setLevel(spec.default if spec.default is not None else LEVELS[default.lower()])
    for name, target_level in spec.targets:
        logging.getLogger(name).setLevel(target_level)
        _configured_targets.append(name)

    _handler = StderrHandler()
    _handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root.addHandler(_handler)


def refresh() -> None:
    """Re-apply the last setup, picking up a ``$BAKELITE_LOG`` an env file has set since."""
    if _last_call is not None:
        setup_logging(*_last_call)
