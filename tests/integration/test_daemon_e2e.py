"""End to end: a real daemon subprocess backs up a database a separate writer process changes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import Deployment, grade, rfc3339


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment(tmp_path / "site")
    d.init_db()
    yield d
    d.cleanup()


def _run_and_stop(dep: Deployment, *writer_args: str) -> None:
    dep.start_daemon()
    dep.wait_replicating()
    dep.run_writer(*writer_args)
    assert dep.stop_daemon() == 0, dep.daemon_log.read_text()


def _backups(dep: Deployment) -> list[str]:
    base = dep.backups / dep.name
    return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.exists() else []


def test_exact_restore_after_clean_stop(dep: Deployment, tmp_path: Path) -> None:
    _run_and_stop(dep, "--commits", "300", "--blob-every", "7", "--seed", "3")
    out = tmp_path / "restored.db"
    r = dep.restore(out)
    assert r.returncode == 0, r.stderr
    log = dep.commits()
    v = grade(out, log)
    assert v.seq == log[-1].seq == 300  # exact after a clean stop
    assert "integrity_check: ok" in r.stdout and "lineage verified" in r.stdout


def test_point_in_time_restores_land_on_the_state_committed_then(dep: Deployment, tmp_path: Path) -> None:
    _run_and_stop(dep, "--commits", "40", "--interval", "0.15", "--blob-every", "5")
    log = dep.commits()
    landed = []
    for c in [*log[::4], log[-1]]:
        out = tmp_path / f"pitr-{c.seq}.db"
        # 100 ms after the writer saw COMMIT return, 50 ms before its next commit began.
        r = dep.restore(out, "--timestamp", rfc3339(c.t + 0.1))
        assert r.returncode == 0, r.stderr
        v = grade(out, log)
        assert v.seq == c.seq, f"target after commit {c.seq} landed on {v.seq}"
        landed.append(v.seq)
    assert landed == sorted(landed)


def test_timestamp_before_oldest_restore_point_is_an_error(dep: Deployment, tmp_path: Path) -> None:
    _run_and_stop(dep, "--commits", "5")
    r = dep.restore(tmp_path / "x.db", "--timestamp", "2001-01-01T00:00:00Z")
    assert r.returncode == 2
    assert "oldest" in r.stderr
    assert not (tmp_path / "x.db").exists()


def test_vacuum_overflow_blobs_rollbacks_and_app_truncate_under_load(dep: Deployment, tmp_path: Path) -> None:
    dep.start_daemon()
    dep.wait_replicating()
    dep.run_writer(
        "--commits", "400", "--blob-every", "3", "--vacuum-every", "50", "--truncate-every", "37",
        "--rollback-every", "41", "--autocheckpoint", "100",
    )  # fmt: skip
    assert dep.stop_daemon() == 0
    out = tmp_path / "restored.db"
    assert dep.restore(out).returncode == 0
    log = dep.commits()
    assert grade(out, log).seq == 400
    # Every shipped commit boundary is a committed state: sample restore points across the run.
    for c in log[50::70]:
        pitr = tmp_path / f"p{c.seq}.db"
        assert dep.restore(pitr, "--timestamp", rfc3339(c.t + 0.0005)).returncode == 0
        grade(pitr, log)


def test_daemon_checkpoints_keep_the_wal_bounded(tmp_path: Path) -> None:
    dep = Deployment(tmp_path / "site", extra_config='max_wal_size = "256KiB"\n')
    dep.init_db()
    try:
        dep.start_daemon()
        dep.wait_replicating()
        # A small pause between transactions, as real apps have: SQLite locks are not fair, and a
        # writer in a tight loop can starve the write lock bakelite briefly needs to checkpoint.
        dep.run_writer(
            "--commits", "600", "--blob-every", "2", "--autocheckpoint", "0", "--interval", "0.002"
        )
        wal = Path(f"{dep.db}-wal")
        assert wal.stat().st_size < 16 * 1024 * 1024  # without bakelite's checkpoints it only grows
        assert dep.stop_daemon() == 0
        out = tmp_path / "r.db"
        assert dep.restore(out).returncode == 0
        assert grade(out, dep.commits()).seq == 600
    finally:
        dep.cleanup()


def test_sigkill_then_resume_from_cursor_without_gap(dep: Deployment, tmp_path: Path) -> None:
    dep.start_daemon()
    dep.wait_replicating()
    # Autocheckpoint off: the WAL keeps its frames while the daemon is down, so it can resume.
    writer = dep.run_writer(
        "--commits", "400", "--interval", "0.005", "--autocheckpoint", "0", background=True
    )
    time.sleep(1.0)
    dep.stop_daemon(signal.SIGKILL)
    before = _backups(dep)
    time.sleep(0.3)
    dep.start_daemon()
    dep.wait_replicating()
    writer.communicate(timeout=300)
    assert dep.stop_daemon() == 0, dep.daemon_log.read_text()
    assert _backups(dep) == before  # resumed the same backup from its cursor
    out = tmp_path / "r.db"
    assert dep.restore(out).returncode == 0
    log = dep.commits()
    assert grade(out, log).seq == log[-1].seq


def test_sigkill_with_checkpoints_while_down_never_loses_a_commit(dep: Deployment, tmp_path: Path) -> None:
    dep.start_daemon()
    dep.wait_replicating()
    writer = dep.run_writer(
        "--commits", "500", "--interval", "0.002", "--autocheckpoint", "20", background=True
    )
    time.sleep(0.7)
    dep.stop_daemon(signal.SIGKILL)
    time.sleep(0.5)  # the app checkpoints and restarts its WAL while nobody holds a reader
    dep.start_daemon()
    dep.wait_replicating()
    writer.communicate(timeout=300)
    assert dep.stop_daemon() == 0
    out = tmp_path / "r.db"
    assert dep.restore(out).returncode == 0
    log = dep.commits()
    assert grade(out, log).seq == log[-1].seq


def test_wal_restart_by_the_app(dep: Deployment, tmp_path: Path) -> None:
    dep.start_daemon()
    dep.wait_replicating()
    dep.run_writer("--commits", "50")
    # Let bakelite ship, then make the app restart its WAL generation (PASSIVE + next write).
    time.sleep(0.5)
    con = sqlite3.connect(dep.db)
    con.execute("PRAGMA wal_checkpoint(PASSIVE)")
    con.close()
    dep.run_writer("--commits", "50")
    assert dep.stop_daemon() == 0
    out = tmp_path / "r.db"
    assert dep.restore(out).returncode == 0
    assert grade(out, dep.commits()).seq == 100


def test_two_databases_share_a_backend_and_restore_independently(tmp_path: Path) -> None:
    a = Deployment(tmp_path / "site", name="alpha")
    b = Deployment(tmp_path / "site", name="beta")
    a.write_config([("alpha", a.db), ("beta", b.db)])
    b.config = a.config
    a.init_db()
    b.init_db()
    try:
        a.start_daemon()
        a.wait_replicating("alpha")
        a.wait_replicating("beta")
        a.run_writer("--commits", "60", "--seed", "1")
        b.run_writer("--commits", "90", "--seed", "2")
        assert a.stop_daemon() == 0
        for dep, n in ((a, 60), (b, 90)):
            out = tmp_path / f"{dep.name}.restored.db"
            r = dep.restore(out)
            assert r.returncode == 0, r.stderr
            assert grade(out, dep.commits()).seq == n
    finally:
        a.cleanup()


def test_restore_guards_and_refusals(dep: Deployment, tmp_path: Path) -> None:
    # No replica yet: --if-replica-exists is a no-op; without it, a clear error.
    target = tmp_path / "boot.db"
    r = dep.restore(target, "--if-replica-exists")
    assert r.returncode == 0 and not target.exists()
    r = dep.restore(target)
    assert r.returncode != 0 and not target.exists()
    _run_and_stop(dep, "--commits", "10")
    # Existing output: refused, untouched; with --if-db-not-exists, a no-op.
    target.write_bytes(b"precious")
    r = dep.restore(target)
    assert r.returncode == 2 and target.read_bytes() == b"precious"
    r = dep.restore(target, "--if-db-not-exists")
    assert r.returncode == 0 and target.read_bytes() == b"precious"


def test_in_place_restore_on_boot(dep: Deployment, tmp_path: Path) -> None:
    _run_and_stop(dep, "--commits", "25")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{dep.db}{suffix}").unlink(missing_ok=True)
    r = dep.bakelite("restore", "--db", dep.name, "--if-db-not-exists", "--if-replica-exists")
    assert r.returncode == 0, r.stderr
    assert grade(dep.db, dep.commits()).seq == 25
    # Second boot: the database exists, nothing happens.
    r = dep.bakelite("restore", "--db", dep.name, "--if-db-not-exists", "--if-replica-exists")
    assert r.returncode == 0


def test_second_daemon_is_refused_naming_the_holder(dep: Deployment) -> None:
    first = dep.start_daemon()
    dep.wait_replicating()
    r = dep.bakelite("daemon", timeout=60)
    assert r.returncode == 3
    assert f"pid {first.pid}" in r.stderr
    assert dep.stop_daemon() == 0


def test_database_not_in_wal_mode_is_refused_clearly(tmp_path: Path) -> None:
    dep = Deployment(tmp_path / "site")
    con = sqlite3.connect(dep.db)
    con.execute("CREATE TABLE t(x)")
    con.commit()
    con.close()
    r = dep.bakelite("daemon", timeout=60)
    assert r.returncode == 3
    assert "journal_mode=WAL" in r.stderr
    assert sqlite3.connect(dep.db).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_daemon_writes_no_tables_into_the_live_database(dep: Deployment) -> None:
    _run_and_stop(dep, "--commits", "20")
    con = sqlite3.connect(dep.db)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"marker", "log", "data"}


def test_list_shows_restore_points(dep: Deployment) -> None:
    _run_and_stop(dep, "--commits", "15")
    r = dep.bakelite("list", "--db", dep.name, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc  # one document
    r = dep.bakelite("list")
    assert r.returncode == 0 and dep.name in r.stdout


def _wal_read_slots(pid: int, shm: Path) -> set[int]:
    """The WAL read-mark slots whose read lock process ``pid`` holds on ``shm`` (from /proc/locks).

    SQLite's -shm lock bytes start at offset 120; WAL_READ_LOCK(i) is lock 3 + i.
    """
    st = shm.stat()
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    slots: set[int] = set()
    for line in Path("/proc/locks").read_text().splitlines():
        f = line.split()
        if "->" in f:  # a blocked waiter, not a held lock
            continue
        if len(f) < 8 or f[1] != "POSIX" or f[4] != str(pid) or f[5] != ident:
            continue
        start = int(f[6])
        end = start if f[7] == "EOF" else int(f[7])
        for byte in range(start, end + 1):
            if 123 <= byte <= 127:
                slots.add(byte - 123)
    return slots


def test_reader_leaves_read_mark_slot_zero_as_soon_as_the_app_writes(tmp_path: Path) -> None:
    # A reader on slot 0 makes each autocheckpoint of the app rebuild a frame iterator over the
    # whole WAL and give up (several times slower commits). The daemon starts there (the WAL is
    # empty) and must move off it on the first commit, not a debounce or max_batch_delay later.
    dep = Deployment(tmp_path / "site", debounce="20s", max_batch_delay="30s", safety_poll="60s")
    dep.init_db()
    try:
        dep.start_daemon()
        dep.wait_replicating()
        assert dep.daemon is not None
        shm = Path(f"{dep.db}-shm")
        deadline = time.time() + 10
        while _wal_read_slots(dep.daemon.pid, shm) != {0} and time.time() < deadline:
            time.sleep(0.05)
        assert _wal_read_slots(dep.daemon.pid, shm) == {0}, "an idle daemon's reader sits on slot 0"
        dep.run_writer("--commits", "3")
        deadline = time.time() + 10
        while 0 in _wal_read_slots(dep.daemon.pid, shm) and time.time() < deadline:
            time.sleep(0.05)
        slots = _wal_read_slots(dep.daemon.pid, shm)
        assert slots and 0 not in slots, f"daemon still holds read-mark slots {slots}"
        assert dep.stop_daemon() == 0
        out = tmp_path / "r.db"
        assert dep.restore(out).returncode == 0
        assert grade(out, dep.commits()).seq == 3
    finally:
        dep.cleanup()


def test_wal_past_max_wal_size_is_checkpointed_without_waiting_for_the_batch_delay(
    tmp_path: Path,
) -> None:
    # A fast writer must not outrun the checkpoint for a whole max_batch_delay: an event that
    # finds the WAL past max_wal_size syncs (and checkpoints) at once.
    dep = Deployment(
        tmp_path / "site",
        debounce="20s",
        max_batch_delay="30s",
        safety_poll="60s",
        extra_config='max_wal_size = "256KiB"\n',
    )
    dep.init_db()
    try:
        dep.start_daemon()
        dep.wait_replicating()
        dep.run_writer(
            "--commits", "400", "--blob-every", "2", "--autocheckpoint", "0", "--interval", "0.002"
        )
        wal = Path(f"{dep.db}-wal")
        assert wal.stat().st_size < 2 * 1024 * 1024, wal.stat().st_size
        assert dep.stop_daemon() == 0
        out = tmp_path / "r.db"
        assert dep.restore(out).returncode == 0
        assert grade(out, dep.commits()).seq == 400
    finally:
        dep.cleanup()
