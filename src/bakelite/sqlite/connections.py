"""The daemon's connections to a live database, and the locking protocol that keeps frames safe.

Per database: two read-only readers (one holds a read transaction at every moment), one read-write
connection used only for ``BEGIN IMMEDIATE … ROLLBACK`` (the writer freeze, never a write), one
read-write connection used only for checkpoints, one descriptor on the database file opened
first and closed last, and one on ``-shm`` to read its WAL-index header (sqlite/walindex.py).
The invariants (design.md §2) are enforced here:

I1  one of our read transactions is open at every moment: a refresh begins the other reader,
    lets the caller copy, then ends the old one;
I2  all readers are released only inside a writer freeze, after every committed frame is copied;
I3  TRUNCATE only while our reader holds read-mark slot 0, with busy_timeout 0;
I4  the database file and ``-shm`` are never opened and closed by path once connections exist
    (closing any descriptor drops every POSIX lock of the process): our ``-shm`` descriptor is
    closed only once SQLite has unlinked the file;
I5  the first read transaction after start is taken inside a writer freeze.

Only the reader holding the read transaction is needed between operations: the other reader, the
freeze connection and the checkpoint connection are opened when first used and closed again by
``trim()``, so an idle database costs one connection.  Closing a SQLite connection never drops
another connection's POSIX locks: SQLite keeps the descriptor of a closed connection open (and
reuses it for the next connection it opens on that file) while any connection of the process holds
a lock on the file, and our reader always does.  Every connection also keeps a page cache of a
couple of pages (``CACHE_PAGES``): the daemon reads pages through its own descriptor and the WAL,
never through SQL, and SQLite's default cache allocates about 90 KiB per connection on first use.
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
from bakelite.sqlite.walindex import (
    WalIndexState,
    open_shm,
    read_wal_index,
    release_shm,
    surely_off_slot0,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Ship-and-backfill rounds outside the writer freeze before a checkpoint takes it.
SETTLE_ROUNDS = 3
# The most unshipped WAL a checkpoint copies and backfills inside the freeze, which blocks the
# app's writes: about 50-100 ms of work here.  A bigger tail puts the checkpoint off, since a
# freeze that ran to seconds once made a flat-out writer's BEGIN IMMEDIATE outlast a 10 s
# busy_timeout.
FREEZE_TAIL_BYTES = 4 << 20

# Page cache of each of our connections, in pages: below 3, SQLite makes no bulk allocation.
CACHE_PAGES = 2


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
        # Opened when first used (see the module doc); readers[i] is None while closed.
        self.readers: list[sqlite3.Connection | None] = [None, None]
        self._w: sqlite3.Connection | None = None
        self._c: sqlite3.Connection | None = None
        self.current: int | None = None  # index of the reader holding our read transaction
        # Read transactions begun so far: a WAL end observed after epoch ``e`` began bounds the
        # snapshot of the reader begun at ``e`` (and of any begun before it).
        self.epoch = 0
        # True while refresh() runs its copy with both readers held (no step_forward then).
        self._pair = False
        # Per reader: whether its read transaction may sit on read-mark slot 0 (see maybe_slot0).
        self._maybe_slot0 = [True, True]
        # Our own descriptor on -shm, to read the WAL-index header (opened at the first begin).
        self._shm_fd: int | None = None
        try:
            header = self.read_header()
            st = os.fstat(self.dbfd)
            self.identity = (st.st_dev, st.st_ino)
            if not header.is_wal_mode:
                self._handle_not_wal(auto_wal)
            # Asked through the first reader: C is opened only for checkpoints.
            mode = self._reader(0).execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                raise NotWalModeError(
                    f"{self.path} is in '{mode}' journal mode; bakelite needs WAL",
                    hint=f"run: sqlite3 {self.path} 'PRAGMA journal_mode=WAL'",
                )
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ setup
    def _connect(self, readonly: bool) -> sqlite3.Connection:
        uri = f"file:{self.path}?mode=ro" if readonly else f"file:{self.path}"
        try:
            # No statement cache: our few statements are cheap to prepare, and a cache keeps each
            # of them compiled in every connection (about 7 KiB a connection).
            con = sqlite3.connect(
                uri,
                uri=True,
                isolation_level=None,
                timeout=self.busy_timeout,
                check_same_thread=False,
                cached_statements=0,
            )
        except sqlite3.Error as e:
            raise DatabaseError(f"cannot open {self.path}: {e}") from e
        try:
            # Setting the cache size reads the schema (and allocates SQLite's default bulk cache);
            # shrink_memory, outside any transaction, then frees that allocation for good.
            con.execute(f"PRAGMA cache_size={CACHE_PAGES}")
            con.execute("PRAGMA shrink_memory")
        except sqlite3.Error as e:
            con.close()
            raise DatabaseError(f"cannot read {self.path}: {e}") from e
        return con

    @property
    def W(self) -> sqlite3.Connection:
        """The writer-freeze connection (opened on first use)."""
        if self._w is None:
            self._w = self._connect(readonly=False)
        return self._w

    @property
    def C(self) -> sqlite3.Connection:
        """The checkpoint connection (opened on first use)."""
        if self._c is None:
            self._c = self._connect(readonly=False)
        return self._c

    def _reader(self, i: int) -> sqlite3.Connection:
        con = self.readers[i]
        if con is None:
            con = self.readers[i] = self._connect(readonly=True)
        return con

    def open_connections(self) -> int:
        """How many SQLite connections are open on the database now."""
        return sum(c is not None for c in (*self.readers, self._w, self._c))

    def _handle_not_wal(self, auto_wal: bool) -> None:
        if not auto_wal:
            raise NotWalModeError(
                f"{self.path} is not in WAL journal mode; bakelite needs WAL",
                hint=f"run: sqlite3 {self.path} 'PRAGMA journal_mode=WAL' (persistent) and restart "
                "the app, or set auto_wal = true for this database",
            )
        con = self.C
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
    def _wal_index(self) -> WalIndexState | None:
        if self._shm_fd is None:
            self._shm_fd = open_shm(Path(f"{self.path}-shm"))
        return None if self._shm_fd is None else read_wal_index(self._shm_fd)

    def _begin(self, reader: sqlite3.Connection) -> None:
        before = self._wal_index()
        reader.execute("BEGIN")
        try:
            # The read transaction (and its WAL read lock) starts only when a statement is stepped.
            reader.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except BaseException:
            # Not left inside BEGIN: the next begin on this reader would fail for good.
            reader.execute("ROLLBACK")
            raise
        self.epoch += 1
        # A commit found in the -wal file may not be published in -shm yet; only the header,
        # read on both sides of the begin, tells whether this reader got a slot above 0.
        self._maybe_slot0[self.readers.index(reader)] = not surely_off_slot0(before, self._wal_index())

    @property
    def maybe_slot0(self) -> bool:
        """Whether our read transaction may hold read-mark slot 0 (False only when proven otherwise).

        Such a reader blocks every backfill, so each autocheckpoint of the app walks the whole WAL
        and gives up: a reader should leave slot 0 once the app writes.
        """
        return self.current is None or self._maybe_slot0[self.current]

    @property
    def can_step(self) -> bool:
        """Whether step_forward may run now (a read transaction is held, and only one)."""
        return self.current is not None and not self._pair

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
        self._begin(self._reader(0))
        self.current = 0

    def refresh(self, copy: Callable[[], T], beyond_mark: bool = False) -> T:
        """I1: begin the other reader, run ``copy`` (which ships), then end the old reader.

        ``beyond_mark``: the caller has seen commits past the old reader's snapshot, so the new
        reader cannot land on read-mark slot 0 and alone keeps every frame from being overwritten;
        the old reader then ends before ``copy``, so it stops pinning slot 0 at once.
        """
        if self.current is None:
            raise AssertionError("refresh before acquire_initial")
        if beyond_mark:
            # Frames past the old mark cannot be backfilled while the old reader holds it (and
            # none at all while it sits on slot 0), so the new reader took a slot > 0, and a
            # WAL restart needs every slot > 0 free: no frame can be overwritten before copy().
            self.step_forward()
            return copy()
        other = 1 - self.current
        new = self._reader(other)
        self._begin(new)
        self._pair = True
        try:
            result = copy()
        except BaseException:
            # Keep the old reader (it protects frames not yet shipped); drop the new one.
            new.execute("COMMIT")
            raise
        finally:
            self._pair = False
        self._reader(self.current).execute("COMMIT")
        self.current = other
        return result

    def step_forward(self) -> None:
        """Begin the other reader and end the current one, copying nothing.

        Only for a caller that has seen commits past the current reader's snapshot (as with
        ``refresh(beyond_mark=True)``): the new reader then holds a slot above 0, which alone keeps
        every frame of the WAL, shipped or not, from being overwritten.  It lets the app's
        checkpoints stop tripping over a reader on slot 0 at once, before anything is shipped,
        and lets them backfill as a long ship goes on instead of all at once when it ends.
        """
        if self.current is None:
            raise AssertionError("step_forward before acquire_initial")
        if self._pair:
            raise AssertionError("step_forward while refresh holds both readers")
        other = 1 - self.current
        self._begin(self._reader(other))
        self._reader(self.current).execute("COMMIT")
        self.current = other

    def checkpoint(
        self,
        copy_tail: Callable[[], int],
        tail_bytes: Callable[[], int],
        past_mark: Callable[[], bool] = lambda: False,
    ) -> bool | None:
        """Checkpoint without losing unshipped frames; True when the WAL was truncated.

        The caller has already shipped everything outside the freeze.  While ``tail_bytes()``
        (the committed WAL not yet shipped, observed afresh) is above FREEZE_TAIL_BYTES, up to
        SETTLE_ROUNDS refreshes ship it through ``copy_tail`` and backfill it, still outside the
        freeze (each one stepping the reader first when ``past_mark()`` proves commits past its
        snapshot, as ``refresh(beyond_mark=True)``).  If the app keeps writing faster than that,
        the checkpoint is put off (None): the freeze must stay short, however far behind we are.
        Inside the freeze (I2) the tail is copied, our reader released, a PASSIVE checkpoint
        backfills everything and the reader is re-taken (landing on slot 0 when fully
        backfilled); then TRUNCATE with busy_timeout 0 (I3): it succeeds only if no frame was
        written since.
        """
        if self.current is None:
            raise AssertionError("checkpoint before acquire_initial")
        # Backfill up to our reader's mark, so the freeze only has what follows it to copy.
        self.C.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        rounds = 0
        while tail_bytes() > FREEZE_TAIL_BYTES:
            if rounds == SETTLE_ROUNDS:
                return None
            rounds += 1
            self.refresh(copy_tail, beyond_mark=past_mark())
            self.C.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        with self.freeze():
            copy_tail()
            reader = self._reader(self.current)
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

    def trim(self) -> None:
        """Close what an idle database does not need: the spare reader, W and C (never the current reader).

        Call between operations only (never inside ``freeze``): I1 holds because the reader with
        our read transaction stays open, and its locks keep SQLite from closing the others'
        descriptors (see the module doc).
        """
        if self.current is None:
            return
        self._close_rw()
        spare = self.readers[1 - self.current]
        if spare is not None:
            self.readers[1 - self.current] = None
            with contextlib.suppress(sqlite3.Error):
                if spare.in_transaction:
                    spare.execute("COMMIT")
                spare.close()

    def _close_rw(self) -> None:
        for con in (self._c, self._w):
            if con is not None:
                with contextlib.suppress(sqlite3.Error):
                    con.close()
        self._c = self._w = None

    def close(self) -> None:
        """Close read-write connections while a reader still holds a lock, then readers, then the fd."""
        self._close_rw()
        readers = [con for con in self.readers if con is not None]
        for con in readers:
            with contextlib.suppress(sqlite3.Error):
                if con.in_transaction:
                    con.execute("COMMIT")
        for con in readers:
            with contextlib.suppress(sqlite3.Error):
                con.close()
        self.readers = [None, None]
        self.current = None
        if self._shm_fd is not None:
            release_shm(self._shm_fd)
            self._shm_fd = None
        # The descriptor is shared and stays open for the process's life (see sqlite/dbfile.py).
        self.dbfd = -1
