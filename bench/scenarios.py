"""The benchmark scenarios: each returns a ``Table`` (and raw data) for bakelite, Litestream, baselines."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _util import (
    PY,
    RESULTS,
    WRITER,
    PeakSampler,
    Proc,
    Table,
    bakelite_config,
    cursor_path,
    du,
    file_size,
    fresh_dir,
    litestream_bin,
    litestream_config,
    litestream_ready,
    make_small_db,
    percentile,
    read_cursor_seq,
    timed,
    wait_for,
)
from lag import bakelite_lag, litestream_lag

MiB = 1024 * 1024
NAME = "app"


def vm_hwm_mib(pid: int) -> float | None:
    """Peak RSS of a live process (``VmHWM``)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return None
    return None


def copy_db(src: Path, dst: Path) -> None:
    for suffix in ("-wal", "-shm"):
        Path(f"{dst}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(src, dst)


# -- initial snapshot + restore ------------------------------------------------------------------


class Snapshots:
    """Initial snapshot (start → first restorable) for each contender; keeps the last run's replicas."""

    def __init__(self, work: Path, src: Path, label: str) -> None:
        self.work = work
        self.src = src
        self.label = label
        self.db_bytes = src.stat().st_size
        self.table = Table(
            f"initial snapshot, {label} database (start → first restorable)",
            [("seconds", "s"), ("replica", "MiB"), ("peak RSS", "MiB")],
            baseline=".backup + zstd -3",
        )
        self.bakelite_root = work / "bakelite"
        self.litestream_root = work / "litestream"
        self.baseline_root = work / "baseline"

    def run(self, runs: int, with_litestream: bool) -> Table:
        for _ in range(runs):
            self.baseline()
            self.bakelite()
            if with_litestream:
                self.litestream()
        return self.table

    def baseline(self) -> None:
        root = fresh_dir(self.baseline_root)
        db = root / "app.db"
        copy_db(self.src, db)
        backup, packed = root / "app.backup", root / "app.backup.zst"
        t1 = timed(["sqlite3", str(db), f".backup '{backup}'"])
        t2 = timed(["zstd", "-3", "-q", "-f", str(backup), "-o", str(packed)])
        self.table.add(".backup + zstd -3", "seconds", t1.seconds + t2.seconds)
        self.table.add(".backup + zstd -3", "replica", packed.stat().st_size / MiB)
        self.table.add(".backup + zstd -3", "peak RSS", max(t1.rss_mib or 0, t2.rss_mib or 0))

    def bakelite(self) -> None:
        root = fresh_dir(self.bakelite_root)
        db, backups = root / "app.db", root / "backups"
        copy_db(self.src, db)
        cfg = bakelite_config(root, db, NAME, backups)
        cur = cursor_path(db, NAME)
        daemon = Proc([PY, "-m", "bakelite", "daemon", "--config", str(cfg)], root / "daemon.log")
        try:
            secs = wait_for(lambda: read_cursor_seq(cur) == 0, daemon, 600)
            rss = vm_hwm_mib(daemon.p.pid)
        finally:
            daemon.stop()
        self.table.add("bakelite", "seconds", secs)
        self.table.add("bakelite", "replica", du(backups) / MiB)
        self.table.add("bakelite", "peak RSS", rss)

    def litestream(self) -> None:
        exe = litestream_bin()
        assert exe is not None
        root = fresh_dir(self.litestream_root)
        db, replica = root / "app.db", root / "replica"
        copy_db(self.src, db)
        cfg = litestream_config(root, db, replica)
        proc = Proc([exe, "replicate", "-config", str(cfg)], root / "litestream.log")
        try:
            secs = wait_for(lambda: litestream_ready(replica), proc, 900)
            rss = vm_hwm_mib(proc.p.pid)
        finally:
            proc.stop()
        self.table.add("litestream", "seconds", secs)
        self.table.add("litestream", "replica", du(replica) / MiB)
        self.table.add("litestream", "peak RSS", rss)


# The debug line ops/restore.py logs at the end of a restore.
_RESTORE_SPLIT = re.compile(r"data ([\d.]+) s, fsync done ([\d.]+) s later, integrity_check ([\d.]+) s")


def restore_table(snap: Snapshots, runs: int, with_litestream: bool) -> Table:
    """Restore the latest state from each contender's replica, with peak RSS."""
    t = Table(
        f"restore latest, {snap.label} database (warm page cache)",
        [("seconds", "s"), ("peak RSS", "MiB")],
        baseline="zstd -d",
    )
    out_dir = fresh_dir(snap.work / "restored")
    out = out_dir / "out.db"

    def clean() -> None:
        for suffix in ("", "-wal", "-shm", ".tmp-restore"):
            Path(f"{out}{suffix}").unlink(missing_ok=True)

    packed = snap.baseline_root / "app.backup.zst"
    cfg = snap.bakelite_root / "bakelite.toml"
    ls_replica = snap.litestream_root / "replica"
    cmds: dict[str, list[str]] = {
        "cp": ["cp", str(snap.src), str(out)],
        "zstd -d": ["zstd", "-d", "-q", "-f", str(packed), "-o", str(out)],
        "bakelite": [
            PY,
            "-m",
            "bakelite",
            "restore",
            "--db",
            NAME,
            "--output",
            str(out),
            "--config",
            str(cfg),
            "--log-level",
            "debug",  # for the split of its time (below)
        ],
    }
    split: dict[str, list[float]] = {"data": [], "check": []}
    exe = litestream_bin()
    if with_litestream and exe is not None:
        cmds["litestream"] = [exe, "restore", "-o", str(out), f"file://{ls_replica}"]
    for _ in range(runs):
        for row, cmd in cmds.items():
            clean()
            r = timed(cmd)
            t.add(row, "seconds", r.seconds)
            t.add(row, "peak RSS", r.rss_mib)
            m = _RESTORE_SPLIT.search(r.stderr) if row == "bakelite" else None
            if m:
                split["data"].append(float(m.group(1)))
                split["check"].append(float(m.group(3)))
    clean()
    if split["data"]:
        data, check = statistics.median(split["data"]), statistics.median(split["check"])
        base = t.rows["zstd -d"]["seconds"].median
        t.notes.append(
            f"bakelite's own split (its debug log, median): fetch, verify, decompress and write "
            f"{data:.2f} s ({data / base:.2f}x zstd -d), then integrity_check {check:.2f} s "
            "(the fsync runs alongside it)"
        )
    # For reference: what the integrity_check every bakelite restore runs costs on its own.
    chk = timed(["sqlite3", f"file:{snap.src}?immutable=1", "PRAGMA integrity_check"])
    t.notes.append(
        f"bakelite's restore includes fsync and PRAGMA integrity_check; integrity_check alone takes "
        f"{chk.seconds:.2f} s on this file (sqlite3 CLI). cp and zstd -d do not fsync."
    )
    return t


# -- app overhead --------------------------------------------------------------------------------


def writer_run(
    db: Path, out: Path, commits: int, rows: int = 1, seed: int = 1, extra: Sequence[str] = ()
) -> dict[str, Any]:
    p = subprocess.run(
        [
            PY,
            str(WRITER),
            str(db),
            str(out),
            "--commits",
            str(commits),
            "--rows",
            str(rows),
            "--seed",
            str(seed),
            *extra,
        ],
        stderr=subprocess.PIPE,
        text=True,
        timeout=3600,
    )
    if p.returncode != 0:
        raise RuntimeError(f"writer exited {p.returncode} on {db}:\n{p.stderr[-3000:]}")
    w: dict[str, Any] = json.loads(out.read_text())
    return w


@dataclass(frozen=True)
class Workload:
    """What the writer does in one overhead run."""

    label: str
    commits: int
    rows: int = 1
    interval: float = 0.0  # seconds between commit starts (0: as fast as it can)
    duration: float = 0.0  # stop after this many seconds (0: after ``commits``)

    def args(self) -> list[str]:
        out: list[str] = []
        if self.interval:
            out += ["--interval", str(self.interval)]
        if self.duration:
            out += ["--duration", str(self.duration)]
        return out


def overhead_workloads(quick: bool, which: set[str]) -> list[Workload]:
    """The overhead scenarios in ``which`` ("overhead", "overhead-batch", "overhead-sustained")."""
    out: list[Workload] = []
    if "overhead" in which:
        n = 1_000 if quick else 5_000
        out.append(Workload(f"{n:,} × 1 row", n))
    if "overhead-batch" in which:
        n = 50 if quick else 200
        out.append(Workload(f"{n:,} × 500 rows", n, rows=500))
    if "overhead-sustained" in which:
        secs = 5.0 if quick else 10.0  # at 7 MiB/s of WAL the paced run still crosses 16 MiB 4 times
        rows = SUSTAINED_ROWS
        rate = 1 / SUSTAINED_INTERVAL
        out.append(
            Workload(
                f"sustained {secs:g} s, {rate:g}/s × {rows} rows",
                10**9,
                rows=rows,
                interval=SUSTAINED_INTERVAL,
                duration=secs,
            )
        )
        out.append(Workload(f"sustained {secs:g} s, flat out × {rows} rows", 10**9, rows=rows, duration=secs))
    return out


# The sustained runs: 100-row commits (each appends ~0.4 MiB of WAL, as the random keys touch many
# index pages) at a steady 20 commits/s, ~7 MiB of WAL a second, and as fast as the writer can, ~70 MiB
# a second: both cross bakelite's max_wal_size (16 MiB) many times over.
SUSTAINED_ROWS = 100
SUSTAINED_INTERVAL = 0.05
MAX_WAL_SIZE_MIB = 16


def overhead_table(work: Path, runs: int, workloads: Sequence[Workload], with_litestream: bool) -> Table:
    """A separate writer (each workload) with no replicator, bakelite, Litestream; WAL size sampled."""
    t = Table(
        "app overhead: a separate writer process (synchronous=NORMAL), WAL size sampled every 10 ms",
        [
            ("commits/s", ""),
            ("p50", "ms"),
            ("p99", "ms"),
            ("max", "ms"),
            ("WAL max", "MiB"),
            ("WAL written", "MiB"),
        ],
        baseline="no replicator",
    )
    contenders = ["no replicator", "bakelite"] + (["litestream"] if with_litestream else [])
    for i in range(runs):
        for wl in workloads:
            for who in contenders:
                row = f"{wl.label}: {who}"
                t.baselines[row] = f"{wl.label}: no replicator"
                w, wal_max = _overhead_run(work, who, wl, seed=i + 1)
                lat = w["latency"]
                t.add(row, "commits/s", w["commits"] / w["elapsed"])
                t.add(row, "p50", percentile(lat, 50) * 1000)
                t.add(row, "p99", percentile(lat, 99) * 1000)
                t.add(row, "max", max(lat) * 1000)
                t.add(row, "WAL max", wal_max / MiB)
                t.add(row, "WAL written", w["wal_bytes"] / MiB)
    t.notes.append(
        f"each row is compared with the same workload without a replicator. 'WAL written' is what the "
        f"writer's commits appended to the WAL (frames × (page + 24 B), summed over WAL resets); "
        f"divided by bakelite's max_wal_size ({MAX_WAL_SIZE_MIB} MiB) it is how many times the WAL "
        f"would cross it. 'WAL max' is the largest -wal file size sampled every 10 ms."
    )
    return t


def _overhead_run(work: Path, who: str, wl: Workload, seed: int) -> tuple[dict[str, Any], float]:
    """One writer run under ``who``: the writer's JSON and the largest WAL size sampled."""
    root = fresh_dir(work / "overhead")
    db = root / "app.db"
    make_small_db(db)
    proc: Proc | None = None
    if who == "bakelite":
        cfg = bakelite_config(root, db, NAME, root / "backups")
        proc = Proc([PY, "-m", "bakelite", "daemon", "--config", str(cfg)], root / "daemon.log")
        cur = cursor_path(db, NAME)
        wait_for(lambda: read_cursor_seq(cur) == 0, proc, 120)
    elif who == "litestream":
        exe = litestream_bin()
        assert exe is not None
        cfg = litestream_config(root, db, root / "replica")
        proc = Proc([exe, "replicate", "-config", str(cfg)], root / "litestream.log")
        wait_for(lambda: litestream_ready(root / "replica"), proc, 120)
    wal = Path(f"{db}-wal")
    try:
        with PeakSampler(lambda: file_size(wal), 0.01) as sampler:
            w = writer_run(db, root / "writer.json", wl.commits, wl.rows, seed, wl.args())
    except RuntimeError as e:
        # Keep the evidence: the replicator's log and the database, beside the results.
        keep = RESULTS / f"failed-overhead-{time.strftime('%Y%m%dT%H%M%S')}"
        if proc is not None:
            proc.stop()
            proc = None
        shutil.copytree(root, keep)
        raise RuntimeError(f"{wl.label} under {who}: {e} (kept in {keep})") from e
    finally:
        if proc is not None:
            proc.stop()
    return w, sampler.peak


# -- lag -----------------------------------------------------------------------------------------


def lag_table(
    work: Path,
    runs: int,
    *,
    commits: int,
    interval: float,
    duration: float,
    with_litestream: bool,
    title: str,
    side_by_side: bool = False,
) -> tuple[Table, dict[str, Any]]:
    """Lag p50/p99/max per run, for bakelite and Litestream.

    ``side_by_side``: each run's two contenders run at once, each with its own database and writer
    (for a paced writer, whose lag is set by timers rather than CPU, this halves the time).
    """
    t = Table(title, [("p50", "s"), ("p99", "s"), ("max", "s")], baseline="bakelite")
    raw: dict[str, list[dict[str, Any]]] = {"bakelite": [], "litestream": []}
    kw: dict[str, Any] = {"commits": commits, "interval": interval, "duration": duration}
    for i in range(runs):
        jobs: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("bakelite", functools.partial(bakelite_lag, work / "lag-bakelite", seed=i + 1, **kw))
        ]
        if with_litestream:
            jobs.append(
                ("litestream", functools.partial(litestream_lag, work / "lag-litestream", seed=i + 1, **kw))
            )
        if side_by_side:
            with ThreadPoolExecutor(len(jobs)) as pool:
                futures = [(who, pool.submit(job)) for who, job in jobs]
                results = [(who, f.result()) for who, f in futures]
        else:
            results = [(who, job()) for who, job in jobs]
        for who, r in results:
            r.pop("lags")
            raw[who].append(r)
            for k in ("p50", "p99", "max"):
                t.add(who, k, r["lag"][k])
    if side_by_side and with_litestream:
        t.notes.append(
            "in each run bakelite and Litestream ran side by side, each with its own database and writer"
        )
    return t, raw


# -- replica bytes -------------------------------------------------------------------------------


def replica_bytes_table(work: Path, src: Path, label: str, commits: int, with_litestream: bool) -> Table:
    """Replica bytes (and local state) after the snapshot and after ``commits`` single-row commits, and
    the peak of replica + local state sampled every 50 ms from the replicator's start to the end."""
    db_mib = src.stat().st_size / MiB
    t = Table(
        f"replica bytes, {label} database ({db_mib:,.0f} MiB), then {commits:,} single-row commits",
        [
            ("after snapshot", "MiB"),
            ("after commits", "MiB"),
            ("local state", "MiB"),
            ("peak during", "MiB"),
            ("WAL after", "MiB"),
        ],
        baseline="database file",
    )
    # The baseline row is the database itself, so the ratios read as "replica bytes per database byte".
    t.add("database file", "after snapshot", db_mib)
    # bakelite
    root = fresh_dir(work / "bytes-bakelite")
    db, backups = root / "app.db", root / "backups"
    copy_db(src, db)
    _add_kv_table(db)
    cfg = bakelite_config(root, db, NAME, backups)
    cur = cursor_path(db, NAME)
    state = root / ".bakelite"
    with PeakSampler(lambda: du(backups) + du(state), 0.05) as peak:
        proc = Proc([PY, "-m", "bakelite", "daemon", "--config", str(cfg)], root / "daemon.log")
        try:
            wait_for(lambda: read_cursor_seq(cur) == 0, proc, 600)
            t.add("bakelite", "after snapshot", du(backups) / MiB)
            writer_run(db, root / "writer.json", commits)
            wait_for(lambda: (read_cursor_seq(cur) or 0) >= commits, proc, 120)
            t.add("bakelite", "after commits", du(backups) / MiB)
            t.add("database file", "after commits", du(db) / MiB)
            t.add("database file", "peak during", du(db) / MiB)
            t.add("bakelite", "local state", du(state) / MiB)
            t.add("bakelite", "WAL after", du(Path(f"{db}-wal")) / MiB)
        finally:
            proc.stop()
    t.add("bakelite", "peak during", peak.peak / MiB)
    exe = litestream_bin()
    if with_litestream and exe is not None:
        root = fresh_dir(work / "bytes-litestream")
        db, replica = root / "app.db", root / "replica"
        copy_db(src, db)
        _add_kv_table(db)
        lcfg = litestream_config(root, db, replica)
        lstate = root / ".app.db-litestream"
        with PeakSampler(lambda: du(replica) + du(lstate), 0.05) as peak:
            proc = Proc([exe, "replicate", "-config", str(lcfg)], root / "litestream.log")
            try:
                wait_for(lambda: litestream_ready(replica), proc, 900)
                t.add("litestream", "after snapshot", du(replica) / MiB)
                w = writer_run(db, root / "writer.json", commits)
                # Litestream syncs every second: wait for its L0 files to stop changing.
                last_t = w["t"][-1]
                time.sleep(3.0 + max(0.0, last_t + 1 - time.time()))
                t.add("litestream", "after commits", du(replica) / MiB)
                t.add("litestream", "local state", du(lstate) / MiB)
                t.add("litestream", "WAL after", du(Path(f"{db}-wal")) / MiB)
            finally:
                proc.stop()
        t.add("litestream", "peak during", peak.peak / MiB)
    t.notes.append(
        f"database file: {db_mib:,.1f} MiB; 'local state' is the replicator's files beside the db; "
        f"'peak during' is the largest replica + local state sampled every 50 ms from the replicator's "
        f"start to the end of the run"
    )
    return t


def _add_kv_table(db: Path) -> None:
    import sqlite3

    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(
        "CREATE TABLE IF NOT EXISTS kv(id INTEGER PRIMARY KEY, k TEXT NOT NULL, v TEXT NOT NULL, t REAL)"
    )
    con.execute("CREATE INDEX IF NOT EXISTS kv_k ON kv(k)")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def cleanup(work: Path) -> None:
    if work.exists() and os.environ.get("BENCH_KEEP") != "1":
        shutil.rmtree(work, ignore_errors=True)
