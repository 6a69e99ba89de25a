"""``PRAGMA integrity_check`` of a whole file, spread over several connections.

SQLite's check runs on one core, and on an indexed database most of it is the cross-check of each
index against its table.  ``PRAGMA quick_check`` does everything else (every b-tree's structure,
every page used exactly once, the freelist, NOT NULL and CHECK constraints), and
``PRAGMA integrity_check(T)`` (SQLite 3.33+) does the full check of one table and its indexes.  So
quick_check plus integrity_check(T) for every table covers what one integrity_check covers, and
those statements are independent: each runs on its own read-only connection, in parallel.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

# integrity_check(TABLE) first appeared in SQLite 3.33.0.
PER_TABLE_SINCE: Final = (3, 33, 0)
QUICK_CHECK: Final = "PRAGMA quick_check"
FULL_CHECK: Final = "PRAGMA integrity_check"


def quote_identifier(name: str) -> str:
    """``name`` as an SQL identifier (double quotes, inner quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def plan_checks(tables: Sequence[tuple[str, int]]) -> list[str]:
    """The statements whose findings together are one full integrity_check, longest first.

    ``tables`` is (name, number of indexes) for every table in the schema.  The index
    cross-checks dominate the time, so tables with most indexes go first and quick_check (about a
    fifth of a full check) goes before the tables without indexes.
    """
    if not tables:
        return [FULL_CHECK]
    ordered = sorted(tables, key=lambda t: (-t[1], t[0]))
    indexed = [f"PRAGMA integrity_check({quote_identifier(n)})" for n, k in ordered if k > 0]
    plain = [f"PRAGMA integrity_check({quote_identifier(n)})" for n, k in ordered if k == 0]
    return [*indexed, QUICK_CHECK, *plain]


def _connect(path: Path, cache_kib: int) -> sqlite3.Connection:
    # immutable=1: no locks, and no -wal/-shm created or read beside the file being checked.
    uri = f"file:{urllib.parse.quote(os.fspath(path))}?immutable=1"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    # A bigger page cache than the default 2 MiB: the index cross-checks revisit pages.
    conn.execute(f"PRAGMA cache_size=-{cache_kib}")
    return conn


def _tables(path: Path) -> list[tuple[str, int]]:
    conn = _connect(path, 2048)
    try:
        rows = conn.execute(
            "SELECT t.name, (SELECT count(*) FROM sqlite_schema i"
            " WHERE i.type = 'index' AND i.tbl_name = t.name)"
            " FROM sqlite_schema t WHERE t.type = 'table'"
        ).fetchall()
    finally:
        conn.close()
    return [(str(name), int(n)) for name, n in rows]


def _run(path: Path, statement: str, cache_kib: int) -> list[str]:
    conn = _connect(path, cache_kib)
    try:
        lines = [str(row[0]) for row in conn.execute(statement).fetchall()]
    finally:
        conn.close()
    return [line for line in lines if line != "ok"]


def check_integrity(path: Path, *, workers: int = 2, cache_kib: int = 16 * 1024) -> list[str]:
    """The problems ``PRAGMA integrity_check`` finds in ``path`` (empty when it says ok).

    Uses up to ``workers`` connections, each with a page cache of ``cache_kib`` KiB.  Raises
    ``sqlite3.DatabaseError`` when SQLite cannot read the file at all.
    """
    per_table = workers > 1 and sqlite3.sqlite_version_info >= PER_TABLE_SINCE
    statements = plan_checks(_tables(path)) if per_table else [FULL_CHECK]
    if len(statements) == 1:
        return _run(path, statements[0], cache_kib)
    try:
        with ThreadPoolExecutor(
            max_workers=min(workers, len(statements)), thread_name_prefix="bakelite-check"
        ) as pool:
            found = list(pool.map(lambda s: _run(path, s, cache_kib), statements))
    except sqlite3.OperationalError:
        # A table the per-table form cannot take (a virtual table whose module this build lacks,
        # say): the one statement whose verdict is defined for every file.
        return _run(path, FULL_CHECK, cache_kib)
    # One problem can be reported by quick_check and by its table's check; report it once.
    return list(dict.fromkeys(line for lines in found for line in lines))
