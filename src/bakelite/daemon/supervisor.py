"""The daemon: one inotify thread, one scheduler, a bounded worker pool, many databases.

No thread per database (that does not scale to thousands): each database is a small record in a
deadline heap.  A change event stamps new commits at once (cheap) and sets the sync deadline to
``min(last event + debounce, first unshipped event + max_batch_delay)``; the safety poll is the
fallback deadline.  A worker runs at most one task per database at a time; failures back off
exponentially with jitter and are retried, never dropped.

Idle databases cost no work: a safety poll that finds the ``-wal`` and the database file unchanged
since the last task (one ``stat`` each, checked in batches on a worker) reschedules without a
sync, and a database that went quiet keeps only the connection holding its read transaction
(``LiveDatabase.trim``).

A publisher thread writes each database's status file (``daemon/statusfile.py``) from the same
per-database records the metrics endpoint serves (``status_records``).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from bakelite.config.model import Database
from bakelite.daemon.limits import release_free_memory
from bakelite.daemon.lock import DatabaseLock
from bakelite.daemon.mirror import MirrorLoop
from bakelite.daemon.statusfile import (
    PUBLISH_INTERVAL,
    Publication,
    StatusPublisher,
    StatusRecord,
    heartbeat_interval,
    stale_threshold,
    status_path,
)
from bakelite.errors import BakeliteError, DatabaseError, EncryptionError, LockHeldError
from bakelite.format import layout
from bakelite.replication.shipper import DatabaseReplicator
from bakelite.replication.watcher import WalWatcher
from bakelite.sqlite import wal
from bakelite.storage.base import Storage

logger = logging.getLogger(__name__)

MAX_BACKOFF = 60.0
# Safety polls of idle databases are checked this many to a worker task, and fall due on a grid of
# this many seconds so that they come in batches rather than one scheduler wake-up each.
POLL_BATCH = 64
POLL_GRID = 1.0
# With max_concurrent_snapshots automatic (0), databases up to this size take their snapshots
# alongside others (a fleet of small databases bootstraps in parallel); bigger ones one at a time.
SMALL_SNAPSHOT = 64 * 1024 * 1024
# A file modified less than this before it was stat'ed may change again within the same mtime tick.
MTIME_MARGIN = 0.05
# Compaction and retention run at most this often per database (and after each new backup).
COMPACT_INTERVAL = 30.0
# While nothing new is shipped, the interval doubles up to this: an idle database's objects change
# only as they age into a wider level, and listing them every 30 s costs a LIST per database.
COMPACT_IDLE_MAX = 3600.0
COMPACT_REFUSED_BACKOFF = 3600.0


@dataclass
class DatabaseSlot:
    """Scheduling state of one database."""

    db: Database
    replicator: DatabaseReplicator | None = None
    lock: DatabaseLock | None = None
    started: bool = False
    busy: bool = False
    due: float = 0.0
    first_event: float | None = None
    last_event: float | None = None
    retry_at: float | None = None
    failures: int = 0
    fatal: BakeliteError | None = None
    storages: list[Storage] = field(default_factory=list)
    next_sweep: float = 0.0
    # Compaction and retention (ops.compact / ops.retention): when next due, for which backup, and
    # the change-set headers already read (keys do not change meaning, so they are read once).
    next_compact: float = 0.0
    compacted_backup: str | None = None
    compact_headers: dict[int, dict[str, Any]] = field(default_factory=dict)
    # (backup, seq) at the last compaction pass, and the wait before the next one.
    compacted_at: tuple[str, int] | None = None
    compact_wait: float = COMPACT_INTERVAL
    # The current streak of failures (also before a replicator exists), for status and metrics.
    failing_since: float | None = None
    last_error: str | None = None
    # An event asked for a sync now (replicator.observe()); kept if it arrived while busy.
    urgent: bool = False
    # The -wal and database file as stat'ed before the last successful task (None: unknown, or
    # modified too recently to tell a later write apart): a safety poll finding them unchanged
    # skips the sync.
    idle_mark: tuple[int, ...] | None = None
    # Counted among the databases whose start was attempted to the end (see Supervisor._booting).
    booted: bool = False
    # The -wal and database file paths as strings (file_mark stats them on every safety poll).
    files: tuple[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.files = (f"{self.db.path}-wal", os.fspath(self.db.path))


StorageFactory = Callable[[Database], list[Storage]]


def file_mark(files: tuple[str, str]) -> tuple[int, ...] | None:
    """(inode, size, mtime) of a database's ``-wal`` and file; None when one changed too recently to trust.

    ``stat`` opens nothing, so it cannot drop the locks of our connections (design.md §2, I4).
    """
    mark: list[int] = []
    now = time.time()  # the wall clock, like the file times
    for path in files:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            mark += (0, 0, 0)
            continue
        except OSError:
            return None
        if now - st.st_mtime_ns / 1e9 <= MTIME_MARGIN:
            return None
        mark += (st.st_ino, st.st_size, st.st_mtime_ns)
    return tuple(mark)


@functools.lru_cache(maxsize=1 << 16)
def _backup_born(backup: str) -> float:
    return layout.backup_time(backup)


def _snapshot_maybe_due(db: Database, backup: str, changesets: int, now: float) -> bool:
    """A cheap precheck of DatabaseReplicator.snapshot_due (which parses the backup id's time)."""
    limit = db.max_segments_per_snapshot
    if limit and changesets >= limit:
        return True
    return db.snapshot_interval > 0 and now - _backup_born(backup) >= db.snapshot_interval


class SnapshotGate(threading.Semaphore):
    """The max_concurrent_snapshots gate as one database sees it: with the automatic setting a
    database of at most SMALL_SNAPSHOT bytes passes without taking a slot."""

    def __init__(self, shared: threading.Semaphore, db_path: Path, small_pass: bool) -> None:
        super().__init__(0)
        self.shared = shared
        self.db_path = db_path
        self.small_pass = small_pass
        self._held = False

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take a slot of the shared gate, unless the database is small (sized now, not at start)."""
        if self.small_pass:
            try:
                if os.stat(self.db_path).st_size <= SMALL_SNAPSHOT:
                    return True
            except OSError:
                pass
        got = self.shared.acquire(blocking, timeout)
        self._held = got
        return got

    def release(self, n: int = 1) -> None:
        """Give back the slot if one was taken."""
        if self._held:
            self._held = False
            self.shared.release()


class _StatusKey(NamedTuple):
    """The fields of a StatusRecord that change while the daemon runs (compared on every pass)."""

    state: str
    retrying: bool
    failing_since: float | None
    attempts: int
    last_error: str | None
    backup: str | None = None
    last_sync: float | None = None
    oldest_unshipped: float | None = None
    changesets: int = 0
    changesets_shipped: int = 0
    bytes_shipped: int = 0
    snapshots: int = 0


class Supervisor:
    """Runs replication for a set of databases until ``stop()``."""

    def __init__(
        self,
        databases: tuple[Database, ...],
        open_storages: StorageFactory,
        *,
        max_concurrent_snapshots: int = 1,
        snapshot_workers: int = 1,
        workers: int | None = None,
        clock: Callable[[], float] = time.time,
        status_interval: float | None = PUBLISH_INTERVAL,
    ) -> None:
        self.clock = clock
        self.started_at = clock()
        self.pid = os.getpid()
        self.drained = False
        self.open_storages = open_storages
        self.slots = {db.name: DatabaseSlot(db) for db in databases}
        self.snapshot_workers = max(1, snapshot_workers)
        # 0 is automatic: one big snapshot at a time, small databases alongside (SnapshotGate).
        self.snapshot_gate = threading.Semaphore(max(1, max_concurrent_snapshots))
        self.small_snapshots_pass = max_concurrent_snapshots == 0
        self.workers = workers or min(8, max(2, len(databases)))
        self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="bakelite-db")
        self.cond = threading.Condition()
        self.heap: list[tuple[float, int, str]] = []
        self.counter = itertools.count()
        self.stopping = threading.Event()
        self.watcher = WalWatcher(self._on_change)
        self.status_interval = status_interval or PUBLISH_INTERVAL
        self._status_targets: dict[str, tuple[Path, float]] = {}
        # Databases whose status may have changed since the publisher's last pass (under cond);
        # the first pass, and the last one after the drain, publish every database.
        self._dirty: set[str] = set()
        self._publish_every = True
        # Databases not yet started (or given up on): when none is left, the heap is trimmed.
        self._booting = len(self.slots)
        self.publisher = (
            StatusPublisher(self._publications, self.status_interval, clock)
            if status_interval is not None
            else None
        )
        # Async mirrors reconcile on their own thread and connections, off the sync hot path.
        self.mirrors = MirrorLoop(databases)

    # ------------------------------------------------------------------ scheduling
    def _schedule(self, slot: DatabaseSlot, when: float) -> None:
        slot.due = when
        # The scheduler sleeps until the earliest deadline: wake it only when this one is earlier
        # (with thousands of idle databases, a wake-up per rescheduled poll is most of the cost).
        wake = not self.heap or when < self.heap[0][0]
        heapq.heappush(self.heap, (when, next(self.counter), slot.db.name))
        if wake:
            self.cond.notify()

    def _on_change(self, name: str) -> None:
        slot = self.slots.get(name)
        if slot is None or slot.replicator is None:
            return
        mark = slot.idle_mark
        if mark is not None and file_mark(slot.files) == mark:
            # Nothing was written since the last task began: the report is of a write that task
            # already saw (its own checkpoint's, or one that fired the re-armed watch meanwhile).
            return
        # Stamp commit times now, before debouncing delays the sync.
        urgent = slot.replicator.observe()
        now = self.clock()
        with self.cond:
            if slot.first_event is None:
                slot.first_event = now
            slot.last_event = now
            deadline = min(now + slot.db.debounce, slot.first_event + slot.db.max_batch_delay)
            if urgent:
                # Our reader may pin read-mark slot 0 (which slows every app commit), or the WAL
                # outgrew max_wal_size: sync (and checkpoint) now.
                deadline = now
                slot.urgent = True
            if slot.retry_at is not None:
                deadline = max(deadline, slot.retry_at)
            if deadline < slot.due or slot.due <= now:
                self._schedule(slot, deadline)
            self._dirty.add(name)

    def run(self) -> None:
        """Start every database, then schedule syncs until stopped; drain on the way out."""
        for slot in self.slots.values():
            self.watcher.add(slot.db.name, Path(slot.db.path))
        self.watcher.start()
        if self.publisher is not None:
            self.publisher.start()
        self.mirrors.start()
        with self.cond:
            now = self.clock()
            for slot in self.slots.values():
                self._schedule(slot, now)
        try:
            while not self.stopping.is_set():
                with self.cond:
                    now = self.clock()
                    ready: list[DatabaseSlot] = []
                    polls: list[DatabaseSlot] = []
                    while self.heap and self.heap[0][0] <= now:
                        when, _, name = heapq.heappop(self.heap)
                        slot = self.slots[name]
                        if when != slot.due or slot.busy or slot.fatal is not None:
                            continue
                        slot.busy = True
                        if self._poll_only(slot):
                            polls.append(slot)
                        else:
                            ready.append(slot)
                            self._dirty.add(name)  # published while it runs (e.g. "snapshotting")
                    timeout = (self.heap[0][0] - now) if self.heap else 1.0
                    if not ready and not polls:
                        self.cond.wait(timeout=min(max(timeout, 0.0), 1.0))
                for slot in ready:
                    self.pool.submit(self._work, slot)
                for i in range(0, len(polls), POLL_BATCH):
                    self.pool.submit(self._poll, polls[i : i + POLL_BATCH])
                if all(s.fatal is not None for s in self.slots.values()):
                    break
        finally:
            self._drain()

    def stop(self) -> None:
        """Ask run() to drain and return (signal-safe)."""
        self.stopping.set()
        with self.cond:
            self.cond.notify_all()

    def sync_now(self, names: Iterable[str] | None = None) -> None:
        """Ship every commit made so far for each named database (default all), on the calling thread.

        For the embedded Replicator's ``sync()``: runs under each replicator's lock, so it waits for
        and never overlaps a scheduled task.  Raises a database's fatal error, or what its sync raised.
        """
        for name in list(self.slots) if names is None else names:
            slot = self.slots[name]
            if slot.fatal is not None:
                raise slot.fatal
            rep = slot.replicator
            if rep is None or not slot.started:
                raise BakeliteError(f"replication of {name!r} has not started", detail=slot.last_error)
            rep.sync()
            with self.cond:
                self._dirty.add(name)

    # ------------------------------------------------------------------ work
    def _poll_due(self, slot: DatabaseSlot) -> float:
        """When the next safety poll is due: on a POLL_GRID grid, so idle databases are polled in batches."""
        return math.ceil((self.clock() + slot.db.safety_poll) / POLL_GRID) * POLL_GRID

    def _poll_only(self, slot: DatabaseSlot) -> bool:
        """Whether a due slot is only a safety poll of an idle database (called under cond)."""
        return (
            slot.started
            and slot.idle_mark is not None
            and slot.first_event is None
            and slot.retry_at is None
            and not slot.urgent
        )

    def _poll(self, batch: list[DatabaseSlot]) -> None:
        """Safety polls: a database whose files did not change and has nothing else due is rescheduled."""
        for slot in batch:
            try:
                quiet = self._quiet(slot)
            except Exception:
                logger.exception("%s: safety poll failed", slot.db.name)
                quiet = False
            if quiet:
                self._trim(slot)  # after its last shipment, a database is trimmed here
                self._finish(slot, self._poll_due(slot), changed=False)
            else:
                if self.watcher.rearm(slot.db.name):
                    # Normal when the change is seconds old (its report is on its way); a lost
                    # watch otherwise, which would leave every commit to the next safety poll.
                    logger.debug("%s: the -wal's watch was re-armed by the safety poll", slot.db.name)
                self._work(slot)

    def _quiet(self, slot: DatabaseSlot) -> bool:
        """Nothing to do: the files are as the last task found them and no periodic job is due."""
        rep, db = slot.replicator, slot.db
        if rep is None:
            return False
        now = self.clock()
        cursor = rep.cursor
        maybe_due = cursor is not None and _snapshot_maybe_due(db, cursor.backup, cursor.changesets, now)
        if maybe_due and rep.snapshot_due():
            return False
        if db.multipart_sweep_interval > 0 and now >= slot.next_sweep:
            return False
        new_backup = cursor is not None and cursor.backup != slot.compacted_backup
        if (db.compaction_levels or db.retention or db.max_backups or db.max_total_size) and (
            now >= slot.next_compact or new_backup
        ):
            return False
        mark = file_mark(slot.files)
        # An unchanged -wal over max_wal_size still gets its checkpoint retried, as before.
        return mark is not None and mark == slot.idle_mark and mark[1] <= db.max_wal_size

    def _trim(self, slot: DatabaseSlot) -> None:
        """Close the connections a quiet database does not need (see LiveDatabase.trim)."""
        rep = slot.replicator
        live = rep.live if rep is not None else None
        if rep is None or live is None or live.open_connections() <= 1:
            return
        with rep.lock:
            if rep.live is not None:
                rep.live.trim()

    def _work(self, slot: DatabaseSlot) -> None:
        db = slot.db
        # Stat'ed before the task reads anything: a write after this changes the mark.
        mark = file_mark(slot.files)
        shipped = 0
        try:
            if not slot.started:
                self._start(slot)
            else:
                with self.cond:
                    slot.first_event = None
                    slot.urgent = False
                assert slot.replicator is not None
                shipped = slot.replicator.sync()
                slot.replicator.maybe_checkpoint()
                if slot.replicator.snapshot_due():
                    slot.replicator.snapshot()
                self._maybe_sweep(slot)
                self._maybe_compact(slot)
            slot.failures = 0
            slot.retry_at = None
            slot.failing_since = None
            slot.idle_mark = mark
            if slot.first_event is None and not shipped:
                # Quiet (a database that just shipped keeps its connections for the next commit).
                self._trim(slot)
            next_due = self._poll_due(slot)
            if slot.replicator is not None and slot.replicator.urgent():
                next_due = self.clock()  # e.g. commits arrived while we sat on read-mark 0
        except (LockHeldError, DatabaseError, EncryptionError) as e:
            # Cannot even start (locked, not WAL, missing, no usable key): report, do not spin.
            next_due = self._failed(slot, e, fatal_if_unstarted=True)
        except BakeliteError as e:
            next_due = self._failed(slot, e, fatal_if_unstarted=False)
        except Exception as e:  # a bug: log it with its traceback, keep the other databases going
            logger.exception("%s: unexpected error", db.name)
            next_due = self._failed(slot, e, fatal_if_unstarted=False)
        self._finish(slot, next_due)

    def _finish(self, slot: DatabaseSlot, next_due: float, changed: bool = True) -> None:
        """End a task: schedule the slot's next one (sooner if events arrived meanwhile)."""
        db = slot.db
        booted = False
        with self.cond:
            slot.busy = False
            if changed:
                self._dirty.add(db.name)
            if not slot.booted and (slot.started or slot.fatal is not None):
                slot.booted = True
                self._booting -= 1
                booted = self._booting == 0
            if slot.fatal is None and not self.stopping.is_set():
                # Events that arrived while busy: ship them a debounce after the latest one (never
                # later than max_batch_delay after the first), as if they had arrived while idle.
                if slot.first_event is not None and slot.retry_at is None:
                    quiet = (slot.last_event or slot.first_event) + db.debounce
                    next_due = min(next_due, quiet, slot.first_event + db.max_batch_delay)
                    if slot.urgent:
                        next_due = self.clock()
                self._schedule(slot, next_due)
            else:
                self.cond.notify()
        if booted:
            # Every database has its first backup: what the snapshots' buffers left free in the
            # allocator goes back to the system (about 12 KiB a database in a fleet of small ones).
            release_free_memory()
            # The first backups were not held up by importing numpy; now import it off the hot path.
            threading.Thread(target=wal.preload_numpy, name="bakelite-preload", daemon=True).start()

    def _maybe_sweep(self, slot: DatabaseSlot) -> None:
        """Abort orphaned multipart uploads every multipart_sweep_interval (S3 only; else a no-op)."""
        db = slot.db
        now = self.clock()
        if db.multipart_sweep_interval <= 0 or now < slot.next_sweep:
            return
        slot.next_sweep = now + db.multipart_sweep_interval
        from bakelite.ops import reclaim

        for storage in slot.storages:
            try:
                report = reclaim.sweep(storage, db.multipart_min_age, prefix=layout.db_prefix(db.name))
            except BakeliteError as e:
                logger.warning("%s: multipart sweep failed: %s", db.name, e.one_line())
                continue
            if report.aborted:
                logger.info("%s: aborted %d orphaned multipart upload(s)", db.name, report.aborted)

    def _maybe_compact(self, slot: DatabaseSlot) -> None:
        """Compaction, then retention, every COMPACT_INTERVAL (longer while idle) or after a new backup."""
        rep = slot.replicator
        cursor = rep.cursor if rep is not None else None
        db = slot.db
        now = self.clock()
        if (
            rep is None
            or cursor is None
            or (now < slot.next_compact and cursor.backup == slot.compacted_backup)
        ):
            return
        if not db.compaction_levels and not (db.retention or db.max_backups or db.max_total_size):
            return
        shipped_since = slot.compacted_at != (cursor.backup, cursor.seq)
        idle_wait = min(2 * slot.compact_wait, COMPACT_IDLE_MAX)
        if cursor.changesets == 0 and not db.retention:
            # A backup that is only its snapshot has nothing to age into a wider level.
            idle_wait = COMPACT_IDLE_MAX
        slot.compact_wait = COMPACT_INTERVAL if shipped_since else idle_wait
        slot.compacted_at = (cursor.backup, cursor.seq)
        slot.next_compact = now + slot.compact_wait
        slot.compacted_backup = cursor.backup
        from bakelite.ops import compact, retention

        for i, storage in enumerate(slot.storages):
            try:
                refused = False
                if db.compaction_levels:
                    cr = compact.compact_database(
                        storage,
                        db.name,
                        db.compaction_levels,
                        db.compaction_keep_recent,
                        now,
                        cipher=rep.cipher,
                        protect=[cursor.last_key],
                        header_cache=slot.compact_headers.setdefault(i, {}),
                    )
                    refused = cr.delete_refused
                rr = retention.apply_retention(
                    storage,
                    db.name,
                    now=now,
                    retention=db.retention,
                    max_backups=db.max_backups,
                    max_total_size=db.max_total_size,
                    protect=[cursor.backup],
                )
                refused = refused or rr.delete_refused
            except BakeliteError as e:
                logger.warning("%s: compaction/retention failed: %s", db.name, e.one_line())
                continue
            if refused:
                # A WORM backend refuses every delete: back off instead of churning every pass.
                slot.next_compact = now + COMPACT_REFUSED_BACKOFF

    def _start(self, slot: DatabaseSlot) -> None:
        db = slot.db
        if slot.lock is None:
            slot.lock = DatabaseLock(Path(db.path), db.name).acquire()
        if not slot.storages:
            slot.storages = self.open_storages(db)
        from bakelite.ops import backfill

        # Before resuming onto them: a sync destination missing part of the chain is backfilled,
        # refused or warned about (on_incomplete_destination).
        backfill.on_resume(db, slot.storages)
        from bakelite.crypto.keys import cipher_for

        cipher = cipher_for(db, storages=slot.storages)
        gate = SnapshotGate(self.snapshot_gate, Path(db.path), self.small_snapshots_pass)
        rep = DatabaseReplicator(
            db,
            slot.storages,
            cipher=cipher,
            snapshot_gate=gate,
            snapshot_workers=self.snapshot_workers,
            clock=self.clock,
        )
        slot.replicator = rep
        rep.start()
        slot.started = True
        logger.info("%s: replicating %s", db.name, db.path, extra={"database": db.name})

    def _failed(self, slot: DatabaseSlot, error: BaseException, fatal_if_unstarted: bool) -> float:
        slot.failures += 1
        slot.idle_mark = None
        if slot.replicator is not None:
            slot.replicator.record_failure(error)
        msg = error.one_line() if isinstance(error, BakeliteError) else repr(error)
        if slot.failing_since is None:
            slot.failing_since = self.clock()
        slot.last_error = msg
        gave_up = isinstance(error, LockHeldError) or slot.failures >= 3
        if fatal_if_unstarted and not slot.started and isinstance(error, BakeliteError) and gave_up:
            # A database that cannot even start (not WAL, missing, locked) is reported, not retried.
            slot.fatal = error
            logger.error("%s: %s", slot.db.name, msg, extra={"database": slot.db.name})
            self._release(slot)
            return float("inf")
        delay = min(MAX_BACKOFF, 0.5 * 2 ** min(slot.failures, 10)) * random.uniform(0.5, 1.0)
        logger.warning(
            "%s: %s (attempt %d, retrying in %.1fs)",
            slot.db.name,
            msg,
            slot.failures,
            delay,
            extra={"database": slot.db.name},
        )
        if not slot.started and slot.replicator is not None:
            slot.replicator.abandon()
            slot.replicator = None
        slot.retry_at = self.clock() + delay
        return slot.retry_at

    def _release(self, slot: DatabaseSlot) -> None:
        if slot.replicator is not None:
            slot.replicator.abandon()
        if slot.lock is not None:
            slot.lock.release()
            slot.lock = None
        for storage in slot.storages:
            storage.close()
        slot.storages = []

    def _drain(self) -> None:
        """Ship everything committed for every started database, then release everything."""
        self.watcher.stop()
        self.mirrors.stop()
        # Let running tasks finish, then stop each database in turn.
        self.pool.shutdown(wait=True)
        for slot in self.slots.values():
            if slot.replicator is not None and slot.started:
                try:
                    slot.replicator.stop()
                except BakeliteError as e:
                    logger.error("%s: could not ship the last changes: %s", slot.db.name, e.one_line())
                except Exception:
                    logger.exception("%s: error while stopping", slot.db.name)
            self._release(slot)
        # Published until here, so a long drain does not read as a hung daemon.
        if self.publisher is not None:
            self.publisher.stop()
        self.drained = True
        if self.publisher is not None:
            # The last word of this run: every file says stopped (with any error it retained).
            with self.cond:
                self._publish_every = True
            self.publisher.publish_all(force=True)

    # ------------------------------------------------------------------ status
    def status_records(self) -> list[StatusRecord]:
        """What each database is doing now (the metrics endpoint reads these)."""
        now = self.clock()
        return [self._record(slot, self._status_key(slot), now) for slot in self.slots.values()]

    def _status_key(self, slot: DatabaseSlot) -> _StatusKey:
        """The changing part of a database's status, read cheaply (a pass covers every database).

        Read without taking the replicator's lock: a snapshot can hold it for minutes, and a
        monitoring read may see fields from two consecutive moments, which is harmless.
        """
        rep = slot.replicator
        if self.drained:
            state = "stopped"
        elif rep is not None:
            # Also while starting: the first full backup of a big database reads "snapshotting".
            state = rep.status.state
        elif slot.fatal is not None or slot.failures:
            state = "backing off"
        else:
            state = "starting"
        if rep is None:
            return _StatusKey(state, slot.fatal is None, slot.failing_since, slot.failures, slot.last_error)
        st, cursor = rep.status, rep.cursor
        return _StatusKey(
            state,
            slot.fatal is None,
            slot.failing_since,
            slot.failures,
            slot.last_error,
            cursor.backup if cursor is not None else st.backup,
            st.last_sync,
            st.oldest_unshipped,
            cursor.changesets if cursor is not None else 0,
            st.changesets,
            st.bytes_shipped,
            st.snapshots,
        )

    def _record(self, slot: DatabaseSlot, key: _StatusKey, now: float) -> StatusRecord:
        return StatusRecord(
            database=slot.db.name,
            path=str(slot.db.path),
            pid=self.pid,
            started=self.started_at,
            written=now,
            stale_after=stale_threshold(slot.db.safety_poll, self.status_interval),
            mtime_heartbeat=True,
            **key._asdict(),
        )

    def _publications(self) -> Iterator[Publication]:
        if not self._status_targets:
            # Resolved once: resolving every path on every pass would cost a few syscalls each.
            self._status_targets = {
                name: (
                    status_path(slot.db.path, name),
                    heartbeat_interval(slot.db.safety_poll, self.status_interval),
                )
                for name, slot in self.slots.items()
            }
        with self.cond:
            dirty = self._dirty
            # A running task may change its status at any time: look at it again next pass.
            self._dirty = {name for name in dirty if self.slots[name].busy}
            names = list(self.slots) if self._publish_every else list(dirty)
            self._publish_every = False
        for name in names:
            slot = self.slots[name]
            path, heartbeat = self._status_targets[name]
            key = self._status_key(slot)
            yield Publication(path, key, heartbeat, functools.partial(self._record, slot, key), touch=True)

    def fatal_errors(self) -> list[BakeliteError]:
        """Databases that could not be started at all."""
        return [s.fatal for s in self.slots.values() if s.fatal is not None]
