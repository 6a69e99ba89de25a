"""Replication lag: time from COMMIT returning in the writer to the commit being durable on the backend.

bakelite writes ``.bakelite/<name>.cursor`` (with the last shipped ``seq``) right after the object
holding those commits is durable on the backend.  A watcher thread polls it every ~1 ms and records
when each seq became durable.  The database is created and snapshotted before the writer starts and
nothing else writes to it, so the replica's seq k is the writer's commit k.

Litestream (0.5): each sync writes an LTX file under ``<replica>/ltx/0/``; its header holds the
timestamp at which that sync read the WAL.  Commit k is taken as durable when the first LTX file whose
header timestamp is at or after the commit time appears (an upper bound on its true lag, within the
1 ms poll plus Litestream's millisecond timestamp).
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _util import (
    PY,
    WRITER,
    Proc,
    bakelite_config,
    cursor_path,
    fresh_dir,
    litestream_bin,
    litestream_config,
    litestream_ready,
    make_small_db,
    percentile,
    read_cursor_seq,
    wait_for,
)


@dataclass(eq=False)
class CursorWatcher(threading.Thread):
    """Polls bakelite's cursor file; records (seq, wall time first seen)."""

    path: Path
    interval: float = 0.001
    seen: list[tuple[int, float]] = field(default_factory=list)
    stop_flag: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, daemon=True)

    def run(self) -> None:
        last_id: tuple[int, int] | None = None
        last_seq = -1
        while not self.stop_flag.is_set():
            try:
                st = os.stat(self.path)
                ident = (st.st_ino, st.st_mtime_ns)
            except FileNotFoundError:
                ident = None
            if ident is not None and ident != last_id:
                now = time.time()
                seq = read_cursor_seq(self.path)
                if seq is not None and seq != last_seq:
                    self.seen.append((seq, now))
                    last_seq = seq
                last_id = ident
            time.sleep(self.interval)


@dataclass(eq=False)
class LtxWatcher(threading.Thread):
    """Polls Litestream's L0 directory; records (ltx header timestamp, wall time first seen)."""

    dir: Path
    interval: float = 0.001
    seen: list[tuple[float, float]] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    stop_flag: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, daemon=True)

    def run(self) -> None:
        while not self.stop_flag.is_set():
            try:
                names = os.listdir(self.dir)
            except FileNotFoundError:
                names = []
            now = time.time()
            for n in names:
                if n.endswith(".ltx") and n not in self.names:
                    ts = ltx_timestamp(self.dir / n)
                    if ts is not None:
                        self.names.add(n)
                        self.seen.append((ts, now))
            time.sleep(self.interval)


def ltx_timestamp(path: Path) -> float | None:
    """The Timestamp field (ms since epoch) of an LTX v1 header, in seconds."""
    try:
        with open(path, "rb") as f:
            head = f.read(48)
    except FileNotFoundError:
        return None
    if len(head) < 48 or head[:4] != b"LTX1":
        return None
    # magic(4) flags(4) page_size(4) commit(4) min_txid(8) max_txid(8) timestamp(8)
    ts_ms: int = struct.unpack_from(">q", head, 32)[0]
    return ts_ms / 1000.0


def summarize(lags: list[float]) -> dict[str, Any]:
    return {
        "n": len(lags),
        "p50": percentile(lags, 50),
        "p90": percentile(lags, 90),
        "p99": percentile(lags, 99),
        "max": max(lags) if lags else float("nan"),
        "mean": sum(lags) / len(lags) if lags else float("nan"),
    }


def run_writer(db: Path, out: Path, commits: int, interval: float, duration: float, seed: int) -> Any:
    args = [PY, str(WRITER), str(db), str(out), "--commits", str(commits), "--seed", str(seed)]
    if interval:
        args += ["--interval", str(interval)]
    if duration:
        args += ["--duration", str(duration)]
    import subprocess

    subprocess.run(args, check=True, timeout=3600)
    return json.loads(out.read_text())


def bakelite_lag(
    root: Path, *, commits: int, interval: float = 0.0, duration: float = 0.0, seed: int = 1, extra: str = ""
) -> dict[str, Any]:
    """Lag of every commit under a real ``bakelite daemon`` (file backend)."""
    fresh_dir(root)
    db, backups, name = root / "app.db", root / "backups", "app"
    make_small_db(db)
    cfg = bakelite_config(root, db, name, backups, extra)
    cur = cursor_path(db, name)
    daemon = Proc([PY, "-m", "bakelite", "daemon", "--config", str(cfg)], root / "daemon.log")
    try:
        wait_for(lambda: read_cursor_seq(cur) == 0, daemon, 120)
        watcher = CursorWatcher(cur)
        watcher.start()
        w = run_writer(db, root / "writer.json", commits, interval, duration, seed)
        n = w["commits"]
        wait_for(lambda: bool(watcher.seen) and watcher.seen[-1][0] >= n, daemon, 120)
        watcher.stop_flag.set()
        watcher.join()
    finally:
        code = daemon.stop()
    final = read_cursor_seq(cur)
    # durable[k] = first time a cursor seq >= k was seen
    lags: list[float] = []
    j = 0
    seen = watcher.seen
    for k, t_commit in enumerate(w["t"], start=1):
        while seen[j][0] < k:
            j += 1
        lags.append(seen[j][1] - t_commit)
    return {
        "commits": n,
        "writer_elapsed": w["elapsed"],
        "cursor_updates": len(seen),
        "updates": [(seq, t - w["t"][0]) for seq, t in seen],
        "final_seq": final,
        "daemon_exit": code,
        "replica_bytes": sum(f.stat().st_size for f in backups.rglob("*") if f.is_file()),
        "lag": summarize(lags),
        "lags": lags,
    }


def litestream_lag(
    root: Path, *, commits: int, interval: float = 0.0, duration: float = 0.0, seed: int = 1
) -> dict[str, Any]:
    """Lag of every commit under ``litestream replicate`` (file replica), see the module doc."""
    exe = litestream_bin()
    if exe is None:
        raise RuntimeError("litestream is not installed")
    fresh_dir(root)
    db, replica = root / "app.db", root / "replica"
    make_small_db(db)
    cfg = litestream_config(root, db, replica)
    proc = Proc([exe, "replicate", "-config", str(cfg)], root / "litestream.log")
    try:
        wait_for(lambda: litestream_ready(replica), proc, 120)
        time.sleep(1.5)  # let its first L0 sync after the snapshot pass
        watcher = LtxWatcher(replica / "ltx" / "0")
        # Files that exist before the writer starts are not commits of this run.
        with contextlib.suppress(FileNotFoundError):
            watcher.names.update(os.listdir(watcher.dir))
        watcher.start()
        w = run_writer(db, root / "writer.json", commits, interval, duration, seed)
        last_t = w["t"][-1]
        wait_for(lambda: any(ts >= last_t for ts, _ in watcher.seen), proc, 120)
        watcher.stop_flag.set()
        watcher.join()
    finally:
        proc.stop()
    seen = sorted(watcher.seen)
    lags: list[float] = []
    for t_commit in w["t"]:
        durable = min((seen_at for ts, seen_at in seen if ts >= t_commit), default=None)
        if durable is not None:
            lags.append(durable - t_commit)
    return {
        "commits": w["commits"],
        "writer_elapsed": w["elapsed"],
        "ltx_files": len(seen),
        "replica_bytes": sum(f.stat().st_size for f in replica.rglob("*") if f.is_file()),
        "lag": summarize(lags),
        "lags": lags,
    }


if __name__ == "__main__":
    import argparse
    import sys

    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/tmp/bakelite-bench/lag")
    ap.add_argument("--commits", type=int, default=10_000)
    ap.add_argument("--interval", type=float, default=0.0)
    ap.add_argument("--duration", type=float, default=0.0)
    ap.add_argument("--litestream", action="store_true")
    a = ap.parse_args()
    fn = litestream_lag if a.litestream else bakelite_lag
    r = fn(Path(a.root), commits=a.commits, interval=a.interval, duration=a.duration)
    r.pop("lags")
    json.dump(r, sys.stdout, indent=1)
    print()
