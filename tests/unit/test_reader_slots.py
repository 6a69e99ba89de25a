"""Which WAL read-mark slot our reader holds across a refresh, and what it protects.

The app runs in a separate process (POSIX locks of one process never conflict with each other, so
an in-process app would see none of ours); the slots we hold come from /proc/locks.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

from bakelite.config.model import Database, FileBackend
from bakelite.errors import TransientBackendError
from bakelite.ops.restore import restore_to_path
from bakelite.replication import shipper
from bakelite.replication.shipper import DatabaseReplicator
from bakelite.sqlite import wal
from bakelite.sqlite.connections import LiveDatabase
from bakelite.storage.faulty import FaultyStorage
from bakelite.storage.file import FileStorage

# SQLite's -shm lock bytes start at offset 120: WAL_READ_LOCK(i) is byte 123 + i.
READ_LOCK_0 = 123


def held_slots(db: Path) -> set[int]:
    """The read-mark slots this process holds a read lock on, for ``db``'s -shm."""
    st = os.stat(f"{db}-shm")
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    slots: set[int] = set()
    for line in Path("/proc/locks").read_text().splitlines():
        f = line.split()
        if "->" in f or len(f) < 8 or f[1] != "POSIX" or f[4] != str(os.getpid()) or f[5] != ident:
            continue
        start, end = int(f[6]), (int(f[6]) if f[7] == "EOF" else int(f[7]))
        slots |= {b - READ_LOCK_0 for b in range(start, end + 1) if READ_LOCK_0 <= b < READ_LOCK_0 + 5}
    return slots


APP = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
con.execute("PRAGMA busy_timeout=0")
for i in range(int(sys.argv[2])):
    con.execute(f"INSERT INTO t(v) VALUES (randomblob({sys.argv[4]}))")
if sys.argv[3] != "none":
    print(con.execute(f"PRAGMA wal_checkpoint({sys.argv[3]})").fetchone())
"""


def app(db: Path, commits: int, checkpoint: str = "none", row_bytes: int = 300) -> str:
    """Commit ``commits`` rows from another process, then optionally checkpoint; its output."""
    p = subprocess.run(
        [sys.executable, "-c", APP, str(db), str(commits), checkpoint, str(row_bytes)],
        capture_output=True,
        text=True,
        check=True,
    )
    return p.stdout


def wal_salts(db: Path) -> tuple[int, int]:
    hdr = wal.parse_wal_header(Path(f"{db}-wal").read_bytes()[: wal.WAL_HEADER_SIZE])
    assert hdr is not None
    return hdr.salts


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return path


def _live_on_slot_zero(db: Path) -> LiveDatabase:
    live = LiveDatabase(db, busy_timeout=1.0)
    with live.freeze():
        live.acquire_initial()
    # The WAL is empty, so the first read transaction sits on slot 0.
    assert held_slots(db) == {0}
    return live


def test_refresh_past_the_mark_leaves_slot_zero_before_copying(db: Path) -> None:
    live = _live_on_slot_zero(db)
    try:
        app(db, 5)  # commits past our mark: the new reader cannot land on slot 0
        seen: list[set[int]] = []
        live.refresh(lambda: seen.append(held_slots(db)), beyond_mark=True)
        assert len(seen[0]) == 1 and 0 not in seen[0], seen
        # Without the hint both readers are held while copying.
        app(db, 5)
        live.refresh(lambda: seen.append(held_slots(db)))
        assert len(seen[1]) == 2, seen
    finally:
        live.close()


def test_reader_taken_past_the_mark_alone_stops_the_wal_restarting(db: Path) -> None:
    live = _live_on_slot_zero(db)
    try:
        app(db, 20)
        salts = wal_salts(db)
        frames_before = os.path.getsize(f"{db}-wal")

        def copy() -> str:
            # While "copying", the app backfills all it can, asks for a restart and writes on.
            out = app(db, 1, "RESTART") + app(db, 50)
            assert wal_salts(db) == salts, "the WAL restarted while frames were unshipped"
            assert os.path.getsize(f"{db}-wal") > frames_before
            return out

        out = live.refresh(copy, beyond_mark=True)
        assert out.startswith("(1,"), out  # the RESTART checkpoint was refused (busy)
    finally:
        live.close()


class SlotRecorder(FaultyStorage):
    """Records the read-mark slots we hold at every change-set write."""

    def __init__(self, inner: FileStorage, plan: str, db: Path) -> None:
        super().__init__(inner, plan)
        self.db = db
        self.slots_at_put: list[set[int]] = []

    def put(self, key: str, data: bytes, *, cold: bool = False) -> None:
        self._record(key)
        super().put(key, data, cold=cold)

    def put_stream(self, key: str, chunks: Iterable[bytes], *, cold: bool = False) -> int:
        self._record(key)
        return super().put_stream(key, chunks, cold=cold)

    def _record(self, key: str) -> None:
        if "/L0/" in key:
            self.slots_at_put.append(held_slots(self.db))


def test_ship_failure_part_way_disables_the_early_release(tmp_path: Path, db: Path) -> None:
    # After a ship fails, commits still pending may lie behind our newer reader's mark: the next
    # sync must copy before it lets that reader go, or a WAL restart could overwrite them.
    backups = tmp_path / "backups"
    storage = SlotRecorder(FileStorage(backups), "put:ok,transient;put_stream:ok,transient", db)
    rep = DatabaseReplicator(Database(name="app", path=db, backends=(FileBackend(path=backups),)), [storage])
    rep.start()  # the snapshot (a stream) and CURRENT (a put)
    try:
        app(db, 3)
        assert rep.observe() is False  # it stepped off slot 0 itself: not urgent
        assert 0 not in held_slots(db)
        with pytest.raises(TransientBackendError):
            rep.sync()
        # The app backfills everything our reader allows, so a reader begun now lands on slot 0.
        app(db, 0, "PASSIVE")
        assert rep.sync() == 3
        assert rep.status.snapshots == 1
        # Every change-set write happened while a reader on a slot > 0 kept the WAL from restarting.
        assert len(storage.slots_at_put) == 2
        for slots in storage.slots_at_put:
            assert slots - {0}, storage.slots_at_put
    finally:
        rep.stop()


def test_step_forward_leaves_slot_zero_and_still_keeps_every_frame(db: Path) -> None:
    live = _live_on_slot_zero(db)
    try:
        app(db, 20)  # commits past our mark, none shipped
        salts = wal_salts(db)
        live.step_forward()
        slots = held_slots(db)
        assert len(slots) == 1 and 0 not in slots, slots
        # The app backfills all it may and asks for a restart: refused, the frames stay.
        out = app(db, 1, "RESTART") + app(db, 50)
        assert out.startswith("(1,"), out
        assert wal_salts(db) == salts
    finally:
        live.close()


def _replicator(tmp_path: Path, db: Path, plan: str = "") -> tuple[DatabaseReplicator, SlotRecorder]:
    backups = tmp_path / "backups"
    storage = SlotRecorder(FileStorage(backups), plan, db)
    rep = DatabaseReplicator(Database(name="app", path=db, backends=(FileBackend(path=backups),)), [storage])
    rep.start()
    return rep, storage


def test_the_first_commit_observed_on_slot_zero_moves_the_reader_at_once(tmp_path: Path, db: Path) -> None:
    rep, storage = _replicator(tmp_path, db)
    try:
        assert held_slots(db) == {0}  # after the snapshot of an empty WAL
        app(db, 3)
        # The change event's observe steps off slot 0 itself; the sync can wait for debounce.
        assert rep.observe() is False
        slots = held_slots(db)
        assert len(slots) == 1 and 0 not in slots, slots
        assert rep.sync() == 3
        assert storage.slots_at_put and all(s - {0} for s in storage.slots_at_put)
        # Shipped to the mark again: a later commit on a fresh slot-0 reader may step again.
        assert rep._shipped_to_mark
    finally:
        rep.stop()


def test_no_step_after_a_failed_ship(tmp_path: Path, db: Path) -> None:
    # A failed ship leaves pending commits that may lie behind our reader's mark: stepping then
    # could land the new reader on slot 0 while unshipped frames are backfilled.
    rep, _ = _replicator(tmp_path, db, "put:ok,transient;put_stream:ok,transient")
    try:
        app(db, 3)
        rep.observe()  # steps off slot 0
        with pytest.raises(TransientBackendError):
            rep.sync()
        rep.live._maybe_slot0 = [True, True]  # even if the reader were suspect again
        before = held_slots(db)
        app(db, 0, "PASSIVE")
        app(db, 2)
        rep.observe()
        assert held_slots(db) == before
        assert rep.sync() == 5
    finally:
        rep.stop()


def test_step_forward_is_refused_while_refresh_holds_both_readers(db: Path) -> None:
    live = _live_on_slot_zero(db)
    try:
        assert live.can_step
        app(db, 2)
        states: list[bool] = []

        def copy() -> None:
            states.append(live.can_step)
            with pytest.raises(AssertionError):
                live.step_forward()

        live.refresh(copy)
        assert states == [False]
        assert live.can_step  # and again once the old reader is gone
    finally:
        live.close()


def wal_frames(db: Path) -> int:
    """Frames in ``db``'s WAL file (a WAL that has not restarted: all of them are live)."""
    return (os.path.getsize(f"{db}-wal") - wal.WAL_HEADER_SIZE) // (4096 + wal.FRAME_HEADER_SIZE)


class GrowingStorage(FileStorage):
    """While the next change-set streams: the app commits more, then checkpoints all it may."""

    def __init__(self, root: Path, db: Path) -> None:
        super().__init__(root)
        self.db = db
        self.armed = False
        self.passive = ""
        self.restart = ""

    def put_stream(self, key: str, chunks: Iterable[bytes], *, cold: bool = False) -> int:
        if not self.armed or "/L0/" not in key:
            return super().put_stream(key, chunks, cold=cold)
        self.armed = False

        def growing() -> Iterable[bytes]:
            for i, chunk in enumerate(chunks):
                if i == 0:
                    app(self.db, 50, row_bytes=20_000)  # the WAL grows past our reader's snapshot
                yield chunk
            # The whole change-set has been read: how far may the app backfill, may it restart?
            self.passive = app(self.db, 0, "PASSIVE")
            self.restart = app(self.db, 1, "RESTART")

        return super().put_stream(key, growing(), cold=cold)


def test_a_long_ship_moves_the_reader_on_as_the_wal_grows(
    tmp_path: Path, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A reader left where a long ship began keeps the app's checkpoints from backfilling anything
    # newer until the ship ends, and then the app backfills it all in one commit.
    monkeypatch.setattr(shipper, "STEP_BYTES", 256 * 1024)
    backups = tmp_path / "backups"
    storage = GrowingStorage(backups, db)
    rep = DatabaseReplicator(Database(name="app", path=db, backends=(FileBackend(path=backups),)), [storage])
    rep.start()
    try:
        app(db, 3)
        rep.observe()
        assert rep.sync() == 3
        app(db, 200, row_bytes=20_000)  # about 1,200 frames to ship in one change-set
        rep.observe()  # the change event: commits past our reader's snapshot are known
        at_start = wal_frames(db)
        salts = wal_salts(db)
        storage.armed = True
        assert rep.sync() == 200  # the 50 commits written meanwhile wait for the next sync
        busy, _, backfilled = (int(x) for x in storage.passive.strip("()\n").split(","))
        assert busy == 0 and backfilled > at_start, (storage.passive, at_start)
        # Moving on never exposed a frame: the restart was refused and the WAL is the same one.
        assert storage.restart.startswith("(1,"), storage.restart
        assert wal_salts(db) == salts
        assert rep.sync() == 51
        assert rep.cursor is not None
        out = tmp_path / "restored.db"
        result = restore_to_path(FileStorage(backups), "app", rep.cursor.backup, None, out)
        assert result.seq == 3 + 200 + 51
        con = sqlite3.connect(out)
        try:
            assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 254
        finally:
            con.close()
    finally:
        rep.stop()


CHURN = """
import random, sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
con.execute("PRAGMA busy_timeout=0")
con.execute("PRAGMA wal_autocheckpoint=0")
rng = random.Random(int(sys.argv[2]))
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    try:
        if rng.random() < 0.3:
            con.execute(f"PRAGMA wal_checkpoint({rng.choice(['PASSIVE', 'RESTART', 'TRUNCATE'])})")
        else:
            con.execute("INSERT INTO t(v) VALUES (randomblob(300))")
    except sqlite3.OperationalError:
        pass
    time.sleep(rng.random() / 1000)
"""


def test_a_reader_proven_off_slot_zero_never_holds_it(db: Path) -> None:
    # The proof reads the WAL-index header on both sides of BEGIN; against an app that writes,
    # backfills and restarts the WAL at random, it must never claim a slot-0 reader is off it.
    live = _live_on_slot_zero(db)
    churn = subprocess.Popen([sys.executable, "-c", CHURN, str(db), "7", "3"])
    outcomes = {True: 0, False: 0}
    try:
        while churn.poll() is None:
            live.step_forward()
            slots = held_slots(db)
            assert len(slots) == 1, slots
            if not live.maybe_slot0:
                assert 0 not in slots
            outcomes[live.maybe_slot0] += 1
        assert churn.returncode == 0
        # Both cases came up (otherwise the test proved nothing).
        assert outcomes[True] and outcomes[False], outcomes
    finally:
        churn.kill()
        live.close()


def test_a_step_taken_before_the_commit_is_published_is_followed_by_a_sync(
    tmp_path: Path, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The -wal file can hold a commit before SQLite publishes it in -shm (the app syncs the WAL
    # in between); a reader begun then may land on slot 0 again.  Not proven off it, the
    # replicator asks for a sync at once instead of waiting for the debounce.
    rep, _ = _replicator(tmp_path, db)
    try:
        assert rep.live is not None and rep.live.maybe_slot0
        app(db, 3)
        monkeypatch.setattr(LiveDatabase, "_wal_index", lambda self: None)  # as if unpublished
        assert rep.observe() is True
        monkeypatch.undo()
        assert rep.sync() == 3
        slots = held_slots(db)
        assert len(slots) == 1 and 0 not in slots, slots
        assert not rep.live.maybe_slot0
        app(db, 2)
        assert rep.observe() is False  # proven off slot 0: the debounce decides again
    finally:
        rep.stop()
