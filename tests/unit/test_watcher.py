"""The -wal watcher: one-shot watches that are re-armed before a change is reported (real inotify)."""

from __future__ import annotations

import errno
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bakelite.replication import watcher as watcher_mod
from bakelite.replication.watcher import WalWatcher

pytestmark = pytest.mark.skipif(watcher_mod.inotify_simple is None, reason="inotify is Linux-only")


def _db(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE IF NOT EXISTS t(v)")
    return con


def _wait(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _grows(seen: list[str]) -> Callable[[], bool]:
    """True once ``seen`` is longer than it is now."""
    n = len(seen)
    return lambda: len(seen) > n


def _read(w: WalWatcher) -> list[Any]:
    assert w._ino is not None
    return list(w._ino.read(timeout=200))


def _marks(w: WalWatcher) -> dict[int, int]:
    """The kernel's inotify marks of ``w``: inode -> mask (from /proc/self/fdinfo)."""
    assert w._ino is not None
    marks = {}
    for line in Path(f"/proc/self/fdinfo/{w._ino.fileno()}").read_text().splitlines():
        if line.startswith("inotify "):
            f = dict(kv.split(":", 1) for kv in line.split()[1:])
            marks[int(f["ino"], 16)] = int(f["mask"], 16)
    return marks


def test_a_burst_of_writes_finds_no_watch_until_it_is_re_armed(tmp_path: Path) -> None:
    con = _db(tmp_path / "app.db")
    wal = Path(f"{tmp_path / 'app.db'}-wal").stat().st_ino
    w = WalWatcher(lambda name: None)
    w.add("app", tmp_path / "app.db")
    assert wal in _marks(w)
    con.execute("INSERT INTO t VALUES (0)")
    events = _read(w)
    # The first write fired the watch and the kernel dropped it: the rest of a burst of commits
    # finds no watch on the -wal, so the kernel builds no event for each write().
    assert wal not in _marks(w)
    for i in range(50):
        con.execute("INSERT INTO t VALUES (?)", (i,))
    assert w.handle(events) == ["app"]
    assert wal in _marks(w)  # re-armed
    con.execute("INSERT INTO t VALUES ('again')")
    assert w.handle(_read(w)) == ["app"]
    con.close()
    w.stop()


def test_a_re_arm_that_races_the_kernel_dropping_the_watch_is_armed_again(tmp_path: Path) -> None:
    # The kernel queues a one-shot watch's event, then drops the watch and queues IN_IGNORED. A
    # re-arm that runs in between finds the watch still there and gets the same descriptor back,
    # and the drop then takes it too: unless IN_IGNORED re-arms, the -wal is never watched again
    # and replication falls back to safety_poll (seen: no sync for 30 s under a steady writer).
    con = _db(tmp_path / "app.db")
    wal = Path(f"{tmp_path / 'app.db'}-wal").stat().st_ino
    w = WalWatcher(lambda name: None)
    assert w._ino is not None
    w.add("app", tmp_path / "app.db")
    (wd,) = w._armed
    # The event as read before the drop: the re-arm gets the same descriptor back.
    fired = watcher_mod.inotify_simple.Event(wd, watcher_mod._F.MODIFY, 0, "")
    assert w.handle([fired]) == ["app"]
    assert list(w._armed) == [wd]
    # The drop lands after the re-arm, taking the re-armed watch with it.
    w._ino.rm_watch(wd)
    assert wal not in _marks(w)
    dropped = _read(w)
    assert [ev.mask & watcher_mod._IGNORED for ev in dropped] == [watcher_mod._IGNORED]
    assert w.handle(dropped) == ["app"]  # reported too: a write may have found no watch
    assert wal in _marks(w)
    con.execute("INSERT INTO t VALUES ('after')")
    assert w.handle(_read(w)) == ["app"]
    con.close()
    w.stop()


def test_a_write_made_while_a_change_is_reported_is_reported_too(tmp_path: Path) -> None:
    # on_change stands for the scan the report causes; a commit that lands while it runs must
    # raise a new event, which it does only if the watch was re-armed before the report.
    app = _db(tmp_path / "app.db")
    app.close()
    # The app keeps a connection open, so its -wal is not deleted (which would be an event).
    app = sqlite3.connect(tmp_path / "app.db", isolation_level=None, check_same_thread=False)
    app.execute("SELECT count(*) FROM t").fetchall()
    reports: list[str] = []

    def on_change(name: str) -> None:
        reports.append(name)
        if len(reports) <= 5:
            app.execute("INSERT INTO t VALUES (?)", (len(reports),))

    w = WalWatcher(on_change)
    w.add("app", tmp_path / "app.db")
    w.start()
    try:
        app.execute("INSERT INTO t VALUES ('first')")
        _wait(lambda: len(reports) >= 6)
    finally:
        w.stop()
        app.close()


def test_a_wal_that_is_deleted_and_recreated_is_watched_again(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    _db(db).close()  # the last connection checkpoints and deletes the -wal
    assert not Path(f"{db}-wal").exists()
    seen: list[str] = []
    w = WalWatcher(seen.append)
    w.add("app", db)
    w.start()
    try:
        for round_ in range(3):
            grew = _grows(seen)
            con = sqlite3.connect(db, isolation_level=None)
            con.execute("INSERT INTO t VALUES (?)", (round_,))
            _wait(grew)
            time.sleep(0.05)  # the create and the first write may be one report or two
            assert f"{db.resolve()}-wal" in w._armed.values()
            grew = _grows(seen)
            con.execute("INSERT INTO t VALUES ('more')")  # the new -wal's own watch
            _wait(grew)
            con.close()
            assert not Path(f"{db}-wal").exists()
            time.sleep(0.05)  # the deletion's report
    finally:
        w.stop()
    assert set(seen) == {"app"}


def test_databases_sharing_a_directory_are_told_apart(tmp_path: Path) -> None:
    a, b = _db(tmp_path / "a.db"), _db(tmp_path / "b.db")
    w = WalWatcher(lambda name: None)
    w.add("a", tmp_path / "a.db")
    w.add("b", tmp_path / "b.db")
    b.execute("INSERT INTO t VALUES (1)")
    assert w.handle(_read(w)) == ["b"]
    a.execute("INSERT INTO t VALUES (1)")
    b.execute("INSERT INTO t VALUES (2)")
    assert sorted(w.handle(_read(w))) == ["a", "b"]
    a.close()
    b.close()
    w.stop()


def test_when_a_wal_cannot_be_watched_the_whole_directory_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    con = _db(tmp_path / "app.db")
    w = WalWatcher(lambda name: None)
    assert w._ino is not None
    real_add = w._ino.add_watch

    def add_watch(path: str, mask: int) -> int:
        if path.endswith("-wal"):  # as when fs.inotify.max_user_watches is used up
            raise OSError(errno.ENOSPC, "No space left on device")
        return int(real_add(path, mask))

    w._ino.add_watch = add_watch
    with caplog.at_level("WARNING"):
        w.add("app", tmp_path / "app.db")
    assert "max_user_watches" in caplog.text
    for _ in range(3):
        con.execute("INSERT INTO t VALUES (1)")
        assert w.handle(_read(w)) == ["app"]
    con.close()
    w.stop()
