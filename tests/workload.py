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


def content_digest(con: sqlite3.Connection) -> str:
    """BLAKE3 over every row of every user table, in primary-key order."""
    h = blake3.blake3()
    for table in USER_TABLES:
        h.update(table.encode())
        for row in con.execute(f"SELECT * FROM {table} ORDER BY 1"):
            h.update(repr(row).encode())
    return h.hexdigest()


def markers(con: sqlite3.Connection) -> list[int]:
    """Every marker seq present, sorted."""
    return [r[0] for r in con.execute("SELECT seq FROM marker ORDER BY seq")]


def one_commit(con: sqlite3.Connection, k: int, rng: random.Random, blob_every: int) -> None:
    """The randomized body of commit ``k`` (inside an open transaction)."""
    con.execute("INSERT INTO marker(seq, t) VALUES (?, ?)", (k, time.time()))
    con.execute("INSERT INTO log(seq, note) VALUES (?, ?)", (k, f"commit {k} " + "x" * rng.randint(0, 80)))
    for _ in range(rng.randint(0, 3)):
        con.execute(
            "INSERT OR REPLACE INTO data(id, k, v) VALUES (?, ?, ?)",
            (rng.randint(1, 2000), f"key{rng.randint(0, 99)}", rng.randbytes(rng.randint(10, 300))),
        )
    if rng.random() < 0.2:
        con.execute("UPDATE data SET v = ? WHERE id = ?", (rng.randbytes(50), rng.randint(1, 2000)))
    if rng.random() < 0.05:
        lo = rng.randint(1, 2000)
        con.execute("DELETE FROM data WHERE id BETWEEN ? AND ?", (lo, lo + rng.randint(0, 20)))
    if blob_every and k % blob_every == 0:
        # Larger than a page: stored across overflow pages.
        con.execute(
            "INSERT OR REPLACE INTO data(id, k, v) VALUES (?, 'blob', ?)",
            (rng.randint(1, 2000), rng.randbytes(rng.randint(5000, 40000))),
        )


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
    p.add_argument("--digest-every", type=int, default=1)
    p.add_argument("--stop-file", default=None, help="stop early when this file appears")
    a = p.parse_args(argv)

    con = sqlite3.connect(a.db, isolation_level=None, timeout=10)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(f"PRAGMA wal_autocheckpoint={a.autocheckpoint}")
    con.execute("PRAGMA busy_timeout=10000")
    con.executescript(SCHEMA)
    start = (con.execute("SELECT max(seq) FROM marker").fetchone()[0] or 0) + 1
    rng = random.Random(a.seed * 1_000_003 + start)
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
            one_commit(con, k, rng, a.blob_every)
            con.execute("COMMIT")
            t = time.time()
            digest = content_digest(con) if (a.digest_every and k % a.digest_every == 0) else None
            logf.write(json.dumps({"seq": k, "t": t, "digest": digest}) + "\n")
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
