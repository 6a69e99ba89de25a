"""Change detection: one inotify descriptor watching every database's directory.

A watch on the ``-wal`` file itself is lost when the WAL is deleted and recreated, so the
directory is watched and events are filtered by name.  Events fire before COMMIT returns; they
are only a hint (the WAL is always validated), and ``safety_poll`` covers filesystems that
deliver none (NFS, some overlays).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

# How long events gather after a batch; commit times are stamped within this much of COMMIT.
COALESCE = 0.002

try:
    import inotify_simple
except ImportError:  # non-Linux: the safety poll alone drives replication
    inotify_simple = None


class WalWatcher:
    """Calls ``on_change(name)`` when the ``-wal`` of a registered database changes."""

    def __init__(self, on_change: Callable[[str], None]) -> None:
        self.on_change = on_change
        self._names: dict[tuple[int, str], list[str]] = {}
        self._dirs: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ino = inotify_simple.INotify() if inotify_simple is not None else None

    @property
    def available(self) -> bool:
        """Whether inotify is in use (else only the safety poll runs)."""
        return self._ino is not None

    def add(self, name: str, db_path: Path) -> None:
        """Watch the directory of ``db_path`` for changes to its ``-wal``."""
        if self._ino is None:
            return
        directory = os.fspath(Path(db_path).resolve().parent)
        flags = inotify_simple.flags
        mask = flags.MODIFY | flags.CREATE | flags.DELETE | flags.MOVED_TO | flags.CLOSE_WRITE
        with self._lock:
            wd = self._dirs.get(directory)
            if wd is None:
                try:
                    wd = self._ino.add_watch(directory, mask)
                except OSError as e:
                    logger.warning("cannot watch %s (%s); relying on safety_poll", directory, e)
                    return
                self._dirs[directory] = wd
            self._names.setdefault((wd, f"{Path(db_path).name}-wal"), []).append(name)

    def start(self) -> None:
        """Start the reader thread."""
        if self._ino is None:
            return
        self._thread = threading.Thread(target=self._run, name="bakelite-inotify", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._ino is not None
        while not self._stop.is_set():
            try:
                events = self._ino.read(timeout=500)
            except OSError as e:
                logger.error("inotify read failed: %s", e)
                continue
            seen: set[str] = set()
            for ev in events:
                for name in self._names.get((ev.wd, ev.name), ()):
                    seen.add(name)
            for name in seen:
                self.on_change(name)
            if events:
                # A busy writer sends an event per write: let a few milliseconds of them gather,
                # so each database is scanned once per batch rather than once per commit.
                self._stop.wait(COALESCE)

    def stop(self) -> None:
        """Stop the thread and close the descriptor."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._ino is not None:
            self._ino.close()
