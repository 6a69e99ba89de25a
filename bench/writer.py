"""The application under test: a separate process making single-row (or N-row) commits.

Records, for every commit k (1-based), the wall-clock time right after COMMIT returned and the
commit's latency (BEGIN IMMEDIATE to COMMIT returned), and writes them as JSON at the end, so that
recording costs nothing while the commits run.

It also counts the WAL frames its commits appended (from ``mxFrame`` in the ``-shm`` wal-index
header, read after each commit outside the timed interval), so a run can say how many bytes of WAL
it generated whatever the checkpoints in between did.

usage: python bench/writer.py DB OUT.json --commits N [--rows R] [--interval S] [--duration S]
       [--pause-after K --pause S] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import struct
import sys
import time


class WalFrames:
    """Frames appended to the WAL, summed over resets (one ``pread`` of the wal-index per call)."""

    def __init__(self, db: str) -> None:
        self.fd: int | None = None
        self.path = f"{db}-shm"
        self.last = 0
        self.total = 0
        self.page_size = 0

    def update(self) -> None:
        if self.fd is None:
            try:
                self.fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return
        head = os.pread(self.fd, 24, 0)
        if len(head) < 24:
            return
        # WalIndexHdr (native byte order): iVersion u32, unused u32, iChange u32, isInit u8,
        # bigEndCksum u8, szPage u16, mxFrame u32, ...
        sz, mx = struct.unpack_from("=HI", head, 14)
        self.page_size = 65536 if sz == 1 else sz
        # The WAL restarts (mxFrame falls) only when a writer begins after a complete checkpoint,
        # so a fall means this commit's frames were written from frame 1.
        self.total += mx - self.last if mx >= self.last else mx
        self.last = mx

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)

    @property
    def bytes(self) -> int:
        return self.total * (self.page_size + 24)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("db")
    p.add_argument("out")
    p.add_argument("--commits", type=int, default=5000)
    p.add_argument("--rows", type=int, default=1)
    p.add_argument("--interval", type=float, default=0.0, help="seconds between commit starts")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds")
    p.add_argument("--pause-after", type=int, default=0, help="pause after this commit (1-based)")
    p.add_argument("--pause", type=float, default=0.0, help="seconds to pause after --pause-after")
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
    frames = WalFrames(a.db)
    frames.update()
    frames.total = 0
    times: list[float] = []
    lat: list[float] = []
    payloads = ["p" * rng.randint(20, 200) for _ in range(64)]
    t_start = time.perf_counter()
    next_at = t_start
    paused = 0.0
    for k in range(1, a.commits + 1):
        if a.duration and time.perf_counter() - t_start - paused >= a.duration:
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
        try:
            con.execute("BEGIN IMMEDIATE")
            con.executemany("INSERT INTO kv(k, v, t) VALUES (?, ?, ?)", rows)
            con.execute("COMMIT")
        except sqlite3.OperationalError as e:
            # Say how long it waited: busy_timeout running out, or SQLite giving up at once.
            wal = os.stat(f"{a.db}-wal").st_size if os.path.exists(f"{a.db}-wal") else 0
            raise SystemExit(
                f"commit {k} failed after {time.perf_counter() - t0:.3f} s: {e} "
                f"(WAL {wal:,} bytes, {time.time():.3f})"
            ) from e
        t1 = time.perf_counter()
        times.append(time.time())
        lat.append(t1 - t0)
        frames.update()
        if k == a.pause_after and a.pause:
            time.sleep(a.pause)
            paused += a.pause
            next_at += a.pause
    elapsed = time.perf_counter() - t_start - paused
    con.close()
    frames.close()
    with open(a.out, "w") as f:
        json.dump(
            {
                "commits": len(times),
                "elapsed": elapsed,
                "paused": paused,
                "wal_bytes": frames.bytes,
                "t": times,
                "latency": lat,
            },
            f,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
