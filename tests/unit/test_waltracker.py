"""The WAL tracker against real WAL files written by SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from bakelite.replication.waltracker import GapError, WalTracker


@pytest.fixture
def con(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA wal_autocheckpoint=0")
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    yield c
    c.close()


def _tracker(tmp_path: Path) -> WalTracker:
    return WalTracker(tmp_path / "t.db-wal", 4096)


def _apply(base: bytes, tracker: WalTracker, ps: int = 4096) -> bytes:
    img = bytearray(base)
    for c in tracker.pending:
        for pg, page in tracker.read_pages(c):
            if pg <= c.db_pages:
                if len(img) < pg * ps:
                    img.extend(bytes(pg * ps - len(img)))
                img[(pg - 1) * ps : pg * ps] = page
        del img[c.db_pages * ps :]
    return bytes(img)


def test_each_commit_is_found_once_with_its_time(con: sqlite3.Connection, tmp_path: Path) -> None:
    tr = _tracker(tmp_path)
    assert tr.observe(1.0) == 1  # CREATE TABLE
    for _ in range(3):
        con.execute("INSERT INTO t(v) VALUES (randomblob(100))")
    assert tr.observe(2.0) == 3
    assert tr.observe(3.0) == 0
    assert [c.time for c in tr.pending] == [1.0, 2.0, 2.0, 2.0]
    frames = [c.last_frame for c in tr.pending]
    assert frames == sorted(frames)


def test_transaction_in_progress_is_not_a_commit(con: sqlite3.Connection, tmp_path: Path) -> None:
    tr = _tracker(tmp_path)
    tr.observe(1.0)
    con.execute("PRAGMA cache_size=10")  # spill uncommitted frames into the WAL
    con.execute("BEGIN")
    for _ in range(300):
        con.execute("INSERT INTO t(v) VALUES (randomblob(500))")
    assert tr.wal_size() > 100_000
    assert tr.observe(2.0) == 0
    con.execute("COMMIT")
    assert tr.observe(3.0) == 1
    assert tr.pending[-1].time == 3.0


def test_rolled_back_frames_overwritten_by_a_shorter_commit(con: sqlite3.Connection, tmp_path: Path) -> None:
    """Regression: frames past the overwritten ones still look intact; they must not be trusted."""
    tr = _tracker(tmp_path)
    tr.observe(1.0)
    con.execute("PRAGMA cache_size=10")
    con.execute("BEGIN")
    for _ in range(300):
        con.execute("INSERT INTO t(v) VALUES (randomblob(500))")
    assert tr.observe(2.0) == 0  # scans the spilled, uncommitted frames
    con.execute("ROLLBACK")
    con.execute("PRAGMA cache_size=-2000")
    con.execute("INSERT INTO t(v) VALUES (x'00')")  # overwrites only the first few of those frames
    assert tr.observe(3.0) == 1
    con.execute("INSERT INTO t(v) VALUES (x'01')")
    assert tr.observe(4.0) == 1
    # The shipped pages rebuild exactly the database SQLite sees.
    db = tmp_path / "t.db"
    rebuilt = _apply(b"", tr)
    out = tmp_path / "rebuilt.db"
    out.write_bytes(rebuilt)
    r = sqlite3.connect(f"file:{out}?immutable=1", uri=True)
    assert (
        r.execute("SELECT id, v FROM t ORDER BY id").fetchall()
        == con.execute("SELECT id, v FROM t ORDER BY id").fetchall()
    )
    assert r.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    r.close()
    assert db.exists()


def test_restart_with_pending_commits_is_a_gap(con: sqlite3.Connection, tmp_path: Path) -> None:
    tr = _tracker(tmp_path)
    tr.observe(1.0)
    con.execute("INSERT INTO t(v) VALUES (1)")
    tr.observe(2.0)
    assert tr.pending
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # nobody protects the frames here
    con.execute("INSERT INTO t(v) VALUES (2)")
    with pytest.raises(GapError):
        tr.observe(3.0)


def test_new_generation_after_everything_shipped(con: sqlite3.Connection, tmp_path: Path) -> None:
    tr = _tracker(tmp_path)
    tr.observe(1.0)
    tr.shipped(tr.take())
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("INSERT INTO t(v) VALUES (2)")
    assert tr.observe(2.0) == 1
    assert tr.pending[0].last_frame == len(tr.pending[0].frames) - 1  # starts at frame 0


def test_take_respects_the_size_limit(con: sqlite3.Connection, tmp_path: Path) -> None:
    tr = _tracker(tmp_path)
    for _ in range(10):
        con.execute("INSERT INTO t(v) VALUES (randomblob(3000))")
    tr.observe(1.0)
    first = tr.take(limit_bytes=4096 * 3)
    assert 1 <= len(first) < len(tr.pending)
    tr.shipped(first)
    assert tr.take() == tr.pending


def test_a_probe_reads_only_its_frames_and_the_full_scan_carries_on(
    con: sqlite3.Connection, tmp_path: Path
) -> None:
    for _ in range(40):
        con.execute("INSERT INTO t(v) VALUES (randomblob(100))")  # two frames each
    probed, whole = _tracker(tmp_path), _tracker(tmp_path)
    found = probed.observe(1.0, max_frames=15)
    assert 0 < found < 41
    assert probed.commit_next <= 15
    assert probed.observe(2.0) == 41 - found
    assert whole.observe(2.0) == 41
    assert [(c.last_frame, c.frames) for c in probed.pending] == [
        (c.last_frame, c.frames) for c in whole.pending
    ]
    assert [c.time for c in probed.pending] == [1.0] * found + [2.0] * (41 - found)


PROBE_WITHOUT_NUMPY = """
import sqlite3, sys, tempfile, os
from pathlib import Path
from bakelite.replication.waltracker import WalTracker
from bakelite.sqlite import wal
d = tempfile.mkdtemp()
db = os.path.join(d, "a.db")
con = sqlite3.connect(db, isolation_level=None)
con.execute("PRAGMA journal_mode=WAL")
con.execute("PRAGMA wal_autocheckpoint=0")
con.execute("CREATE TABLE t(x)")
for _ in range(200):
    con.execute("INSERT INTO t VALUES (randomblob(3000))")
wal._python_scanned = wal._PYTHON_BUDGET_BYTES  # a plain scan would import numpy now
tr = WalTracker(Path(db + "-wal"), 4096)
assert tr.observe(1.0, force=False, max_frames=15) > 0
assert "numpy" not in sys.modules, "the probe imported numpy"
n = len(tr.pending)
assert tr.observe(2.0) == 201 - n and "numpy" in sys.modules
print("ok")
"""


def test_a_probe_never_waits_for_numpy() -> None:
    # A probe runs while numpy may still be importing in the background: it checks in Python.
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", PROBE_WITHOUT_NUMPY], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
