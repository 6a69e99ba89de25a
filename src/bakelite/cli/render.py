"""The only module that prints: reports as text or one JSON document, errors, tables, progress.

Reports are dataclasses; ``--json`` output is the dataclass turned into JSON by ``to_jsonable``, so the
dataclass *is* the documented schema.  Data goes to stdout, everything for humans about the run
(errors, progress) goes to stderr.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import PurePath
from types import TracebackType
from typing import Any, TextIO, TypeVar

from bakelite.errors import EXIT_INTERNAL, BakeliteError

T = TypeVar("T")

PROG = "bakelite"


def rfc3339(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix; a naive datetime is taken to be UTC already."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def to_jsonable(obj: Any) -> Any:
    """Turn a report (dataclasses, paths, datetimes, enums, tuples, bytes...) into plain JSON values."""
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        # json.dumps would write NaN/Infinity, which is not JSON; null is the honest "no number".
        return obj if math.isfinite(obj) else None
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        # Fields marked repr=False hold secrets (passphrases, inline keys): never put them in output.
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.repr}
    if isinstance(obj, datetime):
        return rfc3339(obj)
    if isinstance(obj, date):
        return obj.isoformat()
    if isinstance(obj, timedelta):
        return obj.total_seconds()
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj).hex()
    if isinstance(obj, Mapping):
        return {str(to_jsonable(k)): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, set | frozenset):
        return sorted((to_jsonable(v) for v in obj), key=repr)
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    raise TypeError(f"cannot render {type(obj).__name__} as JSON")


def dumps(obj: Any) -> str:
    """One indented JSON document for ``obj``."""
    return json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False)


def _default_text(report: Any) -> str:
    """A plain ``field: value`` rendering for reports without a text renderer of their own."""
    if isinstance(report, str):
        return report
    if dataclasses.is_dataclass(report) and not isinstance(report, type):
        value = to_jsonable(report)
        return "\n".join(f"{k}: {v}" for k, v in value.items())
    return str(report)


def emit(report: T, as_json: bool, text: Callable[[T], str] | None = None) -> None:
    """Print ``report`` to stdout: one JSON document with ``as_json``, else its text rendering."""
    if as_json:
        print(dumps(report), flush=True)
        return
    out = text(report) if text is not None else _default_text(report)
    # An empty rendering prints nothing at all (``status --check`` is silent on success).
    if out:
        print(out.rstrip("\n"), flush=True)


def warn(message: str) -> None:
    """A one-line notice for the user on stderr."""
    print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)


def error_document(e: BakeliteError) -> dict[str, Any]:
    """The ``--json`` form of an error."""
    return {
        "error": {
            "type": type(e).__name__,
            "message": e.message,
            "detail": e.detail,
            "hint": e.hint,
            "exit_code": e.exit_code,
        }
    }


def error(e: BakeliteError, as_json: bool) -> None:
    """Report an error: one line on stderr, plus the JSON document on stdout with ``--json``."""
    print(f"{PROG}: error: {e.one_line()}", file=sys.stderr, flush=True)
    if as_json:
        print(json.dumps(error_document(e), indent=2, ensure_ascii=False), flush=True)


def internal_error(exc: BaseException, as_json: bool) -> None:
    """Report a bug: the full traceback on stderr (and a JSON error document with ``--json``)."""
    traceback.print_exception(exc, file=sys.stderr)
    print(
        f"{PROG}: internal error: {type(exc).__name__}: {exc} (this is a bug; please report it with the "
        "traceback above)",
        file=sys.stderr,
        flush=True,
    )
    if as_json:
        doc = {
            "error": {
                "type": "InternalError",
                "message": f"{type(exc).__name__}: {exc}",
                "detail": None,
                "hint": "this is a bug; please report it with the traceback printed on stderr",
                "exit_code": EXIT_INTERNAL,
            }
        }
        print(json.dumps(doc, indent=2, ensure_ascii=False), flush=True)


def interrupted() -> None:
    """Acknowledge Ctrl-C on stderr."""
    print(f"{PROG}: interrupted", file=sys.stderr, flush=True)


def text_out(text: str) -> None:
    """Print text as it is to stdout (generated documents, a key on stdout)."""
    sys.stdout.write(text)
    sys.stdout.flush()


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces; ``None`` cells print as ``-``."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    ncols = max(len(r) for r in cells)
    widths = [max((len(r[i]) for r in cells if i < len(r)), default=0) for i in range(ncols)]
    lines = []
    for row in cells:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


class Progress:
    """Progress for long work on stderr, only when stderr is a terminal and output is not JSON.

    ``with Progress("restoring", as_json=args.json, unit=format_size) as p: p.update(done, total)``
    """

    # Redraw at most this often: a terminal is not worth slowing a restore for.
    INTERVAL = 0.1

    def __init__(
        self,
        label: str,
        *,
        as_json: bool = False,
        unit: Callable[[int], str] | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.label = label
        self.unit = unit or str
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = not as_json and _isatty(self.stream)
        self._last_draw = 0.0
        self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.enabled and self._drawn:
            # Clear the progress line so what is printed next starts on a clean line.
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def update(self, done: int, total: int | None = None) -> None:
        """Show ``done`` out of ``total`` (or just ``done`` when the total is unknown)."""
        if not self.enabled:
            return
        now = time.monotonic()
        finished = total is not None and done >= total
        if not finished and now - self._last_draw < self.INTERVAL:
            return
        self._last_draw = now
        if total:
            pct = min(100.0, 100.0 * done / total)
            line = f"{self.label}: {self.unit(done)} / {self.unit(total)} ({pct:.0f}%)"
        else:
            line = f"{self.label}: {self.unit(done)}"
        self.stream.write(f"\r\x1b[K{line}")
        self.stream.flush()
        self._drawn = True


def _isatty(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal (False for anything that cannot tell)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
