"""Change detection: one inotify descriptor for every database the daemon serves.

Each ``-wal`` is watched one-shot: the kernel reports its first write and drops the watch, and
the watcher re-arms it before it reports the change. A write that finds no watch costs the
writer almost nothing, while a standing watch makes the kernel build an event for every
``write()`` (a fifth of a single-row writer's throughput, ``bench/inotify_cost.py``). Re-arming
before reporting means a write that lands in between is either seen by the scan the report
causes or raises a new event; the kernel's notice that a watch was dropped re-arms it too. The
directory is watched for names only, since a ``-wal`` that is
deleted and recreated is a new file needing a new watch. Events are only a hint (the WAL is
always validated), and ``safety_poll`` covers filesystems that deliver none (NFS, some overlays).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# How long events gather after a batch; commit times are stamped within this much of COMMIT.
COALESCE = 0.002

try:
    import inotify_simple
except ImportError:  # non-Linux: the safety poll alone drives replication
    inotify_simple = None

if inotify_simple is not None:
    _F = inotify_simple.flags
    # Names only: a create, delete or rename is not an event on the files themselves, so the
    # kernel does not have to look at this watch on every write to a file in the directory.
    DIR_MASK = _F.CREATE | _F.DELETE | _F.MOVED_TO
    WAL_MASK = _F.MODIFY | _F.ONESHOT
    # A directory whose -wal files cannot be watched one by one (fs.inotify.max_user_watches).
    DIR_FALLBACK_MASK = DIR_MASK | _F.MODIFY
    _ARRIVED = _F.CREATE | _F.MOVED_TO
    _IGNORED = _F.IGNORED


class WalWatcher:
    """Calls ``on_change(name)`` when the ``-wal`` of a registered database changes."""

    def __init__(self, on_change: Callable[[str], None]) -> None:
        self.on_change = on_change
        # (directory watch, "<db>-wal") -> database names; path of a -wal -> database names.
        self._names: dict[tuple[int, str], list[str]] = {}
        self._wal_names: dict[str, list[str]] = {}
        self._wals_of: dict[str, list[str]] = {}  # database name -> its -wal paths
        self._dirs: dict[str, int] = {}
        self._dir_of: dict[int, str] = {}
        # Armed one-shot watches: watch descriptor -> the -wal it watches.
        self._armed: dict[int, str] = {}
        # Directories watched for every write because their -wal files could not be.
        self._fallback: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ino = inotify_simple.INotify() if inotify_simple is not None else None

    @property
    def available(self) -> bool:
        """Whether inotify is in use (else only the safety poll runs)."""
        return self._ino is not None

    def add(self, name: str, db_path: Path) -> None:
        """Watch the ``-wal`` of ``db_path``, and its directory for the ``-wal`` appearing."""
        if self._ino is None:
            return
        resolved = Path(db_path).resolve()
        directory = os.fspath(resolved.parent)
        wal = f"{resolved}-wal"
        with self._lock:
            wd = self._dirs.get(directory)
            if wd is None:
                try:
                    wd = self._ino.add_watch(directory, DIR_MASK)
                except OSError as e:
                    logger.warning("cannot watch %s (%s); relying on safety_poll", directory, e)
                    return
                self._dirs[directory] = wd
                self._dir_of[wd] = directory
            self._names.setdefault((wd, os.path.basename(wal)), []).append(name)
            self._wal_names.setdefault(wal, []).append(name)
            self._wals_of.setdefault(name, []).append(wal)
            self._arm(wal)

    def rearm(self, name: str) -> bool:
        """Arm the watch on the ``-wal`` of database ``name`` if it is not; True if it was not.

        For the safety poll that found a change: whatever dropped a watch, events resume.
        """
        if self._ino is None or self._stop.is_set():
            return False
        with self._lock:
            return any([self._arm(wal) for wal in self._wals_of.get(name, ())])

    def _arm(self, wal: str) -> bool:
        """(Re-)arm the one-shot watch on ``wal``; caller holds the lock.  True if it was not armed."""
        assert self._ino is not None
        directory = os.path.dirname(wal)
        if directory in self._fallback:
            return False
        try:
            wd = self._ino.add_watch(wal, WAL_MASK)
        except FileNotFoundError:
            return False  # no -wal yet: the directory watch reports its creation
        except OSError as e:
            self._fall_back(directory, e)
            return False
        new = wd not in self._armed
        self._armed[wd] = wal
        return new

    def _fall_back(self, directory: str, why: OSError) -> None:
        """Watch every write in ``directory``: dearer for writers, but nothing goes unseen."""
        assert self._ino is not None
        self._fallback.add(directory)
        level = logging.WARNING if why.errno == errno.ENOSPC else logging.INFO
        logger.log(
            level,
            "cannot watch the -wal files in %s one by one (%s; raise fs.inotify.max_user_watches);"
            " watching the whole directory instead",
            directory,
            why,
        )
        try:
            self._ino.add_watch(directory, DIR_FALLBACK_MASK)
        except OSError as e:
            logger.warning("cannot watch %s (%s); relying on safety_poll", directory, e)

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
            for name in self.handle(events):
                self.on_change(name)
            if events:
                # A busy writer keeps re-raising its event: let a few milliseconds of writes
                # gather, so each database is scanned once per batch rather than once per commit.
                self._stop.wait(COALESCE)

    def handle(self, events: Iterable[Any]) -> list[str]:
        """Re-arm what fired and return the databases whose ``-wal`` changed."""
        seen: dict[str, None] = {}
        rearm: dict[str, None] = {}
        with self._lock:
            for ev in events:
                wal = self._armed.get(ev.wd)
                if wal is not None:
                    if ev.mask & _IGNORED:
                        # The watch is gone (or its file is). Arm it again even if this is the
                        # one-shot watch that fired: the kernel queues the write before it drops
                        # the watch, so a re-arm between the two got the same descriptor back and
                        # was dropped with it (seen as replication falling back to safety_poll).
                        del self._armed[ev.wd]
                    rearm[wal] = None
                    seen.update(dict.fromkeys(self._wal_names.get(wal, ())))
                    continue
                names = self._names.get((ev.wd, ev.name), ())
                if names and ev.mask & _ARRIVED:
                    rearm[os.path.join(self._dir_of[ev.wd], ev.name)] = None
                seen.update(dict.fromkeys(names))
            # Before anyone is told: a write after this raises a new event.
            for wal in rearm:
                self._arm(wal)
        return list(seen)

    def stop(self) -> None:
        """Stop the thread and close the descriptor."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._ino is not None:
            self._ino.close()
