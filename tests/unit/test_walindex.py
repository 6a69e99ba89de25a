"""The WAL-index header reader (sqlite/walindex.py): parsing, the slot-0 proof, the shared descriptor."""

from __future__ import annotations

import os
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from bakelite.sqlite import walindex
from bakelite.sqlite.walindex import WalIndexState, parse_wal_index, surely_off_slot0


def header(mx_frame: int, backfilled: int, salts: bytes = b"saltsalt", is_init: int = 1) -> bytes:
    one = struct.pack(
        "=IIIBBHII8s8s8s", 3007000, 0, 7, is_init, 0, 4096, mx_frame, 3, b"\0" * 8, salts, b"\0" * 8
    )
    return one + one + struct.pack("=I", backfilled) + bytes(walindex.HEADER_BYTES - 100)


def test_parses_both_copies_and_the_backfill() -> None:
    assert parse_wal_index(header(12, 5)) == WalIndexState(b"saltsalt", 12, 5)


def test_a_torn_short_or_uninitialised_header_says_nothing() -> None:
    raw = bytearray(header(12, 5))
    raw[16] ^= 1  # the first copy being rewritten
    assert parse_wal_index(bytes(raw)) is None
    assert parse_wal_index(header(12, 5)[:100]) is None
    assert parse_wal_index(header(12, 5, is_init=0)) is None


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[int, int]]:
    """(mxFrame, nBackfill) over time within one generation: both only grow, nBackfill <= mxFrame."""
    mx, nb, out = 0, 0, []
    for _ in range(draw(st.integers(1, 12))):
        mx += draw(st.integers(0, 3))
        nb = draw(st.integers(nb, mx))
        out.append((mx, nb))
    return out


@given(histories(), st.data())
def test_off_slot0_only_when_no_moment_between_could_have_had_it(
    history: list[tuple[int, int]], data: st.DataObject
) -> None:
    # A reader begun between the two readings saw one moment of the history and took slot 0
    # exactly when nBackfill equalled mxFrame then: the proof must never claim otherwise.
    i = data.draw(st.integers(0, len(history) - 1))
    j = data.draw(st.integers(i, len(history) - 1))
    k = data.draw(st.integers(j, len(history) - 1))
    before, after = (WalIndexState(b"a" * 8, *history[n]) for n in (i, k))
    if surely_off_slot0(before, after):
        assert history[j][0] != history[j][1]


def test_a_new_generation_or_an_unknown_reading_proves_nothing() -> None:
    a = WalIndexState(b"a" * 8, 10, 0)
    assert surely_off_slot0(a, a)
    assert not surely_off_slot0(a, WalIndexState(b"b" * 8, 10, 0))
    assert not surely_off_slot0(None, a)
    assert not surely_off_slot0(a, None)
    assert not surely_off_slot0(WalIndexState(b"a" * 8, 0, 0), WalIndexState(b"a" * 8, 4, 0))


def _wal_db(tmp_path: Path) -> Path:
    db = tmp_path / "app.db"
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t(v)")
    con.close()
    return db


APP = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("PRAGMA wal_autocheckpoint=0")
for _ in range(int(sys.argv[2])):
    con.execute("INSERT INTO t VALUES (randomblob(100))")
print(*con.execute(f"PRAGMA wal_checkpoint({sys.argv[3]})").fetchone())
"""


def test_reads_what_sqlite_publishes(tmp_path: Path) -> None:
    db = _wal_db(tmp_path)
    holder = sqlite3.connect(db)  # keeps -wal and -shm alive between the app's runs
    holder.execute("SELECT 1 FROM t").fetchall()
    fd = walindex.open_shm(Path(f"{db}-shm"))
    assert fd is not None
    try:
        out = subprocess.run(
            [sys.executable, "-c", APP, str(db), "4", "PASSIVE"], capture_output=True, text=True, check=True
        )
        busy, log, done = map(int, out.stdout.split())
        state = walindex.read_wal_index(fd)
        assert state is not None and busy == 0
        assert (state.max_frame, state.backfilled) == (log, done) and log >= 4
        salts = Path(f"{db}-wal").read_bytes()[16:24]
        assert state.salts == salts
    finally:
        walindex.release_shm(fd)
        holder.close()


def test_the_descriptor_is_shared_and_closed_only_once_unused_and_unlinked(tmp_path: Path) -> None:
    db = _wal_db(tmp_path)
    holder = sqlite3.connect(db)
    holder.execute("SELECT 1 FROM t").fetchall()
    shm = Path(f"{db}-shm")
    a = walindex.open_shm(shm)
    b = walindex.open_shm(shm)
    assert a is not None and a == b
    walindex.release_shm(a)
    os.fstat(a)  # another user left: still open
    walindex.release_shm(b)
    os.fstat(a)  # no user, but the file is still there: kept (closing could drop SQLite's locks)
    again = walindex.open_shm(shm)
    assert again == a
    holder.close()  # the last connection: SQLite unlinks -shm
    assert not shm.exists()
    walindex.release_shm(again)
    assert all(e[0] != again for e in walindex._shm.values())
    try:
        os.fstat(again)
        closed = False
    except OSError:
        closed = True
    assert closed


def test_a_missing_shm_has_no_descriptor(tmp_path: Path) -> None:
    assert walindex.open_shm(tmp_path / "none.db-shm") is None
