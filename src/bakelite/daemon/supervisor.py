"""The daemon: one inotify thread, one scheduler, a bounded worker pool, many databases.

No thread per database (that does not scale to thousands): each database is a small record in a
deadline heap.  A change event stamps new commits at once (cheap) and sets the sync deadline to
``min(last event + debounce, first unshipped event + max_batch_delay)``; the safety poll is the
fallback deadline.  A worker runs at most one task per database at a time; failures back off
exponentially with jitter and are retried, never dropped.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bakelite.config.model import Database
from bakelite.daemon.lock import DatabaseLock
from bakelite.errors import BakeliteError, DatabaseError, LockHeldError
from bakelite.replication.shipper import DatabaseReplicator
from bakelite.replication.watcher import WalWatcher
from bakelite.storage.base import Storage

logger = logging.getLogger(__name__)

MAX_BACKOFF = 60.0


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


StorageFactory = Callable[[Database], list[Storage]]


class Supervisor:
    """Runs replication for a set of databases until ``stop()``."""

    def __init__(
        self,
        databases: tuple[Database, ...],
        open_storages: StorageFactory,
        *,
        max_concurrent_snapshots: int = 1,
        workers: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.open_storages = open_storages
        self.slots = {db.name: DatabaseSlot(db) for db in databases}
        self.snapshot_gate = threading.Semaphore(max(1, max_concurrent_snapshots))
        self.pool = ThreadPoolExecutor(
            max_workers=workers or min(8, max(2, len(databases))), thread_name_prefix="bakelite-db"
        )
        self.cond = threading.Condition()
        self.heap: list[tuple[float, int, str]] = []
        self.counter = itertools.count()
        self.stopping = threading.Event()
        self.watcher = WalWatcher(self._on_change)

    # ------------------------------------------------------------------ scheduling
    def _schedule(self, slot: DatabaseSlot, when: float) -> None:
        slot.due = when
        heapq.heappush(self.heap, (when, next(self.counter), slot.db.name))
        self.cond.notify()

    def _on_change(self, name: str) -> None:
        slot = self.slots.get(name)
        if slot is None or slot.replicator is None:
            return
        # Stamp commit times now, before debouncing delays the sync.
        slot.replicator.observe()
        now = self.clock()
        with self.cond:
            if slot.first_event is None:
                slot.first_event = now
            slot.last_event = now
            deadline = min(now + slot.db.debounce, slot.first_event + slot.db.max_batch_delay)
            if slot.retry_at is not None:
                deadline = max(deadline, slot.retry_at)
            if deadline < slot.due or slot.due <= now:
                self._schedule(slot, deadline)

    def run(self) -> None:
        """Start every database, then schedule syncs until stopped; drain on the way out."""
        for slot in self.slots.values():
            self.watcher.add(slot.db.name, Path(slot.db.path))
        self.watcher.start()
        with self.cond:
            now = self.clock()
            for slot in self.slots.values():
                self._schedule(slot, now)
        try:
            while not self.stopping.is_set():
                with self.cond:
                    now = self.clock()
                    ready: list[DatabaseSlot] = []
                    while self.heap and self.heap[0][0] <= now:
                        when, _, name = heapq.heappop(self.heap)
                        slot = self.slots[name]
                        if when != slot.due or slot.busy or slot.fatal is not None:
                            continue
                        slot.busy = True
                        ready.append(slot)
                    timeout = (self.heap[0][0] - now) if self.heap else 1.0
                    if not ready:
                        self.cond.wait(timeout=min(max(timeout, 0.0), 1.0))
                for slot in ready:
                    self.pool.submit(self._work, slot)
                if all(s.fatal is not None for s in self.slots.values()):
                    break
        finally:
            self._drain()

    def stop(self) -> None:
        """Ask run() to drain and return (signal-safe)."""
        self.stopping.set()
        with self.cond:
            self.cond.notify_all()

    # ------------------------------------------------------------------ work
    def _work(self, slot: DatabaseSlot) -> None:
        db = slot.db
        try:
            if not slot.started:
                self._start(slot)
            else:
                with self.cond:
                    slot.first_event = None
                assert slot.replicator is not None
                slot.replicator.sync()
                slot.replicator.maybe_checkpoint()
                if slot.replicator.snapshot_due():
                    slot.replicator.snapshot()
            slot.failures = 0
            slot.retry_at = None
            next_due = self.clock() + db.safety_poll
        except (LockHeldError, DatabaseError) as e:
            next_due = self._failed(slot, e, fatal_if_unstarted=True)
        except BakeliteError as e:
            next_due = self._failed(slot, e, fatal_if_unstarted=False)
        except Exception as e:  # a bug: log it with its traceback, keep the other databases going
            logger.exception("%s: unexpected error", db.name)
            next_due = self._failed(slot, e, fatal_if_unstarted=False)
        with self.cond:
            slot.busy = False
            if slot.fatal is None and not self.stopping.is_set():
                # Events that arrived while busy moved first_event; honour them.
                if slot.first_event is not None and slot.retry_at is None:
                    next_due = min(next_due, slot.first_event + db.max_batch_delay)
                self._schedule(slot, next_due)
            else:
                self.cond.notify()

    def _start(self, slot: DatabaseSlot) -> None:
        db = slot.db
        if slot.lock is None:
            slot.lock = DatabaseLock(Path(db.path), db.name).acquire()
        if not slot.storages:
            slot.storages = self.open_storages(db)
        rep = DatabaseReplicator(db, slot.storages, snapshot_gate=self.snapshot_gate, clock=self.clock)
        slot.replicator = rep
        rep.start()
        slot.started = True
        logger.info("%s: replicating %s", db.name, db.path, extra={"database": db.name})

    def _failed(self, slot: DatabaseSlot, error: BaseException, fatal_if_unstarted: bool) -> float:
        slot.failures += 1
        if slot.replicator is not None:
            slot.replicator.record_failure(error)
        msg = error.one_line() if isinstance(error, BakeliteError) else repr(error)
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

    def fatal_errors(self) -> list[BakeliteError]:
        """Databases that could not be started at all."""
        return [s.fatal for s in self.slots.values() if s.fatal is not None]
