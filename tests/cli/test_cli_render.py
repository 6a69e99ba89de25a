"""cli.render: JSON conversion, text output, tables and progress."""

from __future__ import annotations

import enum
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from bakelite.cli import render
from bakelite.errors import ConfigError


class State(enum.Enum):
    REPLICATING = "replicating"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Row:
    name: str
    path: Path
    at: datetime
    state: State
    spans: tuple[tuple[int, int], ...]
    digest: bytes
    secret: str = field(default="hunter2", repr=False)


@dataclass(frozen=True)
class Report:
    rows: tuple[Row, ...]
    total: int
    ratio: float
    tags: frozenset[str] = frozenset()
    extra: dict[str, object] = field(default_factory=dict)


def _report() -> Report:
    row = Row(
        name="app",
        path=Path("/var/lib/app/app.db"),
        at=datetime(2026, 5, 25, 12, 0, 0, tzinfo=UTC),
        state=State.REPLICATING,
        spans=((1, 2), (3, 4)),
        digest=b"\x00\xff",
    )
    return Report(
        rows=(row,), total=3, ratio=float("inf"), tags=frozenset({"b", "a"}), extra={"k": Path("x")}
    )


def test_to_jsonable_report() -> None:
    assert render.to_jsonable(_report()) == {
        "rows": [
            {
                "name": "app",
                "path": "/var/lib/app/app.db",
                "at": "2026-05-25T12:00:00Z",
                "state": "replicating",
                "spans": [[1, 2], [3, 4]],
                "digest": "00ff",
            }
        ],
        "total": 3,
        "ratio": None,
        "tags": ["a", "b"],
        "extra": {"k": "x"},
    }


def test_datetimes_are_rfc3339_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    assert render.to_jsonable(datetime(2026, 1, 1, 14, 0, tzinfo=plus2)) == "2026-01-01T12:00:00Z"
    assert render.to_jsonable(datetime(2026, 1, 1, 12, 0, 0, 500000)) == "2026-01-01T12:00:00.500000Z"
    assert render.to_jsonable(timedelta(minutes=2)) == 120.0


def test_secret_fields_never_rendered() -> None:
    assert "hunter2" not in render.dumps(_report())


def test_unknown_types_are_a_bug() -> None:
    with pytest.raises(TypeError):
        render.to_jsonable(object())


def test_emit_json_is_one_document(capsys: pytest.CaptureFixture[str]) -> None:
    render.emit(_report(), as_json=True, text=lambda r: "unused")
    out = capsys.readouterr().out
    assert json.loads(out)["total"] == 3


def test_emit_text(capsys: pytest.CaptureFixture[str]) -> None:
    render.emit(_report(), as_json=False, text=lambda r: f"{r.total} rows\n")
    assert capsys.readouterr().out == "3 rows\n"
    render.emit(_report(), as_json=False, text=lambda r: "")
    assert capsys.readouterr().out == ""
    render.emit("plain", as_json=False)
    assert capsys.readouterr().out == "plain\n"
    render.emit(_report(), as_json=False)
    assert "total: 3" in capsys.readouterr().out


def test_error_rendering(capsys: pytest.CaptureFixture[str]) -> None:
    render.error(ConfigError("bad key", detail="line 3", hint="remove it"), as_json=True)
    out, err = capsys.readouterr()
    assert err == "bakelite: error: bad key (line 3); remove it\n"
    assert json.loads(out)["error"] == {
        "type": "ConfigError",
        "message": "bad key",
        "detail": "line 3",
        "hint": "remove it",
        "exit_code": 2,
    }


def test_table_aligns_columns() -> None:
    text = render.table(
        ["DB", "STATE", "SHIPPED"], [["app", "replicating", "1.2 MiB"], ["longname", None, 7]]
    )
    assert text.splitlines() == [
        "DB        STATE        SHIPPED",
        "app       replicating  1.2 MiB",
        "longname  -            7",
    ]


class FakeTTY(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_draws_only_on_a_tty() -> None:
    tty = FakeTTY(True)
    with render.Progress("restoring", stream=tty) as p:
        p.update(1, 4)
        p.update(4, 4)
    assert "restoring: 4 / 4 (100%)" in tty.getvalue()
    assert tty.getvalue().endswith("\r\x1b[K")

    pipe = FakeTTY(False)
    with render.Progress("restoring", stream=pipe) as p:
        p.update(4, 4)
    assert pipe.getvalue() == ""

    json_mode = FakeTTY(True)
    with render.Progress("restoring", stream=json_mode, as_json=True) as p:
        p.update(4, 4)
    assert json_mode.getvalue() == ""


def test_progress_unknown_total_and_units() -> None:
    tty = FakeTTY(True)
    with render.Progress("downloaded", stream=tty, unit=lambda n: f"{n} B") as p:
        p.update(2048)
    assert "downloaded: 2048 B" in tty.getvalue()


def test_progress_silent_under_capture(capsys: pytest.CaptureFixture[str]) -> None:
    with render.Progress("x") as p:
        p.update(1, 2)
    assert capsys.readouterr().err == ""
