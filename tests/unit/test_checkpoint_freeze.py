"""The checkpoint's writer freeze stays short: it never copies more than a bounded tail."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from bakelite.config.model import Database, FileBackend
from bakelite.replication.shipper import DatabaseReplicator
from bakelite.sqlite.connections import FREEZE_TAIL_BYTES, SETTLE_ROUNDS, LiveDatabase
from bakelite.storage.file import FileStorage


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    con.close()
    return path


def write(db: Path, commits: int, size: int = 3000) -> None:
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA wal_autocheckpoint=0")
    for _ in range(commits):
        con.execute("INSERT INTO t(v) VALUES (randomblob(?))", (size,))
    con.close()


class Recorder:
    """copy_tail and tail_bytes for LiveDatabase.checkpoint, recording when the freeze is held."""

    def __init__(self, live: LiveDatabase, tails: list[int]) -> None:
        self.live, self.tails = live, tails
        self.copies_in_freeze = 0
        self.copies = 0

    def copy(self) -> int:
        self.copies += 1
        if self.live._w is not None and self.live._w.in_transaction:
            self.copies_in_freeze += 1
        return 0

    def tail(self) -> int:
        return self.tails.pop(0) if len(self.tails) > 1 else self.tails[0]


def _live(db: Path) -> LiveDatabase:
    live = LiveDatabase(db, busy_timeout=1.0)
    with live.freeze():
        live.acquire_initial()
    return live


def test_a_tail_that_never_settles_puts_the_checkpoint_off_without_a_freeze(db: Path) -> None:
    live = _live(db)
    try:
        write(db, 50)
        wal_before = os.path.getsize(f"{db}-wal")
        rec = Recorder(live, [FREEZE_TAIL_BYTES + 1])
        assert live.checkpoint(rec.copy, rec.tail) is None
        assert rec.copies == SETTLE_ROUNDS and rec.copies_in_freeze == 0
        assert os.path.getsize(f"{db}-wal") == wal_before  # not truncated
    finally:
        live.close()


def test_a_tail_that_settles_is_copied_inside_the_freeze_and_truncated(db: Path) -> None:
    live = _live(db)
    try:
        write(db, 50)
        # Too big at first, small after one round outside the freeze.
        rec = Recorder(live, [FREEZE_TAIL_BYTES * 3, 1000])
        assert live.checkpoint(rec.copy, rec.tail) is True
        assert rec.copies == 2 and rec.copies_in_freeze == 1
        assert os.path.getsize(f"{db}-wal") == 0
    finally:
        live.close()


def _replicator(tmp_path: Path, db: Path) -> DatabaseReplicator:
    """A started replicator with a 64 KiB max_wal_size, on a file backend."""
    backups = tmp_path / "backups"
    rep = DatabaseReplicator(
        Database(name="app", path=db, backends=(FileBackend(path=backups),), max_wal_size=64 * 1024),
        [FileStorage(backups)],
    )
    rep.start()
    return rep


def test_replicator_measures_the_unshipped_tail(tmp_path: Path, db: Path) -> None:
    rep = _replicator(tmp_path, db)
    try:
        write(db, 60)  # 60 commits of one 3 KB row: a page and a bit each, ~0.5 MB of WAL
        tail = rep._tail_bytes()
        frame = 4096 + 24
        assert 60 * frame <= tail <= os.path.getsize(f"{db}-wal")
        # A small tail: the checkpoint runs (and truncates, nobody else reads).
        assert rep.maybe_checkpoint()
        assert rep.status.checkpoints == 1 and rep.status.checkpoints_deferred == 0
        assert rep.status.truncates == 1
        assert rep._tail_bytes() == 0
    finally:
        rep.stop()


def test_replicator_puts_off_a_checkpoint_whose_tail_will_not_settle(
    tmp_path: Path, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bakelite.sqlite.connections as connections

    rep = _replicator(tmp_path, db)
    try:
        write(db, 60)
        monkeypatch.setattr(connections, "FREEZE_TAIL_BYTES", -1)  # no tail is ever small enough
        assert not rep.maybe_checkpoint()
        assert rep.status.checkpoints_deferred == 1 and rep.status.checkpoints == 0
        assert os.path.getsize(f"{db}-wal") > 64 * 1024
        # The rounds outside the freeze shipped every commit all the same.
        assert rep.cursor is not None and rep.cursor.seq == 60
        monkeypatch.undo()
        rep._last_checkpoint = 0.0
        assert rep.maybe_checkpoint() and rep.status.truncates == 1
    finally:
        rep.stop()
