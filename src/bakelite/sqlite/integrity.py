"""``PRAGMA integrity_check`` of a whole file, spread over several connections.

SQLite's check runs on one core, and on an indexed database most of it is the cross-check of each
index against its table.  ``PRAGMA quick_check`` does everything else (every b-tree's structure,
every page used exactly once, the freelist, NOT NULL and CHECK constraints), and
``PRAGMA integrity_check(T)`` (SQLite 3.33+) does the full check of one table and its indexes.  So
quick_check plus integrity_check(T) for every table covers what one integrity_check covers, and
those statements are independent: each runs on its own read-only connection, in parallel.

The cross-check looks every row up in each index, so it runs at memory speed only while the
indexes fit the page cache; a walk that visits each page once (quick_check, a table without
indexes) gains nothing from a big cache and is even a little slower with one.  One memory budget
is therefore shared out by index size, not evenly.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# integrity_check(TABLE) first appeared in SQLite 3.33.0.
PER_TABLE_SINCE: Final = (3, 33, 0)
QUICK_CHECK: Final = "PRAGMA quick_check"
FULL_CHECK: Final = "PRAGMA integrity_check"
# SQLite's own default page cache: enough for a walk that reads each page once.
WALK_CACHE_KIB: Final = 2048
# Beyond its indexes, a cross-check keeps the table's current leaf and interior pages.
TABLE_PAGES_KIB: Final = 1024


@dataclass(frozen=True)
class TableShape:
    """A table as the check planner sees it: its indexes and how big they are."""

    name: str
    indexes: int
    # Total size of its indexes in KiB; None when unknown (no dbstat in this SQLite build).
    index_kib: int | None = None


@dataclass(frozen=True)
class Check:
    """One statement of the split check and the page cache its connection gets, in KiB."""

    statement: str
    cache_kib: int


def quote_identifier(name: str) -> str:
    """``name`` as an SQL identifier (double quotes, inner quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def _table_check(name: str) -> str:
    return f"PRAGMA integrity_check({quote_identifier(name)})"


def _wanted_kib(table: TableShape, budget_kib: int) -> int:
    if table.indexes == 0:
        return WALK_CACHE_KIB
    if table.index_kib is None:
        return budget_kib  # unknown: compete for the whole budget
    return table.index_kib + table.index_kib // 10 + TABLE_PAGES_KIB


def share_caches(wanted: Sequence[int], *, workers: int, budget_kib: int) -> list[int]:
    """Page caches for statements wanting ``wanted`` KiB, at most ``workers`` of them at once.

    Water-filling: every statement gets what it wants up to one common level, chosen as high as
    it can be while the ``workers`` largest caches (the worst set that can run together) fit
    ``budget_kib``.  Each gets at least a small floor (1 KiB at the least, so a budget below 1 KiB
    per worker is exceeded), so a statement never runs without a cache.
    """
    if not wanted:
        return []
    floor = max(1, min(WALK_CACHE_KIB, budget_kib // max(1, workers)))
    top = sorted(wanted, reverse=True)[: max(1, workers)]

    def fits(level: int) -> bool:
        return sum(max(floor, min(w, level)) for w in top) <= budget_kib

    low, high = floor, max(floor, top[0])
    while low < high:  # the highest level that fits
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return [max(floor, min(w, low)) for w in wanted]


def plan_checks(tables: Sequence[TableShape], *, workers: int, budget_kib: int) -> list[Check]:
    """The statements whose findings together are one full integrity_check, longest first.

    The index cross-checks dominate the time, so tables with the biggest (or, sizes unknown, the
    most) indexes go first, and quick_check (about a fifth of a full check) goes before the tables
    without indexes.
    """
    if not tables:
        return [Check(FULL_CHECK, budget_kib)]
    indexed = sorted(
        (t for t in tables if t.indexes > 0),
        key=lambda t: (-(t.index_kib if t.index_kib is not None else -1), -t.indexes, t.name),
    )
    plain = sorted((t for t in tables if t.indexes == 0), key=lambda t: t.name)
    statements = [_table_check(t.name) for t in indexed]
    statements += [QUICK_CHECK] + [_table_check(t.name) for t in plain]
    wanted = [_wanted_kib(t, budget_kib) for t in indexed]
    wanted += [WALK_CACHE_KIB] * (1 + len(plain))
    caches = share_caches(wanted, workers=workers, budget_kib=budget_kib)
    return [Check(st, kib) for st, kib in zip(statements, caches, strict=True)]


def _connect(path: Path, cache_kib: int) -> sqlite3.Connection:
    # immutable=1: no locks, and no -wal/-shm created or read beside the file being checked.
    uri = f"file:{urllib.parse.quote(os.fspath(path))}?immutable=1"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA cache_size=-{cache_kib}")
    return conn


def _index_kib(conn: sqlite3.Connection, names: Sequence[str]) -> dict[str, int] | None:
    """Each index's size in KiB from dbstat, or None when this build (or this file) cannot say."""
    sizes: dict[str, int] = {}
    try:
        # One query per index: dbstat walks only the b-trees named, not the (much bigger) tables.
        for name in names:
            row = conn.execute(
                "SELECT pgsize FROM dbstat WHERE name = ? AND aggregate = 1", (name,)
            ).fetchone()
            sizes[name] = int(row[0] or 0) // 1024 if row else 0
    except sqlite3.DatabaseError:
        # No dbstat compiled in, or a damaged index: plan without sizes and let the check report.
        return None
    return sizes


def _tables(path: Path) -> list[TableShape]:
    conn = _connect(path, WALK_CACHE_KIB)
    try:
        tables = [str(r[0]) for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")]
        indexes = [
            (str(r[0]), str(r[1]))
            for r in conn.execute("SELECT name, tbl_name FROM sqlite_schema WHERE type = 'index'")
        ]
        sizes = _index_kib(conn, [name for name, _ in indexes])
    finally:
        conn.close()
    shapes = []
    for table in tables:
        own = [name for name, tbl in indexes if tbl == table]
        kib = None if sizes is None else sum(sizes[name] for name in own)
        shapes.append(TableShape(table, len(own), kib))
    return shapes


def _run(path: Path, check: Check) -> list[str]:
    conn = _connect(path, check.cache_kib)
    try:
        lines = [str(row[0]) for row in conn.execute(check.statement).fetchall()]
    finally:
        conn.close()
    return [line for line in lines if line != "ok"]


def check_integrity(path: Path, *, workers: int = 2, budget_kib: int = 64 * 1024) -> list[str]:
    """The problems ``PRAGMA integrity_check`` finds in ``path`` (empty when it says ok).

    Uses up to ``workers`` connections whose page caches together stay within ``budget_kib``
    KiB.  Raises ``sqlite3.DatabaseError`` when SQLite cannot read the file at all.
    """
    full = Check(FULL_CHECK, budget_kib)
    if workers <= 1 or sqlite3.sqlite_version_info < PER_TABLE_SINCE:
        return _run(path, full)
    checks = plan_checks(_tables(path), workers=workers, budget_kib=budget_kib)
    if len(checks) == 1:
        return _run(path, checks[0])
    try:
        with ThreadPoolExecutor(
            max_workers=min(workers, len(checks)), thread_name_prefix="bakelite-check"
        ) as pool:
            found = list(pool.map(lambda c: _run(path, c), checks))
    except sqlite3.OperationalError:
        # A table the per-table form cannot take (a virtual table whose module this build lacks,
        # say): the one statement whose verdict is defined for every file.
        return _run(path, full)
    # One problem can be reported by quick_check and by its table's check; report it once.
    return list(dict.fromkeys(line for lines in found for line in lines))
