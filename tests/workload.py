"""The marked, self-checking workload: an application process that records its own ground truth.

Each commit ``k`` inserts marker row ``k`` and a log row in the same transaction, plus randomized
inserts, updates, deletes and overflow-page blobs; every so often it runs VACUUM or its own
checkpoint.  After each commit it appends ``{"seq": k, "t": <time after COMMIT returned>,
"digest": <BLAKE3 of every user table>}`` to a JSON-lines log, so a restore can be graded
without any externally stored fingerprint: its markers must be exactly ``{1..m}`` and its digest
must equal the one recorded at ``m``.

usage: python tests/workload.py DB LOG --commits N [--interval S] [--seed N] ...
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import time
from pathlib import Path

import blake3

SCHEMA = """
CREATE TABLE IF NOT EXISTS marker(seq INTEGER PRIMARY KEY, t REAL NOT NULL);
CREATE TABLE IF NOT EXISTS log(seq INTEGER PRIMARY KEY, note TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS data(id INTEGER PRIMARY KEY, k TEXT, v BLOB);
CREATE INDEX IF NOT EXISTS data_k ON data(k);
"""
USER_TABLES = ("marker", "log", "data")


_MOD = 1 << 256


def row_hash(table: str, row: tuple[object, ...]) -> int:
    """BLAKE3 of one row, as a number (rows combine by addition, so order does not matter)."""
    return int.from_bytes(blake3.blake3(f"{table}:{row!r}".encode()).digest(), "big")


def content_digest(con: sqlite3.Connection) -> str:
    """Digest of every row of every user table: the sum of the rows' BLAKE3 hashes mod 2**256.

    Additive, so the writer keeps it up to date per change (``RunningDigest``) instead of
    rehashing the whole database after every commit.
    """
    total = 0
    for table in USER_TABLES:
        for row in con.execute(f"SELECT * FROM {table}"):
            total = (total + row_hash(table, tuple(row))) % _MOD
    return f"{total:064x}"


class RunningDigest:
    """``content_digest`` maintained incrementally from the rows each commit adds and removes."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.total = int(content_digest(con), 16)
        self.staged = self.total

    def add(self, table: str, row: tuple[object, ...]) -> None:
        """A row the open transaction inserted."""
        self.staged = (self.staged + row_hash(table, row)) % _MOD

    def remove(self, table: str, row: tuple[object, ...]) -> None:
        """A row the open transaction deleted (or replaced)."""
        self.staged = (self.staged - row_hash(table, row)) % _MOD

    def commit(self) -> str:
        """The transaction committed: its changes count."""
        self.total = self.staged
        return f"{self.total:064x}"


def markers(con: sqlite3.Connection) -> list[int]:
    """Every marker seq present, sorted."""
    return [r[0] for r in con.execute("SELECT seq FROM marker ORDER BY seq")]


def _put_data(con: sqlite3.Connection, d: RunningDigest, row: tuple[int, str, bytes]) -> None:
    old = con.execute("SELECT id, k, v FROM data WHERE id = ?", (row[0],)).fetchone()
    if old is not None:
        d.remove("data", tuple(old))
    con.execute("INSERT OR REPLACE INTO data(id, k, v) VALUES (?, ?, ?)", row)
    d.add("data", row)


def one_commit(
    con: sqlite3.Connection, k: int, rng: random.Random, blob_every: int, d: RunningDigest
) -> None:
    """The randomized body of commit ``k`` (inside an open transaction), tracked in ``d``."""
    t = time.time()
    con.execute("INSERT INTO marker(seq, t) VALUES (?, ?)", (k, t))
    d.add("marker", (k, t))
    note = f"commit {k} " + "x" * rng.randint(0, 80)
    con.execute("INSERT INTO log(seq, note) VALUES (?, ?)", (k, note))
    d.add("log", (k, note))
    for _ in range(rng.randint(0, 3)):
        _put_data(
            con, d, (rng.randint(1, 2000), f"key{rng.randint(0, 99)}", rng.randbytes(rng.randint(10, 300)))
        )
    if rng.random() < 0.2:
        old = con.execute("SELECT id, k, v FROM data WHERE id = ?", (rng.randint(1, 2000),)).fetchone()
        if old is not None:
            _put_data(con, d, (old[0], old[1], rng.randbytes(50)))
    if rng.random() < 0.05:
        lo = rng.randint(1, 2000)
        hi = lo + rng.randint(0, 20)
        for old in con.execute("SELECT id, k, v FROM data WHERE id BETWEEN ? AND ?", (lo, hi)).fetchall():
            d.remove("data", tuple(old))
        con.execute("DELETE FROM data WHERE id BETWEEN ? AND ?", (lo, hi))
    if blob_every and k % blob_every == 0:
        # Larger than a page: stored across overflow pages.
        _put_data(con, d, (rng.randint(1, 2000), "blob", rng.randbytes(rng.randint(5000, 40000))))


def main(argv: list[str] | None = None) -> int:
    """Run the workload; print a JSON summary on stdout."""
    p = argparse.ArgumentParser()
    p.add_argument("db")
    p.add_argument("log")
    p.add_argument("--commits", type=int, default=100)
    p.add_argument("--interval", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--blob-every", type=int, default=10)
    p.add_argument("--vacuum-every", type=int, default=0)
    p.add_argument("--truncate-every", type=int, default=0, help="run the app's own wal_checkpoint(TRUNCATE)")
    p.add_argument("--autocheckpoint", type=int, default=1000)
    p.add_argument("--rollback-every", type=int, default=0, help="spill and roll back a big transaction")
    p.add_argument("--verify-digest", action="store_true", help="cross-check the running digest")
    p.add_argument("--stop-file", default=None, help="stop early when this file appears")
    a = p.parse_args(argv)

    con = sqlite3.connect(a.db, isolation_level=None, timeout=10)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(f"PRAGMA wal_autocheckpoint={a.autocheckpoint}")
    con.execute("PRAGMA busy_timeout=10000")
    con.executescript(SCHEMA)
    start = (con.execute("SELECT max(seq) FROM marker").fetchone()[0] or 0) + 1
    rng = random.Random(a.seed * 1_000_003 + start)
    digest = RunningDigest(con)
    stats = {"commits": 0, "vacuums": 0, "truncates": 0, "rollbacks": 0, "first": start, "last": start - 1}
    with open(a.log, "a", buffering=1) as logf:
        for k in range(start, start + a.commits):
            if a.stop_file and Path(a.stop_file).exists():
                break
            if a.rollback_every and k % a.rollback_every == 0:
                con.execute("PRAGMA cache_size=20")  # tiny cache: the transaction spills frames
                con.execute("BEGIN")
                for i in range(200):
                    con.execute(
                        "INSERT INTO data(id, k, v) VALUES (?, 'rb', randomblob(600))", (100_000 + i,)
                    )
                con.execute("ROLLBACK")
                con.execute("PRAGMA cache_size=-2000")
                stats["rollbacks"] += 1
            con.execute("BEGIN IMMEDIATE")
            digest.staged = digest.total
            one_commit(con, k, rng, a.blob_every, digest)
            con.execute("COMMIT")
            t = time.time()
            logf.write(json.dumps({"seq": k, "t": t, "digest": digest.commit()}) + "\n")
            if a.verify_digest and content_digest(con) != f"{digest.total:064x}":
                raise SystemExit(f"running digest diverged from the table contents at commit {k}")
            stats["commits"] += 1
            stats["last"] = k
            if a.vacuum_every and k % a.vacuum_every == 0:
                con.execute("VACUUM")
                stats["vacuums"] += 1
            if a.truncate_every and k % a.truncate_every == 0:
                # bakelite always holds a reader, so a blocking checkpoint waits out busy_timeout
                # while holding the write lock: keep that wait short, as the docs advise.
                con.execute("PRAGMA busy_timeout=200")
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                con.execute("PRAGMA busy_timeout=10000")
                stats["truncates"] += 1
            if a.interval:
                time.sleep(a.interval)
    con.close()
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
