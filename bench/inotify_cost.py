"""What an inotify watch alone costs a writer: 5,000 single-row commits, with no replicator at all.

The daemon learns of a commit through an inotify watch on the database's directory. The kernel
queues an event for every ``write()`` to the ``-wal``, whether anyone reads it promptly or not;
this probe separates that cost from the daemon's own work. The writer (``bench/writer.py``) runs:

- with no watch (the baseline);
- with a watch whose events are read as soon as they arrive (each read wakes the watcher);
- with a watch read the way the daemon reads it, letting 2 ms of events gather after each batch.

usage: python bench/inotify_cost.py [--runs 5] [--commits 5000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import inotify_simple
from _util import PY, WRITER, Table, fresh_dir, make_small_db, percentile

MODES = {"no watch": None, "watch, read at once": 0, "watch, 2 ms batches": 2}


class Watch(threading.Thread):
    """Drains an inotify watch on ``directory``, waiting ``delay_ms`` after each batch."""

    def __init__(self, directory: Path, delay_ms: int) -> None:
        super().__init__(daemon=True)
        self.ino = inotify_simple.INotify()
        f = inotify_simple.flags
        # The daemon's mask (replication/watcher.py).
        self.ino.add_watch(str(directory), f.MODIFY | f.CREATE | f.DELETE | f.MOVED_TO | f.CLOSE_WRITE)
        self.delay_ms = delay_ms or None
        self.stop = threading.Event()
        self.events = 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.events += len(self.ino.read(timeout=100, read_delay=self.delay_ms))
        self.ino.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--commits", type=int, default=5_000)
    ap.add_argument("--work", default="/tmp/bakelite-bench/inotify")
    a = ap.parse_args(argv)
    t = Table(
        f"inotify alone: {a.commits:,} single-row commits, no replicator",
        [("commits/s", ""), ("p50", "µs"), ("p99", "µs"), ("events", "")],
        baseline="no watch",
    )
    for i in range(a.runs):
        for mode, delay in MODES.items():
            root = fresh_dir(Path(a.work))
            db = root / "app.db"
            make_small_db(db)
            watch = Watch(root, delay) if delay is not None else None
            if watch is not None:
                watch.start()
            out = root / "writer.json"
            cmd = [PY, str(WRITER), str(db), str(out), "--commits", str(a.commits), "--seed", str(i + 1)]
            subprocess.run(cmd, check=True)
            if watch is not None:
                watch.stop.set()
                watch.join()
                t.add(mode, "events", watch.events)
            w = json.loads(out.read_text())
            t.add(mode, "commits/s", w["commits"] / w["elapsed"])
            t.add(mode, "p50", percentile(w["latency"], 50) * 1e6)
            t.add(mode, "p99", percentile(w["latency"], 99) * 1e6)
    print(t.render(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
