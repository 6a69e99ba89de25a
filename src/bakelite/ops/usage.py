"""``bakelite usage``: stored bytes per database and per backup, against the configured caps."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from bakelite.config.model import Database, S3Backend
from bakelite.format import layout
from bakelite.ops.catalog import list_backups
from bakelite.ops.s3inspect import S3Overhead, overhead
from bakelite.ops.timeparse import to_datetime
from bakelite.storage.base import Storage
from bakelite.units import format_size


@dataclass(frozen=True)
class BackupUsage:
    """One backup: its full (snapshot) and incremental (change-set) bytes."""

    backup: str
    created: datetime
    age_seconds: float
    complete: bool
    current: bool
    full_bytes: int
    incremental_bytes: int
    changesets: int
    compacted: int  # change-sets at level >= 1
    total_bytes: int


@dataclass(frozen=True)
class CapUsage:
    """Usage against one configured cap; ``text`` is ``146 KiB / 1.00 MiB (14%)``."""

    cap: str  # "max_total_size" | "max_backups"
    used: int
    limit: int
    percent: float
    over: bool
    text: str


@dataclass(frozen=True)
class DatabaseUsage:
    """What one database stores on its primary destination."""

    database: str
    backend: str
    total_bytes: int
    other_bytes: int  # CURRENT, manifest, KEYPARAMS
    backups: int
    oldest_age_seconds: float | None
    caps: tuple[CapUsage, ...]
    over: bool
    detail: tuple[BackupUsage, ...] | None
    s3: S3Overhead | None


@dataclass(frozen=True)
class UsageReport:
    """Every selected database; exit code 1 when any is over a cap (a check that pages)."""

    databases: tuple[DatabaseUsage, ...]

    @property
    def exit_code(self) -> int:
        """1 when a database is over a configured cap, else 0."""
        return 1 if any(d.over for d in self.databases) else 0


def cap_text(used: int, limit: int, size: bool) -> str:
    """``146 KiB / 1.00 MiB (14%)`` (or ``3 / 5 (60%)`` for a count)."""
    pct = 100.0 * used / limit if limit else 0.0
    if size:
        return f"{format_size(used)} / {format_size(limit)} ({pct:.0f}%)"
    return f"{used} / {limit} ({pct:.0f}%)"


def database_usage(
    db: Database, storage: Storage, *, detail: bool, now: float | None = None
) -> DatabaseUsage:
    """Stored bytes of ``db`` on ``storage``, per backup when ``detail``."""
    now = time.time() if now is None else now
    backups = list_backups(storage, db.name)
    data_bytes = sum(b.total_bytes for b in backups)
    all_bytes = sum(i.size for i in storage.list(layout.db_prefix(db.name)))
    complete = [b for b in backups if b.complete]
    current = complete[-1].backup if complete else None
    caps: list[CapUsage] = []
    if db.max_total_size:
        caps.append(
            CapUsage(
                "max_total_size",
                all_bytes,
                db.max_total_size,
                100.0 * all_bytes / db.max_total_size,
                all_bytes > db.max_total_size,
                cap_text(all_bytes, db.max_total_size, True),
            )
        )
    if db.max_backups:
        n = len(complete)
        caps.append(
            CapUsage(
                "max_backups",
                n,
                db.max_backups,
                100.0 * n / db.max_backups,
                n > db.max_backups,
                cap_text(n, db.max_backups, False),
            )
        )
    rows = None
    if detail:
        rows = tuple(
            BackupUsage(
                backup=b.backup,
                created=to_datetime(b.created),
                age_seconds=max(0.0, now - b.created),
                complete=b.complete,
                current=b.backup == current,
                full_bytes=b.snapshot.size if b.snapshot is not None else 0,
                incremental_bytes=sum(o.size for o in b.changesets),
                changesets=len(b.changesets),
                compacted=sum(1 for o in b.changesets if o.ref.level > 0),
                total_bytes=b.total_bytes,
            )
            for b in backups
        )
    s3 = None
    backend = (db.sync_backends or db.backends)[0] if (db.sync_backends or db.backends) else None
    if isinstance(backend, S3Backend):
        s3 = overhead(storage, prefix=layout.db_prefix(db.name))
    return DatabaseUsage(
        database=db.name,
        backend=storage.describe(),
        total_bytes=all_bytes,
        other_bytes=all_bytes - data_bytes,
        backups=len(complete),
        oldest_age_seconds=max(0.0, now - backups[0].created) if backups else None,
        caps=tuple(caps),
        over=any(c.over for c in caps),
        detail=rows,
        s3=s3,
    )


def usage(
    databases: Sequence[Database], open_storage: Callable[[Database], Storage], *, detail: bool
) -> UsageReport:
    """Usage of every database on its primary destination."""
    out = []
    for db in databases:
        storage = open_storage(db)
        try:
            out.append(database_usage(db, storage, detail=detail))
        finally:
            storage.close()
    return UsageReport(tuple(out))
