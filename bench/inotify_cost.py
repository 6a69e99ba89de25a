"""What an inotify watch alone costs a writer: 5,000 single-row commits, with no replicator at all.

The daemon learns of a commit through an inotify watch on the database's directory. The kernel
queues an event for every ``write()`` to the ``-wal``, whether anyone reads it promptly or not;
this probe separates that cost from the daemon's own work. The writer (``bench/writer.py``) runs:

- with no watch (the baseline);
- with a watch whose events are read as soon as they arrive (each read wakes the watcher);
- with a watch read the way the daemon reads it, letting 2 ms of events gather after each batch;
- with the directory watched only for names (create, delete, rename) and the ``-wal`` itself
  watched one-shot, re-armed as soon as its event is read (then 2 ms of waiting): a write that
  finds no mark costs the kernel almost nothing.

usage: python bench/inotify_cost.py [--runs 5] [--commits 5000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import inotify_simple
from _util import PY, WRITER, Table, fresh_dir, make_small_db, percentile

MODES: dict[str, tuple[int, bool] | None] = {
    "no watch": None,
    "dir watch, read at once": (0, False),
    "dir watch, 2 ms batches": (2, False),
    "one-shot wal watch, 2 ms": (2, True),
}


class Watch(threading.Thread):
    """Drains an inotify watch on ``directory``, waiting ``delay_ms`` after each batch."""

    def __init__(self, directory: Path, delay_ms: int, oneshot: bool) -> None:
        super().__init__(daemon=True)
        self.ino = inotify_simple.INotify()
        f = inotify_simple.flags
        self.wal = str(directory / "app.db-wal")
        self.oneshot = oneshot
        if oneshot:
            self.ino.add_watch(str(directory), f.CREATE | f.DELETE | f.MOVED_TO)
            self._arm()
        else:
            mask = f.MODIFY | f.CREATE | f.DELETE | f.MOVED_TO | f.CLOSE_WRITE
            self.ino.add_watch(str(directory), mask)
        self.delay = delay_ms / 1000
        self.stop = threading.Event()
        self.events = 0

    def _arm(self) -> None:
        with contextlib.suppress(FileNotFoundError):  # the writer creates it later
            self.ino.add_watch(self.wal, inotify_simple.flags.MODIFY | inotify_simple.flags.ONESHOT)

    def run(self) -> None:
        while not self.stop.is_set():
            events = self.ino.read(timeout=100)
            self.events += len(events)
            if events and self.oneshot:
                self._arm()
            if events and self.delay:
                self.stop.wait(self.delay)
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
        for mode, how in MODES.items():
            root = fresh_dir(Path(a.work))
            db = root / "app.db"
            make_small_db(db)
            watch = Watch(root, *how) if how is not None else None
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
