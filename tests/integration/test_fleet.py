"""Many databases under one daemon: descriptor budget, lazily opened connections, idle polls."""

from __future__ import annotations

import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bakelite.config.model import Database, FileBackend
from bakelite.daemon import limits
from bakelite.daemon.supervisor import Supervisor
from bakelite.errors import BakeliteError
from bakelite.replication import watcher as watcher_mod
from bakelite.replication.cursor import load_cursor
from bakelite.sqlite.connections import LiveDatabase
from bakelite.storage.file import FileStorage


def _make_db(path: Path, rows: int = 50) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    con.executemany("INSERT INTO t(v) VALUES (?)", [("x" * 50,) for _ in range(rows)])
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _app(db: Path, sql: str) -> str:
    """Run ``sql`` in a separate process (its POSIX locks are its own, unlike a connection here)."""
    code = (
        "import sqlite3,sys;c=sqlite3.connect(sys.argv[1],isolation_level=None);"
        "c.execute('PRAGMA busy_timeout=0');r=None\n"
        "for s in sys.argv[2].split(';'):\n  r=c.execute(s).fetchall()\n"
        "print(r)"
    )
    cmd = [sys.executable, "-c", code, str(db), sql]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return out.stdout.strip()


# -- lazily opened connections keep the protocol's locks -----------------------------------------


def test_trim_keeps_the_read_transaction_and_its_locks(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    _make_db(db)
    live = LiveDatabase(db, busy_timeout=1.0)
    try:
        with live.freeze():
            live.acquire_initial()
        live.refresh(lambda: None)
        _app(db, "INSERT INTO t(v) VALUES ('a')")
        live.refresh(lambda: None)
        # A checkpoint opens W and C next to both readers.
        live.checkpoint(lambda: 0, lambda: 0)
        assert live.open_connections() == 4
        fds_before = _fds()
        # The app commits after our read transaction began: we have not copied these frames.
        _app(db, "INSERT INTO t(v) VALUES ('b');INSERT INTO t(v) VALUES ('c')")
        wal_before = os.path.getsize(f"{db}-wal")
        live.trim()
        assert live.open_connections() == 1
        assert _fds() < fds_before
        # Our reader still pins the WAL: an app's TRUNCATE checkpoint must not erase the frames.
        busy = _app(db, "PRAGMA wal_checkpoint(TRUNCATE)")
        assert busy.startswith("[(1,"), busy
        assert os.path.getsize(f"{db}-wal") >= wal_before > 0
        # And the protocol goes on with connections reopened on demand, many times over, without
        # descriptors piling up (SQLite reuses the ones it kept open for closed connections).
        for i in range(20):
            _app(db, f"INSERT INTO t(v) VALUES ('r{i}')")
            live.refresh(lambda: None)
            if i % 5 == 0:
                live.checkpoint(lambda: 0, lambda: 0)
            live.trim()
        assert _fds() <= fds_before
        assert live.open_connections() == 1
    finally:
        live.close()


def test_closed_connections_do_not_drop_an_apps_locks_in_the_same_process(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    _make_db(db)
    app = sqlite3.connect(db, isolation_level=None)
    app.execute("BEGIN")
    app.execute("SELECT count(*) FROM t").fetchone()  # the app's read transaction
    live = LiveDatabase(db, busy_timeout=1.0)
    try:
        with live.freeze():
            live.acquire_initial()
        for _ in range(3):
            live.refresh(lambda: None)
            live.trim()
        live.close()
        # The app's snapshot is intact: another process cannot truncate the WAL under it.
        _app(db, "INSERT INTO t(v) VALUES ('z')")
        busy = _app(db, "PRAGMA wal_checkpoint(TRUNCATE)")
        assert busy.startswith("[(1,"), busy
        assert app.execute("SELECT count(*) FROM t").fetchone()[0] == 50
    finally:
        app.execute("COMMIT")
        app.close()


# -- the descriptor budget -----------------------------------------------------------------------


def test_fd_budget_grows_with_databases() -> None:
    assert limits.fd_budget(10_000, 8) == 10_000 * limits.FDS_PER_DATABASE + 8 * limits.FDS_PER_WORKER + (
        limits.FDS_BASE
    )
    assert limits.fd_budget(1, 2) < limits.fd_budget(2, 2)


def _in_child(code: str, soft: int, hard: int) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a child whose RLIMIT_NOFILE starts at (soft, hard)."""

    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=preexec, timeout=60
    )


def test_the_daemon_raises_the_soft_limit_to_fit() -> None:
    # A child may not raise its hard limit above ours: size the fleet to what this machine allows.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    child_hard = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    n = (child_hard - limits.fd_budget(0, 8)) // limits.FDS_PER_DATABASE
    assert n >= 1, f"a hard limit of {hard} open files cannot run even one database"
    code = (
        "import resource\nfrom bakelite.daemon.limits import ensure_fd_limit\n"
        f"print(ensure_fd_limit({n}, 8), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    r = _in_child(code, 64, child_hard)
    assert r.returncode == 0, r.stderr
    got, soft = map(int, r.stdout.split())
    assert got == soft >= limits.fd_budget(n, 8) > 64


def test_a_budget_that_cannot_fit_names_the_fix() -> None:
    # More than the kernel allows a process (fs.nr_open), so even root cannot raise it that far.
    n = 2**31 // limits.FDS_PER_DATABASE
    with pytest.raises(BakeliteError) as e:
        limits.ensure_fd_limit(n, 8)
    assert "open files" in e.value.message
    assert e.value.hint is not None and "LimitNOFILE" in e.value.hint and "ulimit -n" in e.value.hint


# -- a fleet under one supervisor ----------------------------------------------------------------

N = 200


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[list[Database], Path]]:
    template = tmp_path / "template.db"
    _make_db(template)
    backups = tmp_path / "backups"
    dbs = []
    for i in range(N):
        path = tmp_path / "tenants" / f"shard-{i % 4}" / f"t{i:04d}.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, path)
        dbs.append(Database(name=f"t{i:04d}", path=path, backends=(FileBackend(path=backups),)))
    yield dbs, backups


def _wait(pred: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_a_fleet_bootstraps_ships_and_idles_on_one_connection_each(
    fleet: tuple[list[Database], Path],
) -> None:
    dbs, backups = fleet
    sup = Supervisor(tuple(dbs), lambda db: [FileStorage(backups)], max_concurrent_snapshots=0)
    runner = threading.Thread(target=sup.run, daemon=True)
    runner.start()
    try:
        _wait(lambda: all(load_cursor(db.path, db.name) is not None for db in dbs), 120)
        # Every database has its first backup; each idle one keeps a single connection.
        _wait(lambda: all(not s.busy for s in sup.slots.values()), 30)
        for slot in sup.slots.values():
            assert slot.replicator is not None and slot.replicator.live is not None
            assert slot.replicator.live.open_connections() == 1
        assert _fds() <= N * limits.FDS_PER_DATABASE + limits.FDS_BASE
        # A few of them change: each change is shipped.
        active = dbs[::50]
        for db in active:
            con = sqlite3.connect(db.path, isolation_level=None)
            con.execute("INSERT INTO t(v) VALUES ('new')")
            con.close()

        def shipped() -> bool:
            cursors = [load_cursor(db.path, db.name) for db in active]
            return all(c is not None and c.seq >= 1 for c in cursors)

        _wait(shipped, 60)
        idle = [load_cursor(db.path, db.name) for db in dbs if db not in active]
        assert all(c is not None and c.seq == 0 for c in idle)
    finally:
        sup.stop()
        runner.join(timeout=120)
    assert not runner.is_alive()
    assert sup.fatal_errors() == []


def _polled_supervisor(tmp_path: Path, safety_poll: float) -> tuple[Path, Supervisor]:
    """One database ``app`` polled every ``safety_poll`` seconds (no compaction or sweeps)."""
    db_path = tmp_path / "app.db"
    _make_db(db_path)
    db = Database(
        name="app",
        path=db_path,
        backends=(FileBackend(path=tmp_path / "b"),),
        safety_poll=safety_poll,
        compaction_levels=(),
        multipart_sweep_interval=0,
    )
    return db_path, Supervisor((db,), lambda d: [FileStorage(tmp_path / "b")])


def test_a_safety_poll_of_an_unchanged_database_skips_the_sync(tmp_path: Path) -> None:
    db_path, sup = _polled_supervisor(tmp_path, 0.2)
    syncs: list[float] = []
    runner = threading.Thread(target=sup.run, daemon=True)
    runner.start()
    try:
        _wait(lambda: sup.slots["app"].started and sup.slots["app"].idle_mark is not None, 30)
        time.sleep(1.0)  # the syncs that follow the start (the WAL it created) settle
        rep = sup.slots["app"].replicator
        assert rep is not None
        real_sync = rep.sync

        def counting_sync() -> int:
            syncs.append(time.time())
            return real_sync()

        rep.sync = counting_sync  # type: ignore[method-assign]
        time.sleep(1.5)  # several safety polls
        assert syncs == []
        # A change the watcher does not report (as on NFS) is still found by the poll.
        sup.watcher.stop()
        time.sleep(0.1)
        con = sqlite3.connect(db_path, isolation_level=None)
        con.execute("INSERT INTO t(v) VALUES ('polled')")
        con.close()
        _wait(lambda: (c := load_cursor(db_path, "app")) is not None and c.seq == 1, 30)
        assert syncs
    finally:
        sup.stop()
        runner.join(timeout=60)


def _inotify_marks(fd: int) -> set[int]:
    """Inodes the inotify descriptor ``fd`` of this process watches (from /proc/self/fdinfo)."""
    marks = set()
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("inotify "):
            f = dict(kv.split(":", 1) for kv in line.split()[1:])
            marks.add(int(f["ino"], 16))
    return marks


@pytest.mark.skipif(watcher_mod.inotify_simple is None, reason="inotify is Linux-only")
def test_a_safety_poll_that_finds_a_change_re_arms_a_lost_watch(tmp_path: Path) -> None:
    # Whatever drops a -wal's watch (a race with the kernel, seen under load), the first safety
    # poll that finds a change arms it again, so commits are stamped by events again rather than
    # every safety_poll (which once put point-in-time restores 30 s off).
    db_path, sup = _polled_supervisor(tmp_path, 0.3)
    w = sup.watcher
    assert w._ino is not None
    reports: list[str] = []
    real_on_change = w.on_change

    def counting(name: str) -> None:
        reports.append(name)
        real_on_change(name)

    w.on_change = counting
    runner = threading.Thread(target=sup.run, daemon=True)
    runner.start()
    con = sqlite3.connect(db_path, isolation_level=None)
    try:
        _wait(lambda: sup.slots["app"].started and sup.slots["app"].idle_mark is not None, 30)
        time.sleep(0.5)
        wal_ino = Path(f"{db_path}-wal").stat().st_ino
        assert wal_ino in _inotify_marks(w._ino.fileno())
        with w._lock:  # lose the watch without the bookkeeping noticing
            lost = list(w._armed)
            w._armed.clear()
            for wd in lost:
                w._ino.rm_watch(wd)
        time.sleep(0.1)
        assert wal_ino not in _inotify_marks(w._ino.fileno())
        con.execute("INSERT INTO t(v) VALUES ('unreported')")
        _wait(lambda: (c := load_cursor(db_path, "app")) is not None and c.seq == 1, 30)
        assert wal_ino in _inotify_marks(w._ino.fileno())
        seen = len(reports)
        con.execute("INSERT INTO t(v) VALUES ('reported')")
        _wait(lambda: len(reports) > seen, 10)
    finally:
        con.close()
        sup.stop()
        runner.join(timeout=60)


# -- cheap idle bookkeeping ----------------------------------------------------------------------


def test_an_unchanged_status_heartbeat_only_touches_the_file(tmp_path: Path) -> None:
    from dataclasses import replace

    from bakelite.daemon.statusfile import (
        Publication,
        StatusPublisher,
        StatusRecord,
        read_status,
        status_path,
    )

    db = tmp_path / "app.db"
    path = status_path(db, "app")
    now = [1_800_000_000.0]
    rec = StatusRecord(
        database="app", path=str(db), pid=os.getpid(), started=now[0], written=now[0], stale_after=40.0,
        state="replicating", mtime_heartbeat=True,
    )  # fmt: skip
    key = ("replicating",)
    pub = Publication(path, key, 30.0, lambda t: replace(rec, written=t), touch=True)
    yielded = [[pub]]  # the first pass sees the database; later passes see nothing changed
    publisher = StatusPublisher(lambda: yielded.pop() if yielded else [], interval=2.0, clock=lambda: now[0])
    assert publisher.publish_all() == 1
    content = path.read_bytes()
    now[0] += 10
    assert publisher.publish_all() == 0
    now[0] += 25  # past the heartbeat: touched although the source no longer yields it
    assert publisher.publish_all() == 1
    assert path.read_bytes() == content  # not rewritten
    got = read_status(db, "app")
    assert got is not None and got.written == now[0] and got.state == "replicating"
    path.unlink()  # a heartbeat of a file that vanished writes it again
    now[0] += 31
    assert publisher.publish_all() == 1
    got = read_status(db, "app")
    assert got is not None and got.written == now[0]


def test_small_databases_pass_the_automatic_snapshot_gate(tmp_path: Path) -> None:
    from bakelite.daemon.supervisor import SMALL_SNAPSHOT, SnapshotGate

    small, big = tmp_path / "small.db", tmp_path / "big.db"
    small.write_bytes(b"x" * 4096)
    with open(big, "wb") as f:
        f.truncate(SMALL_SNAPSHOT + 4096)  # sparse
    shared = threading.Semaphore(1)
    big_gate = SnapshotGate(shared, big, small_pass=True)
    assert big_gate.acquire()
    # While a big snapshot holds the only slot, a small database still goes ahead...
    small_gate = SnapshotGate(shared, small, small_pass=True)
    assert small_gate.acquire(timeout=0.1)
    small_gate.release()
    # ...but not another big one, nor a small one when the limit was set explicitly.
    assert not SnapshotGate(shared, big, small_pass=True).acquire(timeout=0.1)
    assert not SnapshotGate(shared, small, small_pass=False).acquire(timeout=0.1)
    big_gate.release()
    assert SnapshotGate(shared, big, small_pass=True).acquire(timeout=0.1)
