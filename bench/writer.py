"""The application under test: a separate process making single-row (or N-row) commits.

Records, for every commit k (1-based), the wall-clock time right after COMMIT returned and the
commit's latency (BEGIN IMMEDIATE to COMMIT returned), and writes them as JSON at the end, so that
recording costs nothing while the commits run.

usage: python bench/writer.py DB OUT.json --commits N [--rows R] [--interval S] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("db")
    p.add_argument("out")
    p.add_argument("--commits", type=int, default=5000)
    p.add_argument("--rows", type=int, default=1)
    p.add_argument("--interval", type=float, default=0.0, help="seconds between commit starts")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--synchronous", default="NORMAL")
    p.add_argument(
        "--autocheckpoint", type=int, default=None, help="PRAGMA wal_autocheckpoint (default: 1000)"
    )
    a = p.parse_args(argv)

    rng = random.Random(a.seed)
    con = sqlite3.connect(a.db, isolation_level=None, timeout=10)
    con.execute("PRAGMA busy_timeout=10000")
    con.execute(f"PRAGMA synchronous={a.synchronous}")
    if a.autocheckpoint is not None:
        con.execute(f"PRAGMA wal_autocheckpoint={a.autocheckpoint}")
    mode = con.execute("PRAGMA journal_mode").fetchone()[0]
    if mode != "wal":
        raise SystemExit(f"{a.db} is not in WAL mode ({mode})")
    times: list[float] = []
    lat: list[float] = []
    payloads = ["p" * rng.randint(20, 200) for _ in range(64)]
    t_start = time.perf_counter()
    next_at = t_start
    for _k in range(a.commits):
        if a.duration and time.perf_counter() - t_start >= a.duration:
            break
        if a.interval:
            now = time.perf_counter()
            if next_at > now:
                time.sleep(next_at - now)
            next_at += a.interval
        rows = [
            (f"user{rng.randrange(10**6):06d}", payloads[rng.randrange(64)], time.time())
            for _ in range(a.rows)
        ]
        t0 = time.perf_counter()
        con.execute("BEGIN IMMEDIATE")
        con.executemany("INSERT INTO kv(k, v, t) VALUES (?, ?, ?)", rows)
        con.execute("COMMIT")
        t1 = time.perf_counter()
        times.append(time.time())
        lat.append(t1 - t0)
    elapsed = time.perf_counter() - t_start
    con.close()
    with open(a.out, "w") as f:
        json.dump({"commits": len(times), "elapsed": elapsed, "t": times, "latency": lat}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
