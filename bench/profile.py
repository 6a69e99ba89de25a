"""Profile bakelite's initial snapshot and its restore of the generated database with py-spy.

usage: python bench/profile.py [--size 1024] [--rate 100]

Runs ``bakelite daemon`` (until its first backup is durable) and then ``bakelite restore`` under
``py-spy record --format raw`` (collapsed stacks, every thread, idle samples dropped) and prints, for
each, the wall time and the functions with the most samples (self and inclusive).  The raw profiles
are kept in ``bench/results/profile-*.txt`` (load them in speedscope or flamegraph.pl).
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gen
from _util import (
    PY,
    RESULTS,
    WRITER,
    bakelite_config,
    cursor_path,
    env,
    fresh_dir,
    make_small_db,
    read_cursor_seq,
)


def pyspy() -> str:
    exe = Path(PY).parent / "py-spy"
    return str(exe) if exe.exists() else "py-spy"


def child_of(pid: int) -> int | None:
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            kids = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
            if kids:
                return int(kids[0])
    except FileNotFoundError:
        return None
    return None


def summarize(raw: Path, top: int = 18) -> str:
    """Self and inclusive sample counts per function from py-spy's collapsed stacks."""
    self_c: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        count = int(n)
        frames = [f for f in stack.split(";") if not f.startswith("thread ") and not f.startswith("process ")]
        if not frames:
            continue
        total += count
        names = [
            f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
            if " (" in f
            else f
            for f in frames
        ]
        self_c[names[-1]] += count
        for name in set(names):
            incl[name] += count
    out = [f"  {total} samples"]
    out.append("  self:")
    out += [f"    {100 * c / total:5.1f}%  {name}" for name, c in self_c.most_common(top)]
    out.append("  inclusive:")
    out += [f"    {100 * c / total:5.1f}%  {name}" for name, c in incl.most_common(top + 12)]
    return "\n".join(out)


def profile_writer(commits: int, rate: int, native: bool) -> int:
    """The daemon while a separate writer makes ``commits`` single-row commits as fast as it can."""
    root = fresh_dir(RESULTS / "work" / "profile-writer")
    db = root / "app.db"
    make_small_db(db)
    cfg = bakelite_config(root, db, "app", root / "backups")
    raw = RESULTS / "profile-daemon-writer.txt"
    args = ["record", "-f", "raw", "-r", str(rate), "--threads", *(["--native"] if native else [])]
    p = subprocess.Popen(
        [pyspy(), *args, "-o", str(raw), "--", PY, "-m", "bakelite", "daemon", "--config", str(cfg)],
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cur = cursor_path(db, "app")
    while read_cursor_seq(cur) != 0:
        time.sleep(0.01)
    t0 = time.perf_counter()
    subprocess.run([PY, str(WRITER), str(db), str(root / "w.json"), "--commits", str(commits)], check=True)
    wall = time.perf_counter() - t0
    while (read_cursor_seq(cur) or 0) < commits:
        time.sleep(0.01)
    kid = child_of(p.pid)
    if kid is not None:
        os.kill(kid, signal.SIGTERM)
    p.wait(timeout=120)
    print(f"daemon under a writer of {commits} commits ({wall:.2f} s):")
    print(summarize(raw))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--rate", type=int, default=100)
    ap.add_argument("--native", action="store_true", help="include native frames (slower sampling)")
    ap.add_argument("--writer", type=int, default=0, help="instead: profile the daemon under N commits")
    a = ap.parse_args()
    if a.writer:
        return profile_writer(a.writer, a.rate, a.native)
    src = gen.cached(a.size)
    root = fresh_dir(RESULTS / "work" / "profile")
    db, backups = root / "app.db", root / "backups"
    subprocess.run(["cp", str(src), str(db)], check=True)
    cfg = bakelite_config(root, db, "app", backups)
    base = ["record", "-f", "raw", "-r", str(a.rate), "--threads"]
    if a.native:
        base.append("--native")

    # 1. initial snapshot: the daemon until its cursor exists, then SIGTERM.
    snap_raw = RESULTS / f"profile-snapshot-{a.size}.txt"
    t0 = time.perf_counter()
    p = subprocess.Popen(
        [pyspy(), *base, "-o", str(snap_raw), "--", PY, "-m", "bakelite", "daemon", "--config", str(cfg)],
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cur = cursor_path(db, "app")
    while read_cursor_seq(cur) != 0:
        if p.poll() is not None:
            raise SystemExit("daemon under py-spy exited early")
        time.sleep(0.01)
    snap_s = time.perf_counter() - t0
    kid = child_of(p.pid)
    if kid is not None:
        os.kill(kid, signal.SIGTERM)
    p.wait(timeout=120)
    print(f"initial snapshot under py-spy: {snap_s:.2f} s (process start → cursor)")
    print(summarize(snap_raw))

    # 2. restore latest.
    out = root / "restored.db"
    rest_raw = RESULTS / f"profile-restore-{a.size}.txt"
    t0 = time.perf_counter()
    subprocess.run(
        [
            pyspy(),
            *base,
            "-o",
            str(rest_raw),
            "--",
            PY,
            "-m",
            "bakelite",
            "restore",
            "--db",
            "app",
            "--output",
            str(out),
            "--config",
            str(cfg),
        ],
        env=env(),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    print(f"\nrestore under py-spy: {time.perf_counter() - t0:.2f} s")
    print(summarize(rest_raw))
    if os.environ.get("BENCH_KEEP") != "1":
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
