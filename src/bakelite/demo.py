"""``make demo``: back up a live demo database, then restore the latest state and a point in time.

Runs the real ``bakelite daemon`` as a subprocess against a database another process writes to,
stops it with SIGTERM, restores twice with ``bakelite restore`` and checks each restore against
what the writer recorded.  Everything lives in one scratch directory (``demo-run/`` by default).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

CONFIG = """\
[defaults]
debounce = "100ms"
max_batch_delay = "500ms"

[[database]]
name = "demo"
path = "{db}"
  [[database.backends]]
  type = "file"
  path = "{backups}"
"""


def _bakelite(*args: str) -> list[str]:
    return [sys.executable, "-m", "bakelite", *args]


def _write(db: Path, rows: int, interval: float, log: list[tuple[int, float]]) -> None:
    con = sqlite3.connect(db, isolation_level=None, timeout=10)
    con.execute("PRAGMA busy_timeout=10000")
    for i in range(1, rows + 1):
        con.execute("INSERT INTO orders(item, qty) VALUES (?, ?)", (f"item-{i}", i % 7 + 1))
        log.append((i, time.time()))
        time.sleep(interval)
    con.close()


def _count(path: Path) -> int:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT count(*) FROM orders").fetchone()[0])
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    """Run the demo; exit 0 when every check passed."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dir", default="demo-run", help="scratch directory (recreated)")
    p.add_argument("--rows", type=int, default=60)
    a = p.parse_args(argv)
    root = Path(a.dir).resolve()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    db, backups, cfg = root / "demo.db", root / "backups", root / "bakelite.toml"
    cfg.write_text(CONFIG.format(db=db, backups=backups))
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE orders(id INTEGER PRIMARY KEY, item TEXT, qty INTEGER)")
    con.commit()
    con.close()
    print(f"1. demo database {db} (WAL mode); config {cfg}")

    env = dict(os.environ, BAKELITE_ENV_FILE=os.devnull)
    log_path = root / "daemon.log"
    with open(log_path, "w") as logf:
        daemon = subprocess.Popen(
            _bakelite("daemon", "--config", str(cfg)), stdout=logf, stderr=subprocess.STDOUT, env=env
        )
    time.sleep(1.0)
    print(f"2. bakelite daemon running (pid {daemon.pid}); a writer commits {a.rows} orders")
    log: list[tuple[int, float]] = []
    writer = threading.Thread(target=_write, args=(db, a.rows, 0.05, log))
    writer.start()
    writer.join()
    time.sleep(1.5)
    daemon.send_signal(signal.SIGTERM)
    code = daemon.wait(timeout=30)
    print(f"3. daemon stopped with SIGTERM (exit {code}) after shipping every commit")
    if code != 0:
        print(log_path.read_text())
        return 1

    subprocess.run(_bakelite("list", "--config", str(cfg), "--db", "demo"), env=env, check=False)
    latest = root / "restored-latest.db"
    r = subprocess.run(
        _bakelite("restore", "--config", str(cfg), "--db", "demo", "--output", str(latest)), env=env
    )
    if r.returncode != 0:
        return 1
    got = _count(latest)
    ok_latest = got == a.rows
    print(
        f"4. latest restore has {got} orders; the live database has {_count(db)}: "
        f"{'OK' if ok_latest else 'MISMATCH'}"
    )

    mid_seq, mid_time = log[len(log) // 2]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(mid_time + 0.02)) + (
        f".{int(((mid_time + 0.02) % 1) * 1000):03d}Z"
    )
    pitr = root / "restored-pitr.db"
    r = subprocess.run(
        _bakelite(
            "restore", "--config", str(cfg), "--db", "demo", "--output", str(pitr), "--timestamp", stamp
        ),
        env=env,
    )
    if r.returncode != 0:
        return 1
    got = _count(pitr)
    ok_pitr = got == mid_seq
    print(
        f"5. point-in-time restore at {stamp} has {got} orders; order {mid_seq} was committed "
        f"just before that moment: {'OK' if ok_pitr else 'MISMATCH'}"
    )
    ok = ok_latest and ok_pitr
    print("demo " + ("passed: every commit shipped and both restores exact" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
