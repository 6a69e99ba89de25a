"""Replication inside the application's own process: the daemon's Supervisor, run in a thread.

    with Replicator(config):      # takes each database's lock, resumes or takes a full backup
        app.run()                  # commits ship in the background, as with the daemon
                                   # leaving the block ships everything committed (like SIGTERM)

It is the daemon's scheduler, not a second one, and it takes the same per-database lock, so a daemon
and an embedded replicator never drive one database.  No signal handlers are installed.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from pathlib import Path
from types import TracebackType

from bakelite.config.model import Config, Database
from bakelite.daemon.runner import open_sync_storages
from bakelite.daemon.statusfile import StatusRecord
from bakelite.daemon.supervisor import Supervisor
from bakelite.errors import BakeliteError, UsageError

logger = logging.getLogger(__name__)

__all__ = ["Replicator"]

_POLL = 0.02


class Replicator:
    """Continuous replication of configured databases in background threads of this process."""

    def __init__(
        self,
        config: Config | Database | str | os.PathLike[str],
        *,
        databases: str | list[str] | tuple[str, ...] | None = None,
        start_timeout: float | None = None,
    ) -> None:
        from bakelite.api import load_config, validate_config

        cfg = validate_config(config) if isinstance(config, Config | Database) else load_config(config)
        if databases is None:
            selected = cfg.databases
        else:
            names = (databases,) if isinstance(databases, str) else tuple(databases)
            selected = tuple(cfg.database(n) for n in names)
        if not selected:
            raise UsageError("no databases to replicate", hint="add a Database to Config(databases=...)")
        self.config = cfg
        self.databases: tuple[Database, ...] = selected
        self.start_timeout = start_timeout
        self._supervisor: Supervisor | None = None
        self._thread: threading.Thread | None = None
        self._crash: BaseException | None = None
        self._closed = False
        self._guard = threading.Lock()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Replicator:
        """Start replicating; return once every database replicates (raise if one cannot start)."""
        with self._guard:
            if self._closed:
                raise UsageError("this Replicator was closed; create a new one")
            if self._supervisor is not None:
                return self
            settings = self.config.daemon
            sup = Supervisor(
                self.databases,
                open_sync_storages,
                max_concurrent_snapshots=settings.effective_max_concurrent_snapshots,
                snapshot_workers=settings.effective_snapshot_workers,
            )
            self._supervisor = sup
            self._thread = threading.Thread(target=self._run, name="bakelite-replicator", daemon=True)
            self._thread.start()
            atexit.register(self._at_exit)
        try:
            self._wait_started(sup)
        except BaseException:
            self._shutdown(raise_errors=False)
            raise
        logger.info("embedded replication running for %d database(s)", len(self.databases))
        return self

    def _run(self) -> None:
        assert self._supervisor is not None
        try:
            self._supervisor.run()
        except BaseException as e:  # a bug in the scheduler: kept for close() to raise
            logger.exception("embedded replication stopped unexpectedly")
            self._crash = e

    def _wait_started(self, sup: Supervisor) -> None:
        """Block until each database has started, or raise the first one's fatal error."""
        deadline = None if self.start_timeout is None else time.monotonic() + self.start_timeout
        while True:
            slots = list(sup.slots.values())
            for slot in slots:
                if slot.fatal is not None:
                    raise slot.fatal
            if all(slot.started for slot in slots):
                return
            if self._crash is not None:
                raise BakeliteError("embedded replication stopped unexpectedly") from self._crash
            if deadline is not None and time.monotonic() >= deadline:
                waiting = [s for s in slots if not s.started]
                raise BakeliteError(
                    f"replication of {waiting[0].db.name!r} did not start within {self.start_timeout}s",
                    detail=waiting[0].last_error,
                    hint="check the backend and the database with bakelite.doctor(config)",
                )
            time.sleep(_POLL)

    def sync(self, timeout: float | None = None) -> None:
        """Block until everything committed so far is durable on every sync destination."""
        sup = self._running()
        if timeout is None:
            sup.sync_now()
            return
        errors: list[BaseException] = []

        def run() -> None:
            try:
                sup.sync_now()
            except BaseException as e:
                errors.append(e)

        worker = threading.Thread(target=run, name="bakelite-sync", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            raise BakeliteError(
                f"sync did not finish within {timeout}s",
                hint="a full backup or a slow backend may be holding it; retry with a longer timeout",
            )
        if errors:
            raise errors[0]

    def close(self) -> None:
        """Ship everything committed, stop, and release the locks (like the daemon on SIGTERM)."""
        self._shutdown(raise_errors=True)

    def _at_exit(self) -> None:
        """Drain at interpreter exit when the application never called close()."""
        self._shutdown(raise_errors=False)

    def _shutdown(self, raise_errors: bool) -> None:
        with self._guard:
            if self._closed:
                return
            self._closed = True
            sup, thread = self._supervisor, self._thread
        atexit.unregister(self._at_exit)
        if sup is None or thread is None:
            return
        error: BaseException | None = None
        if raise_errors and self._crash is None and thread.is_alive():
            # The drain logs a failed last upload; syncing first makes a broken backend an error here.
            try:
                sup.sync_now(s.db.name for s in sup.slots.values() if s.started)
            except BakeliteError as e:
                error = e
        sup.stop()
        thread.join()
        logger.info("embedded replication stopped")
        if not raise_errors:
            return
        if self._crash is not None:
            raise BakeliteError("embedded replication stopped unexpectedly") from self._crash
        if error is not None:
            raise error

    def _running(self) -> Supervisor:
        sup = self._supervisor
        if sup is None or self._closed:
            raise UsageError("the Replicator is not running", hint="call start() or use it in a with block")
        if self._crash is not None or (self._thread is not None and not self._thread.is_alive()):
            raise BakeliteError("embedded replication stopped unexpectedly") from self._crash
        return sup

    # ------------------------------------------------------------------ introspection
    @property
    def running(self) -> bool:
        """Whether the replication thread is alive."""
        return self._thread is not None and self._thread.is_alive() and not self._closed

    def status(self) -> list[StatusRecord]:
        """Each database's current state (the records the daemon writes to its status files)."""
        return self._running().status_records()

    @property
    def paths(self) -> tuple[Path, ...]:
        """The database files replicated."""
        return tuple(Path(db.path) for db in self.databases)

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> Replicator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # When the block raised, that error matters more than a failed last upload (still logged).
        self._shutdown(raise_errors=exc is None)
