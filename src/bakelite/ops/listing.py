"""``list``: what is restorable, read from the backend only (safe while the daemon ships).

Three depths: one row per database (``list_databases``), one database's restore points per backup
(``list_restore_points``), and with ``verbose`` every object of every backup.  The functions return
report dataclasses; ``render_*_text`` turn them into the text the CLI prints.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from bakelite.config.model import Config, Database
from bakelite.errors import EXIT_OK, BakeliteError
from bakelite.ops.catalog import (
    BackupInfo,
    BackupSpan,
    SeqGap,
    list_backups,
    read_current,
    restore_points,
)
from bakelite.ops.timeparse import format_time, to_datetime
from bakelite.storage.base import Storage
from bakelite.units import format_size

logger = logging.getLogger(__name__)


# -- the fleet ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatabaseRow:
    """One database: its complete backups, restorable range and stored bytes, or why it failed."""

    name: str
    location: str
    backups: int = 0
    incomplete: int = 0
    oldest: datetime | None = None
    newest: datetime | None = None
    stored_bytes: int = 0
    problem: str | None = None
    error: str | None = None
    exit_code: int = EXIT_OK


@dataclass(frozen=True)
class FleetReport:
    """``bakelite list``: one row per database; ``exit_code`` is the worst of the rows."""

    databases: tuple[DatabaseRow, ...]
    exit_code: int = EXIT_OK


def list_databases(config: Config, storages: Mapping[str, Storage]) -> FleetReport:
    """One row per configured database that has a storage in ``storages`` (config order)."""
    rows = []
    for database in config.databases:
        storage = storages.get(database.name)
        if storage is not None:
            rows.append(_database_row(database.name, storage))
    return FleetReport(tuple(rows), max((r.exit_code for r in rows), default=EXIT_OK))


def _database_row(name: str, storage: Storage) -> DatabaseRow:
    location = storage.describe()
    try:
        backups = list_backups(storage, name)
        complete = [b for b in backups if b.complete]
        stored = sum(b.total_bytes for b in backups)
        if not complete:
            return DatabaseRow(name, location, incomplete=len(backups), stored_bytes=stored)
        # Only the ends matter here: the oldest span's start and the newest span's end.
        ends = complete[:1] if len(complete) == 1 else [complete[0], complete[-1]]
        spans = restore_points(storage, name, ends, detail=False)
        newest = spans[-1]
        return DatabaseRow(
            name,
            location,
            backups=len(complete),
            incomplete=len(backups) - len(complete),
            oldest=to_datetime(spans[0].first_time),
            newest=to_datetime(newest.last_time),
            stored_bytes=stored,
            problem=_gap_text(newest.gap, newest.last_seq),
        )
    except BakeliteError as e:
        # One unreadable database must not hide the others; the exit code still says it failed.
        logger.warning("listing %s failed: %s", name, e.one_line(), extra={"db": name})
        return DatabaseRow(name, location, error=e.one_line(), exit_code=e.exit_code)


def _gap_text(gap: SeqGap | None, last_seq: int) -> str | None:
    if gap is None:
        return None
    return f"change-set(s) for {gap.describe()} missing: restorable only up to seq {last_seq}"


def render_fleet_text(report: FleetReport) -> str:
    """The fleet table."""
    if not report.databases:
        return "no databases"
    rows: list[list[str]] = []
    notes: list[str] = []
    for r in report.databases:
        if r.error is not None:
            rows.append([r.name, "error", "-", "-", "-"])
            notes.append(f"{r.name}: {r.error}")
            continue
        backups = str(r.backups) + (f" (+{r.incomplete} incomplete)" if r.incomplete else "")
        oldest = "-" if r.oldest is None else format_time(r.oldest.timestamp())
        newest = "-" if r.newest is None else format_time(r.newest.timestamp())
        rows.append([r.name, backups, oldest, newest, format_size(r.stored_bytes)])
        if r.problem:
            notes.append(f"{r.name}: {r.problem}")
    text = _table(["DATABASE", "BACKUPS", "OLDEST (UTC)", "NEWEST (UTC)", "STORED"], rows)
    return text + "".join(f"\n! {n}" for n in notes)


# -- one database -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectRow:
    """One stored object of a backup (``--verbose``)."""

    key: str
    kind: str
    level: int
    first_seq: int
    last_seq: int
    size: int
    first_time: datetime | None
    last_time: datetime | None


@dataclass(frozen=True)
class BackupRow:
    """One backup: its restorable span (``None`` when incomplete) and, verbose, its objects."""

    backup: str
    created: datetime
    complete: bool
    first_time: datetime | None
    last_time: datetime | None
    first_seq: int
    last_seq: int
    max_seq: int
    objects: int
    stored_bytes: int
    gap: SeqGap | None
    note: str | None
    structure: tuple[ObjectRow, ...] = ()


@dataclass(frozen=True)
class DatabaseListing:
    """``bakelite list --db NAME``: the database's backups, oldest first."""

    database: str
    location: str
    current: str | None
    backups: tuple[BackupRow, ...]
    verbose: bool


def list_restore_points(database: Database, storage: Storage, verbose: bool = False) -> DatabaseListing:
    """Every backup of ``database`` with its restorable span; ``verbose`` adds every object."""
    name = database.name
    backups = list_backups(storage, name)
    spans = {s.backup: s for s in restore_points(storage, name, backups, detail=verbose)}
    rows = []
    for info in backups:
        span = spans.get(info.backup)
        rows.append(_complete_row(info, span, verbose) if span else _incomplete_row(info, verbose))
    return DatabaseListing(name, storage.describe(), read_current(storage, name), tuple(rows), verbose)


def _complete_row(info: BackupInfo, span: BackupSpan, verbose: bool) -> BackupRow:
    structure: tuple[ObjectRow, ...] = ()
    if verbose:
        snap = ObjectRow(
            span.snapshot_key,
            "snapshot",
            0,
            0,
            0,
            span.snapshot_size,
            to_datetime(span.first_time),
            to_datetime(span.first_time),
        )
        sets = tuple(
            ObjectRow(
                c.key,
                "changeset",
                c.level,
                c.first,
                c.last,
                c.size,
                to_datetime(c.t_first),
                to_datetime(c.t_last),
            )
            for c in span.changesets
        )
        structure = (snap, *sets)
    return BackupRow(
        backup=info.backup,
        created=to_datetime(info.created),
        complete=True,
        first_time=to_datetime(span.first_time),
        last_time=to_datetime(span.last_time),
        first_seq=0,
        last_seq=span.last_seq,
        max_seq=span.max_seq,
        objects=span.objects,
        stored_bytes=span.stored_bytes,
        gap=span.gap,
        note=_gap_text(span.gap, span.last_seq),
        structure=structure,
    )


def _incomplete_row(info: BackupInfo, verbose: bool) -> BackupRow:
    structure = tuple(
        ObjectRow(o.key, o.ref.kind, o.ref.level, o.ref.first, o.ref.last, o.size, None, None)
        for o in info.changesets
    )
    return BackupRow(
        backup=info.backup,
        created=to_datetime(info.created),
        complete=False,
        first_time=None,
        last_time=None,
        first_seq=0,
        last_seq=0,
        max_seq=max((o.ref.last for o in info.changesets), default=0),
        objects=len(info.changesets),
        stored_bytes=info.total_bytes,
        gap=None,
        note="incomplete: no snapshot (interrupted while being created); not restorable",
        structure=structure if verbose else (),
    )


def render_listing_text(listing: DatabaseListing) -> str:
    """A database's restore points (and, verbose, its backup structure)."""
    head = f"{listing.database} on {listing.location}"
    if listing.current:
        head += f" (CURRENT: {listing.current})"
    if not listing.backups:
        return f"{head}\nno backups yet"
    headers = ["BACKUP", "RESTORABLE (UTC)", "SEQS", "OBJECTS", "STORED"]
    rows = [_backup_cells(b) for b in listing.backups]
    widths = _widths(headers, rows)
    lines = [head, _line(headers, widths)]
    for b, cells in zip(listing.backups, rows, strict=True):
        lines.append(_line(cells, widths))
        if b.note:
            lines.append(f"  ! {b.note}")
        if listing.verbose and b.structure:
            lines += ["    " + line for line in _structure_table(b.structure).splitlines()]
    return "\n".join(lines)


def _backup_cells(b: BackupRow) -> list[str]:
    if b.first_time is None or b.last_time is None:
        return [b.backup, "-", "-", str(b.objects), format_size(b.stored_bytes)]
    span = f"{format_time(b.first_time.timestamp())} .. {format_time(b.last_time.timestamp())}"
    return [b.backup, span, f"{b.first_seq}..{b.last_seq}", str(b.objects), format_size(b.stored_bytes)]


def _structure_table(objects: Sequence[ObjectRow]) -> str:
    rows = []
    for o in objects:
        seqs = str(o.first_seq) if o.first_seq == o.last_seq else f"{o.first_seq}..{o.last_seq}"
        if o.first_time is None or o.last_time is None:
            times = "-"
        elif o.kind == "snapshot" or o.first_time == o.last_time:
            times = format_time(o.first_time.timestamp())
        else:
            times = f"{format_time(o.first_time.timestamp())} .. {format_time(o.last_time.timestamp())}"
        kind = "change-set" if o.kind == "changeset" else o.kind
        rows.append([kind, f"L{o.level}", seqs, format_size(o.size), times, o.key])
    return _table(["KIND", "LEVEL", "SEQS", "SIZE", "COMMIT TIMES (UTC)", "KEY"], rows)


def _widths(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int]:
    return [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = _widths(headers, rows)
    return "\n".join(_line(r, widths) for r in [headers, *rows])
