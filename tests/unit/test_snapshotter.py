"""Snapshots of a live database are page-identical to a committed state, even across a WAL restart."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bakelite.replication.snapshotter import plan_snapshot, snapshot_frames
from bakelite.replication.waltracker import GapError
from bakelite.sqlite.connections import LiveDatabase


def _rows(path: Path) -> list[tuple[object, ...]]:
    con = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return con.execute("SELECT * FROM t ORDER BY id").fetchall()
    finally:
        con.close()


def test_wal_restart_under_a_read_mark_zero_reader_is_detected(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    app = sqlite3.connect(db, isolation_level=None)
    app.execute("PRAGMA journal_mode=WAL")
    app.execute("PRAGMA wal_autocheckpoint=0")
    app.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    for _ in range(50):
        app.execute("INSERT INTO t(v) VALUES (randomblob(700))")
    app.execute("PRAGMA wal_checkpoint(PASSIVE)")  # fully backfilled: our reader gets read-mark 0
    expected = app.execute("SELECT * FROM t ORDER BY id").fetchall()

    live = LiveDatabase(db, busy_timeout=1.0)
    try:
        with live.freeze():
            live.acquire_initial()
        plan = plan_snapshot(live)
        assert plan.overlay  # the fully backfilled frames are still in the WAL
        # The app's next write restarts the WAL under our read-mark-0 reader, overwriting frames.
        for _ in range(20):
            app.execute("INSERT INTO t(v) VALUES (randomblob(900))")
        with pytest.raises(GapError):
            b"".join(snapshot_frames(live, plan))
        # Planned again, the snapshot is exactly the database as of its commit.
        plan = plan_snapshot(live)
        out = tmp_path / "snap.db"
        out.write_bytes(b"".join(snapshot_frames(live, plan)))
        assert _rows(out) == app.execute("SELECT * FROM t ORDER BY id").fetchall()
        assert len(_rows(out)) == len(expected) + 20
    finally:
        live.close()
        app.close()
