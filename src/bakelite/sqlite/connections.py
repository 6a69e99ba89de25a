"""The daemon's connections to a live database, and the locking protocol that keeps frames safe.

Per database: two read-only readers (one holds a read transaction at every moment), one read-write
connection used only for ``BEGIN IMMEDIATE … ROLLBACK`` (the writer freeze, never a write), one
read-write connection used only for checkpoints, and one descriptor on the database file opened
first and closed last.  The invariants (design.md §2) are enforced here:

I1  one of our read transactions is open at every moment: a refresh begins the other reader,
    lets the caller copy, then ends the old one;
I2  all readers are released only inside a writer freeze, after every committed frame is copied;
I3  TRUNCATE only while our reader holds read-mark slot 0, with busy_timeout 0;
I4  the database file and ``-shm`` are never opened and closed by path once connections exist
    (closing any descriptor drops every POSIX lock of the process);
I5  the first read transaction after start is taken inside a writer freeze.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from bakelite.errors import DatabaseError, NotWalModeError
from bakelite.sqlite.dbfile import shared_fd
from bakelite.sqlite.dbheader import DbHeader, parse_db_header

logger = logging.getLogger(__name__)

T = TypeVar("T")


class LiveDatabase:
    """Connections and locks on one live database; no method writes content."""

    def __init__(self, path: Path, busy_timeout: float, auto_wal: bool = False) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        # I4: the descriptor is opened before any connection and used for every header read.
        try:
            self.dbfd = shared_fd(self.path)
        except FileNotFoundError:
            raise DatabaseError(
                f"database {self.path} does not exist",
                hint="check `path` in the config, or create the database first",
            ) from None
        except PermissionError:
            raise DatabaseError(
                f"cannot read database {self.path}: permission denied",
                hint="run bakelite as the database file's owner",
            ) from None
        self._connections: list[sqlite3.Connection] = []
        try:
            header = self.read_header()
            st = os.fstat(self.dbfd)
            self.identity = (st.st_dev, st.st_ino)
            if not header.is_wal_mode:
                self._handle_not_wal(auto_wal)
            self.C = self._connect(readonly=False)
            self.W = self._connect(readonly=False)
            mode = self.C.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                raise NotWalModeError(
                    f"{self.path} is in '{mode}' journal mode; bakelite needs WAL",
                    hint=f"run: sqlite3 {self.path} 'PRAGMA journal_mode=WAL'",
                )
            self.readers = [self._connect(readonly=True), self._connect(readonly=True)]
        except BaseException:
            self.close()
            raise
        self.current: int | None = None  # index of the reader holding our read transaction

    # ------------------------------------------------------------------ setup
    def _connect(self, readonly: bool) -> sqlite3.Connection:
        uri = f"file:{self.path}?mode=ro" if readonly else f"file:{self.path}"
        try:
            con = sqlite3.connect(
                uri, uri=True, isolation_level=None, timeout=self.busy_timeout, check_same_thread=False
            )
        except sqlite3.Error as e:
            raise DatabaseError(f"cannot open {self.path}: {e}") from e
        self._connections.append(con)
        return con

    def _handle_not_wal(self, auto_wal: bool) -> None:
        if not auto_wal:
            raise NotWalModeError(
                f"{self.path} is not in WAL journal mode; bakelite needs WAL",
                hint=f"run: sqlite3 {self.path} 'PRAGMA journal_mode=WAL' (persistent) and restart "
                "the app, or set auto_wal = true for this database",
            )
        con = self._connect(readonly=False)
        try:
            mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.OperationalError as e:
            raise NotWalModeError(
                f"could not switch {self.path} to WAL mode: {e}",
                hint="stop the application briefly, or switch it by hand with PRAGMA journal_mode=WAL",
            ) from e
        if str(mode).lower() != "wal":
            raise NotWalModeError(f"could not switch {self.path} to WAL mode (journal_mode={mode})")
        logger.warning("switched %s to WAL journal mode (auto_wal = true)", self.path)

    def read_header(self) -> DbHeader:
        """The database header, read through the long-lived descriptor."""
        return parse_db_header(os.pread(self.dbfd, 100, 0), self.path)

    def file_size(self) -> int:
        """Current size of the database file."""
        return os.fstat(self.dbfd).st_size

    @property
    def wal_path(self) -> Path:
        """Path of the database's ``-wal`` file (safe to open and close: SQLite never locks it)."""
        return Path(f"{self.path}-wal")

    # ------------------------------------------------------------------ read transactions
    @staticmethod
    def _begin(reader: sqlite3.Connection) -> None:
        reader.execute("BEGIN")
        # The read transaction (and its WAL read lock) starts only when a statement is stepped.
        reader.execute("SELECT count(*) FROM sqlite_master").fetchone()

    @contextlib.contextmanager
    def freeze(self) -> Iterator[None]:
        """Writer freeze: BEGIN IMMEDIATE on W (no data written), ROLLBACK on exit."""
        deadline = time.monotonic() + max(self.busy_timeout, 1.0)
        while True:
            try:
                self.W.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise DatabaseError(f"writer freeze on {self.path} failed: {e}") from e
                if time.monotonic() > deadline:
                    raise DatabaseError(
                        f"could not take the write lock on {self.path} within busy_timeout",
                        hint="a long write transaction in the app holds it; raise busy_timeout",
                    ) from e
                time.sleep(0.01)
        try:
            yield
        finally:
            self.W.execute("ROLLBACK")

    def acquire_initial(self) -> None:
        """Take the first read transaction (the caller holds a writer freeze: I5)."""
        if self.current is not None:
            return
        self._begin(self.readers[0])
        self.current = 0

    def refresh(self, copy: Callable[[], T]) -> T:
        """I1: begin the other reader, run ``copy`` (which ships), then end the old reader."""
        if self.current is None:
            raise AssertionError("refresh before acquire_initial")
        other = 1 - self.current
        self._begin(self.readers[other])
        try:
            result = copy()
        except BaseException:
            # Keep the old reader (it protects frames not yet shipped); drop the new one.
            self.readers[other].execute("COMMIT")
            raise
        self.readers[self.current].execute("COMMIT")
        self.current = other
        return result

    def checkpoint(self, copy_tail: Callable[[], object]) -> bool:
        """Checkpoint without losing unshipped frames; True when the WAL was truncated.

        The caller has already shipped everything outside the freeze.  Inside the freeze (I2) the
        tail is copied, our reader released, a PASSIVE checkpoint backfills everything and the
        reader is re-taken (landing on slot 0 when fully backfilled); then TRUNCATE with
        busy_timeout 0 (I3): it succeeds only if no frame was written since.
        """
        if self.current is None:
            raise AssertionError("checkpoint before acquire_initial")
        self.C.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        with self.freeze():
            copy_tail()
            reader = self.readers[self.current]
            reader.execute("COMMIT")
            try:
                busy, log, done = self.C.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            finally:
                self._begin(reader)
        if busy != 0 or log != done:
            return False
        self.C.execute("PRAGMA busy_timeout=0")
        try:
            b2, _, _ = self.C.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.OperationalError:
            b2 = 1
        finally:
            self.C.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        return bool(b2 == 0)

    def close(self) -> None:
        """Close read-write connections while a reader still holds a lock, then readers, then the fd."""
        for con in (getattr(self, "C", None), getattr(self, "W", None)):
            if con is not None:
                with contextlib.suppress(sqlite3.Error):
                    con.close()
        for con in getattr(self, "readers", []):
            with contextlib.suppress(sqlite3.Error):
                if con.in_transaction:
                    con.execute("COMMIT")
        for con in self._connections:
            with contextlib.suppress(sqlite3.Error):
                con.close()
        self._connections.clear()
        # The descriptor is shared and stays open for the process's life (see sqlite/dbfile.py).
        self.dbfd = -1
