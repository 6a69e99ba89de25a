"""bakelite never drops the POSIX locks of other SQLite connections in its own process."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from bakelite.config.model import Database, FileBackend
from bakelite.ops.doctor import check_database_file
from bakelite.sqlite.connections import LiveDatabase


def _my_locks(*paths: Path) -> set[tuple[int, str, str]]:
    """(inode, start, end) of every POSIX lock this process holds on ``paths`` (from /proc/locks)."""
    inodes = {os.stat(p).st_ino for p in paths}
    out = set()
    for line in Path("/proc/locks").read_text().splitlines():
        f = line.split()
        if "->" in f or len(f) < 8 or f[1] != "POSIX" or int(f[4]) != os.getpid():
            continue
        ino = int(f[5].split(":")[2])
        if ino in inodes:
            out.add((ino, f[6], f[7]))
    return out


def test_app_locks_survive_bakelite_open_and_close(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    app = sqlite3.connect(db, isolation_level=None)
    app.execute("PRAGMA journal_mode=WAL")
    app.execute("PRAGMA wal_autocheckpoint=0")
    app.execute("CREATE TABLE t(x)")
    for i in range(20):
        app.execute("INSERT INTO t VALUES (?)", (i,))
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()  # the app's read transaction holds locks
    before = _my_locks(db, Path(f"{db}-shm"))
    assert before, "the app's read transaction should hold POSIX locks"

    # bakelite, embedded in the same process, opens and closes the database; doctor reads it.
    LiveDatabase(db, busy_timeout=1.0).close()
    check = check_database_file(Database(name="app", path=db, backends=(FileBackend(path=tmp_path),)))
    assert check.level == "ok"

    # Closing any descriptor on the file would have dropped the app's locks.
    assert before <= _my_locks(db, Path(f"{db}-shm"))
    reader.execute("COMMIT")
    reader.close()
    app.close()
