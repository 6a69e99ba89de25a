"""Point-in-time restore deep in a long chain of change-sets, for bakelite and Litestream.

After the initial snapshot of a small database (10,000 rows) the writer makes ``commits``
single-row commits, one every ``interval`` seconds, so the replicator ships a long chain of
change-sets (bakelite: one about every ``max_batch_delay``; Litestream: one LTX file a second),
and bakelite's compaction (on by default) has time to merge the older ones.  The writer pauses for
``PAUSE`` seconds after the middle commit K, so "the state at T = commit K's time + PAUSE/2" is
unambiguous for both tools (Litestream's LTX files are one per 1 s sync; bakelite stamps each commit
when it sees it).

Each restore (to T, and to the latest state) is checked: the restored ``kv`` table must hold exactly
the base rows plus the first k commits' rows (ids 1..n, so a consistent prefix), with k = K (or,
with compaction on, the end of a compacted window before K, as documented in ops/compact.py) and
k = all commits for the latest.  A wrong bakelite restore fails the benchmark.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _util import (
    PY,
    WRITER,
    Proc,
    Table,
    bakelite_config,
    cursor_path,
    du,
    fresh_dir,
    litestream_bin,
    litestream_config,
    litestream_ready,
    make_small_db,
    read_cursor_seq,
    timed,
    wait_for,
)
from lag import ltx_timestamp

NAME = "app"
BASE_ROWS = 10_000  # make_small_db's rows
PAUSE = 3.0  # seconds the writer pauses after commit K (> Litestream's 1 s sync interval)
COMPACTION_LEVELS = (30.0, 300.0, 3600.0)  # bakelite's default compaction_levels, in seconds
CHANGESET_SPAN = 3.0  # slack for a change-set straddling a window boundary (max_batch_delay + shipping)
MiB = 1024 * 1024


@dataclass
class Chain:
    """One replicated run: how to restore it and when each commit returned in the writer."""

    label: str
    kind: str  # "bakelite" or "litestream"
    root: Path
    source: Path  # bakelite: its config; Litestream: its replica directory
    times: list[float]  # times[k - 1]: when commit k returned
    compaction: bool = True
    shape: dict[str, Any] = field(default_factory=dict)

    @property
    def commits(self) -> int:
        return len(self.times)

    def restore_cmd(self, out: Path, at: float | None) -> list[str]:
        if self.kind == "bakelite":
            cmd = [PY, "-m", "bakelite", "restore", "--db", NAME, "--output", str(out)]
            cmd += ["--config", str(self.source), "--json"]
            return cmd + (["--timestamp", rfc3339(at)] if at is not None else [])
        exe = litestream_bin()
        assert exe is not None
        cmd = [exe, "restore", "-o", str(out)]
        if at is not None:
            cmd += ["-timestamp", rfc3339(at)]
        return [*cmd, f"file://{self.source}"]


def rfc3339(t: float) -> str:
    """UTC with microseconds: ``2026-11-22T04:22:14.303333Z``."""
    whole = math.floor(t)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{round((t - whole) * 1e6):06d}Z"


def _write(db: Path, out: Path, commits: int, interval: float, seed: int) -> list[float]:
    import subprocess

    args = [PY, str(WRITER), str(db), str(out), "--commits", str(commits), "--seed", str(seed)]
    args += ["--interval", str(interval), "--pause-after", str(commits // 2), "--pause", str(PAUSE)]
    subprocess.run(args, check=True, timeout=3600)
    w: dict[str, Any] = json.loads(out.read_text())
    times: list[float] = w["t"]
    return times


def bakelite_chain(root: Path, commits: int, interval: float, compaction: bool, seed: int) -> Chain:
    fresh_dir(root)
    db, backups = root / "app.db", root / "backups"
    make_small_db(db)
    extra = "" if compaction else "compaction_levels = []"
    cfg = bakelite_config(root, db, NAME, backups, extra)
    cur = cursor_path(db, NAME)
    daemon = Proc([PY, "-m", "bakelite", "daemon", "--config", str(cfg)], root / "daemon.log")
    try:
        wait_for(lambda: read_cursor_seq(cur) == 0, daemon, 120)
        times = _write(db, root / "writer.json", commits, interval, seed)
        wait_for(lambda: (read_cursor_seq(cur) or 0) >= commits, daemon, 120)
    finally:
        daemon.stop()
    label = f"bakelite (compaction {'on' if compaction else 'off'})"
    chain = Chain(label, "bakelite", root, cfg, times, compaction)
    # The objects of the backup, by level (L0 = change-sets as shipped, L1.. = compacted).
    levels: dict[str, int] = {}
    for path in backups.rglob("*"):
        if path.is_file() and path.parent.name.startswith("L"):
            levels[path.parent.name] = levels.get(path.parent.name, 0) + 1
    chain.shape = {"objects": dict(sorted(levels.items())), "bytes": du(backups)}
    return chain


def litestream_chain(root: Path, commits: int, interval: float, seed: int) -> Chain:
    exe = litestream_bin()
    assert exe is not None
    fresh_dir(root)
    db, replica = root / "app.db", root / "replica"
    make_small_db(db)
    cfg = litestream_config(root, db, replica)
    proc = Proc([exe, "replicate", "-config", str(cfg)], root / "litestream.log")
    try:
        wait_for(lambda: litestream_ready(replica), proc, 120)
        times = _write(db, root / "writer.json", commits, interval, seed)
        # Shipped when an LTX file read the WAL at or after the last commit (see lag.py).
        wait_for(lambda: _ltx_newest(replica) >= times[-1], proc, 120, step=0.05)
    finally:
        proc.stop()
    chain = Chain("litestream", "litestream", root, replica, times)
    levels: dict[str, int] = {}
    for path in (replica / "ltx").rglob("*.ltx"):
        levels[f"L{path.parent.name}"] = levels.get(f"L{path.parent.name}", 0) + 1
    chain.shape = {"objects": dict(sorted(levels.items())), "bytes": du(replica)}
    return chain


def _ltx_newest(replica: Path) -> float:
    newest = 0.0
    for path in (replica / "ltx").rglob("*.ltx"):
        newest = max(newest, ltx_timestamp(path) or 0.0)
    return newest


def restored_commit(out: Path) -> int:
    """Which commit the restored file holds; ValueError unless it is a consistent prefix."""
    con = sqlite3.connect(f"file:{out}?mode=ro", uri=True)
    try:
        n, top = con.execute("SELECT count(*), coalesce(max(id), 0) FROM kv").fetchone()
    finally:
        con.close()
    if n != top or n < BASE_ROWS:
        raise ValueError(f"kv holds {n} rows with max(id) {top}: not the state after any commit")
    return int(n) - BASE_ROWS


def landing_ok(chain: Chain, target: int, landed: int) -> bool:
    """Whether ``landed`` is where a restore to commit ``target``'s pause may land.

    Exactly ``target``; with bakelite's compaction on, also the end of the object before a merged
    window holding ``target``: the last commit before that window's start, or up to one change-set
    earlier when a change-set straddled the boundary.
    """
    if landed == target:
        return True
    if not chain.compaction or chain.kind != "bakelite" or landed > target:
        return False
    t = chain.times
    t_target = t[target - 1]
    for width in COMPACTION_LEVELS:
        start = math.floor(t_target / width) * width
        before = bisect.bisect_left(t, start + 0.05)  # commits that returned before the window
        t_next = t[landed] if landed < len(t) else math.inf  # commit landed + 1
        if landed <= before and t_next >= start - CHANGESET_SPAN:
            return True
    return False


def pitr_table(
    work: Path, runs: int, commits: int, interval: float, with_litestream: bool, seed: int = 1
) -> tuple[Table, dict[str, Any]]:
    """Restore to commit ``commits // 2`` (by timestamp) and to the latest, for each chain."""
    target = commits // 2
    # The chains are built side by side: each is a writer pacing 100 commits/s and a replicator,
    # light enough that three share two cores, and building them one after another took 5 minutes.
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [
            pool.submit(bakelite_chain, work / "pitr-bakelite", commits, interval, True, seed),
            pool.submit(bakelite_chain, work / "pitr-bakelite-nocompact", commits, interval, False, seed),
        ]
        if with_litestream:
            futures.append(pool.submit(litestream_chain, work / "pitr-litestream", commits, interval, seed))
        chains = [f.result() for f in futures]
    span = chains[0].times[-1] - chains[0].times[0]
    t = Table(
        f"point-in-time restore: {commits:,} single-row commits after the snapshot, one every "
        f"{interval * 1000:g} ms ({span:.0f} s); restore to commit {target:,} by timestamp and to the latest",
        [("seconds", "s"), ("peak RSS", "MiB"), ("objects", ""), ("landed at commit", "")],
        baseline=f"bakelite (compaction on) → commit {target:,}",
    )
    raw: dict[str, Any] = {"commits": commits, "target": target, "interval": interval, "chains": {}}
    out_dir = fresh_dir(work / "pitr-restored")
    out = out_dir / "out.db"
    wrong: list[str] = []
    for i in range(runs):
        for chain in chains:
            for at_label, at, expect in (
                (f"commit {target:,}", chain.times[target - 1] + PAUSE / 2, target),
                ("latest", None, chain.commits),
            ):
                row = f"{chain.label} → {at_label}"
                t.baselines[row] = f"bakelite (compaction on) → {at_label}"
                _clean(out)
                r = timed(chain.restore_cmd(out, at))
                landed = _check(chain, out, expect, wrong, row)
                t.add(row, "seconds", r.seconds)
                t.add(row, "peak RSS", r.rss_mib)
                t.add(row, "landed at commit", landed)
                if chain.kind == "bakelite":
                    report = json.loads(r.stdout)
                    t.add(row, "objects", 1 + int(report["changesets_applied"]))
                if i == 0:
                    raw["chains"].setdefault(chain.label, {"shape": chain.shape, "restores": {}})
                    raw["chains"][chain.label]["restores"][at_label] = {
                        "stdout": r.stdout[-4000:],
                        "landed": landed,
                    }
    _clean(out)
    for chain in chains:
        landed = raw["chains"][chain.label]["restores"][f"commit {target:,}"]["landed"]
        if 0 <= landed < target:
            early = chain.times[target - 1] - (chain.times[landed - 1] if landed else chain.times[0])
            t.notes.append(
                f"{chain.label} → commit {target:,} landed on commit {landed:,}, {early:.1f} s before the "
                f"target: the target lies in a compacted window, of which only the last state is kept "
                f"(the documented behaviour of compaction, ops/compact.py)"
            )
        shape = ", ".join(f"{k} {v:,}" for k, v in chain.shape["objects"].items())
        t.notes.append(
            f"{chain.label}: replica after the run holds {shape} objects "
            f"({chain.shape['bytes'] / MiB:,.1f} MiB)"
        )
    t.notes.append(
        f"the writer pauses {PAUSE:g} s after commit {target:,}; the target time is {PAUSE / 2:g} s into "
        f"the pause. 'objects' is the snapshot plus the change-sets bakelite applied (its --json report); "
        f"'landed at commit' is read back from the restored file (rows beyond the base {BASE_ROWS:,}), "
        f"and every restore is checked to be a consistent prefix."
    )
    if with_litestream:
        t.notes.append("Litestream restores with `litestream restore [-timestamp T] file://replica`.")
    t.notes.extend(wrong)
    raw["wrong"] = wrong
    return t, raw


def _clean(out: Path) -> None:
    """Remove the restored file and anything beside it (-wal, -shm, temporary files)."""
    for p in out.parent.glob(f"{out.name}*"):
        if p.is_file():
            os.unlink(p)


def _check(chain: Chain, out: Path, expect: int, wrong: list[str], row: str) -> int:
    """The commit the restore landed on; a wrong bakelite restore raises, Litestream's is noted."""
    try:
        landed = restored_commit(out)
    except ValueError as e:
        msg = f"WRONG RESTORE: {row}: {e}"
        landed = -1
    else:
        ok = landing_ok(chain, expect, landed) if expect != chain.commits else landed == expect
        if ok:
            return landed
        msg = f"WRONG RESTORE: {row}: landed at commit {landed:,}, expected {expect:,}"
    if chain.kind == "bakelite":
        raise RuntimeError(f"{msg} (kept in {chain.root} with BENCH_KEEP=1)")
    if msg not in wrong:
        wrong.append(msg)
    return landed
