"""Async mirrors: a background reconciler copying the primary's objects to ``mode = "async"`` destinations.

Off the hot path by construction: one thread for the whole daemon, with its own deadline heap (one
entry per database with async destinations, due every ``mirror_interval``) and its own storage
connections, so a slow or dead mirror is logged and retried but never blocks or fails a sync.

One pass for one mirror (``reconcile``) is a list-diff-copy:

1. list the primary and the mirror in full (either failing ends the pass: nothing is pruned on a
   partial view);
2. copy every data object the mirror lacks, verbatim (ciphertext as-is, no key needed), backup by
   backup, snapshot first and change-sets in seq order, so a pass cut short still leaves a
   restorable prefix; a copy is validated key-lessly first, so rot on the primary is not spread;
3. advance the mirror's ``CURRENT`` to the primary's only once the mirror holds every object of that
   backup the listing showed;
4. prune the mirror's data objects the primary no longer lists (retired by retention or
   compaction), only after a pass where every copy succeeded, and never an object of the backup the
   mirror's ``CURRENT`` names.

Each pass's outcome goes to ``.bakelite/<name>.mirror.json`` (atomically), which ``status`` reads.
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bakelite.config.model import Backend, Database
from bakelite.errors import BakeliteError, ObjectNotFound
from bakelite.format import layout
from bakelite.fsutil import atomic_write_json, read_json, state_dir
from bakelite.storage.base import Storage
from bakelite.storage.fanout import copy_object, copy_order

logger = logging.getLogger(__name__)

MIRROR_FILE_VERSION = 1


def mirror_path(db_path: str | os.PathLike[str], name: str) -> Path:
    """Where a database's mirror state lives."""
    return state_dir(db_path) / f"{name}.mirror.json"


@dataclass
class MirrorState:
    """One async destination after its last reconcile pass."""

    destination: str
    in_sync: bool = False
    behind_objects: int = 0
    behind_bytes: int = 0
    current: str | None = None  # the backup the mirror's CURRENT names
    last_reconcile: float | None = None  # end of the last pass that completed
    last_attempt: float | None = None
    last_error: str | None = None  # of the last pass, None when it completed
    copied: int = 0  # objects copied since the daemon started
    pruned: int = 0


@dataclass
class MirrorFile:
    """The contents of ``.bakelite/<name>.mirror.json``."""

    database: str
    pid: int
    written: float
    interval: float
    stale_after: float
    mirrors: list[MirrorState] = field(default_factory=list)
    version: int = MIRROR_FILE_VERSION

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready data."""
        return asdict(self)


def read_mirror_file(db_path: str | os.PathLike[str], name: str) -> MirrorFile | None:
    """The mirror state file, or None when absent or unreadable (status then shows no mirror lines)."""
    path = mirror_path(db_path, name)
    try:
        data = read_json(path)
        mirrors = [MirrorState(**m) for m in data.pop("mirrors", [])]
        return MirrorFile(**data, mirrors=mirrors)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, AttributeError) as e:
        logger.warning("unreadable mirror state %s: %s", path, e)
        return None


def _current(storage: Storage, db: str) -> bytes | None:
    try:
        return storage.get(layout.current_key(db))
    except ObjectNotFound:
        return None


def reconcile(
    db: str, primary: Storage, mirror: Storage, state: MirrorState, stopping: threading.Event | None = None
) -> None:
    """One list-diff-copy pass from ``primary`` to ``mirror``; the outcome is recorded in ``state``."""
    prefix = layout.db_prefix(db)
    # CURRENT is read before listing: every object of the backup it names is then in the listing.
    p_current = _current(primary, db)
    p_objects = {i.key: i.size for i in primary.list(prefix) if layout.parse_key(db, i.key) is not None}
    m_listing = {i.key: i.size for i in mirror.list(prefix)}
    missing = sorted(
        (k for k, size in p_objects.items() if m_listing.get(k) != size), key=lambda k: copy_order(db, k)
    )
    vanished: set[str] = set()
    keyparams = layout.keyparams_key(db)
    if keyparams not in m_listing and primary.stat(keyparams) is not None:
        # Passphrase mode: without the Argon2 parameters the mirror is not restorable on its own.
        copy_object(primary, mirror, keyparams)
    for key in missing:
        if stopping is not None and stopping.is_set():
            raise BakeliteError("the daemon is stopping")
        try:
            copy_object(primary, mirror, key, size=p_objects[key])
        except ObjectNotFound:
            vanished.add(key)  # retired by the primary since the listing
            continue
        state.copied += 1
        m_listing[key] = p_objects[key]
    # Advance CURRENT only to a backup the mirror now holds whole (as the listing showed it).
    m_current = _current(mirror, db)
    if p_current is not None and p_current != m_current:
        backup = p_current.decode("utf-8", "replace").strip()
        objs = [k for k in p_objects if k.startswith(layout.backup_prefix(db, backup))]
        if (
            layout.snapshot_key(db, backup) in objs
            and all(k in m_listing for k in objs)
            and not any(k in vanished for k in objs)
        ):
            mirror.put(layout.current_key(db), p_current)
            m_current = p_current
    state.current = m_current.decode("utf-8", "replace").strip() if m_current else None
    p_backup = p_current.decode("utf-8", "replace").strip() if p_current else None
    # An unmounted or emptied primary lists nothing and is not a retirement: prune only when the
    # primary visibly holds the backup its CURRENT names.
    primary_sane = p_backup is not None and layout.snapshot_key(db, p_backup) in p_objects
    if not vanished and primary_sane:
        # Both listings were full and every copy succeeded: safe to follow the primary's deletions.
        keep = layout.backup_prefix(db, state.current) if state.current else None
        retired = [
            k
            for k in m_listing
            if layout.parse_key(db, k) is not None
            and k not in p_objects
            and not (keep is not None and k.startswith(keep))
        ]
        if retired:
            mirror.delete(retired)
            state.pruned += len(retired)
            for k in retired:
                m_listing.pop(k, None)
    behind = [k for k in p_objects if k not in m_listing]
    state.behind_objects = len(behind)
    state.behind_bytes = sum(p_objects[k] for k in behind)
    # Nothing on the primary yet is not "in sync": the mirror holds no restore point.
    state.in_sync = p_backup is not None and not behind and state.current == p_backup


OpenStorage = Callable[[Backend], Storage]


class _Target:
    """One database's mirror work: its primary, its async destinations and their states."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.primary: Storage | None = None
        self.mirrors: list[Storage | None] = [None] * len(db.async_backends)
        self.states = [MirrorState(b.describe()) for b in db.async_backends]


class MirrorLoop:
    """The daemon's one mirror thread: reconciles every async destination every ``mirror_interval``."""

    def __init__(
        self,
        databases: Sequence[Database],
        open_storage: OpenStorage | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.targets = {db.name: _Target(db) for db in databases if db.async_backends}
        self.open_storage = open_storage or _default_open
        self.clock = clock
        self.pid = os.getpid()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (a no-op without async destinations)."""
        if not self.targets:
            return
        self.thread = threading.Thread(target=self._run, name="bakelite-mirror", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop between two objects and close every connection."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout)
        for t in self.targets.values():
            for s in (t.primary, *t.mirrors):
                if s is not None:
                    s.close()

    def _run(self) -> None:
        heap = [(self.clock(), name) for name in self.targets]
        heapq.heapify(heap)
        while heap and not self.stopping.is_set():
            due, name = heap[0]
            wait = due - self.clock()
            if wait > 0:
                self.stopping.wait(min(wait, 1.0))
                continue
            heapq.heappop(heap)
            target = self.targets[name]
            try:
                self.pass_once(target)
            except Exception:  # a bug: keep mirroring the other databases
                logger.exception("%s: mirror pass failed unexpectedly", name)
            heapq.heappush(heap, (self.clock() + target.db.mirror_interval, name))

    def pass_once(self, target: _Target) -> None:
        """Reconcile each async destination of one database, then write its state file."""
        db = target.db
        for i, backend in enumerate(db.async_backends):
            state = target.states[i]
            state.last_attempt = self.clock()
            try:
                if target.primary is None:
                    target.primary = self.open_storage(db.sync_backends[0])
                mirror = target.mirrors[i]
                if mirror is None:
                    mirror = target.mirrors[i] = self.open_storage(backend)
                reconcile(db.name, target.primary, mirror, state, self.stopping)
            except BakeliteError as e:
                state.last_error = e.one_line()
                logger.warning(
                    "%s: async mirror %s: %s (retrying in %ss)",
                    db.name,
                    state.destination,
                    state.last_error,
                    db.mirror_interval,
                    extra={"database": db.name},
                )
            else:
                state.last_error = None
                state.last_reconcile = self.clock()
        self._write(target)

    def _write(self, target: _Target) -> None:
        db = target.db
        doc = MirrorFile(
            database=db.name,
            pid=self.pid,
            written=self.clock(),
            interval=db.mirror_interval,
            # A pass can take a while on a slow mirror: only a long silence means the loop is gone.
            stale_after=3 * db.mirror_interval + 60.0,
            mirrors=list(target.states),
        )
        try:
            atomic_write_json(mirror_path(db.path, db.name), doc.to_dict())
        except OSError as e:
            logger.warning("%s: cannot write the mirror state: %s", db.name, e, extra={"database": db.name})


def _default_open(backend: Backend) -> Storage:
    from bakelite.storage.registry import open_storage
    from bakelite.storage.retry import RetryingStorage

    return RetryingStorage(open_storage(backend))
