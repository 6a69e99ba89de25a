"""Status files and the status report: derived states, --check thresholds, rendering, the publisher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from bakelite.config.model import Database
from bakelite.daemon.statusfile import (
    Publication,
    StatusFileError,
    StatusPublisher,
    StatusRecord,
    VerifyMarker,
    read_marker,
    read_status,
    stale_threshold,
    status_path,
    write_marker,
    write_status,
)
from bakelite.ops.status import (
    derive_state,
    fresh_text,
    pid_alive,
    render_check_text,
    render_status_text,
    status_report,
)

NOW = 1_780_000_000.0
ALIVE = {4242}


def alive(pid: int) -> bool:
    return pid in ALIVE


def record(**kw: object) -> StatusRecord:
    base = StatusRecord(
        database="app",
        path="/srv/app.db",
        pid=4242,
        started=NOW - 600,
        written=NOW - 1,
        stale_after=40.0,
        state="replicating",
        backup="20260528T202640000Z-0123abcd",
        last_sync=NOW - 1,
        changesets=7,
        bytes_shipped=123456,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def database(tmp_path: Path, name: str = "app") -> Database:
    return Database(name=name, path=tmp_path / f"{name}.db")


def publish(db: Database, rec: StatusRecord) -> None:
    path = status_path(db.path, db.name)
    path.parent.mkdir(exist_ok=True)
    write_status(path, replace(rec, database=db.name, path=str(db.path)))


# -- derived states -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rec", "state", "reason"),
    [
        (None, "not running", "no status file"),
        (record(), "replicating", None),
        (record(state="snapshotting"), "snapshotting", None),
        (record(state="backing off"), "backing off", None),
        (record(state="stopped", pid=1), "stopped", "stopped"),  # a clean stop: the PID no longer matters
        (record(pid=99999), "not running", "pid 99999 is gone"),
        (record(written=NOW - 41), "stale", "not updated for 41s (threshold 40s)"),
        (record(written=NOW - 39), "replicating", None),
        # A dead PID wins over an old file: the more specific truth.
        (record(pid=99999, written=NOW - 500), "not running", "gone"),
    ],
)
def test_derive_state(rec: StatusRecord | None, state: str, reason: str | None) -> None:
    got_state, got_reason = derive_state(rec, NOW, alive)
    assert got_state == state
    if reason is None:
        assert got_reason is None
    else:
        assert got_reason is not None and reason in got_reason


def test_stale_threshold_follows_safety_poll() -> None:
    assert stale_threshold(30.0) == 40.0
    assert stale_threshold(1.0) == 12.0  # never under one heartbeat (2 s) plus the margin
    assert stale_threshold(300.0) == 310.0


def test_pid_alive_sees_live_reaped_and_zombie_processes() -> None:
    assert pid_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 10
    # Not yet reaped: a zombie, which is as dead as a daemon can be.
    while time.time() < deadline:
        try:
            with open(f"/proc/{child.pid}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[-1].split()[0] == b"Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.01)
    assert not pid_alive(child.pid)
    child.wait()
    assert not pid_alive(child.pid)
    assert not pid_alive(0)


# -- the report -----------------------------------------------------------------------------------


def test_healthy_database_passes_check_silently(tmp_path: Path) -> None:
    db = database(tmp_path)
    publish(db, record())
    report = status_report([db], check=True, now=NOW, alive=alive)
    assert report.exit_code == 0 and report.healthy
    assert render_check_text(report) == ""
    row = report.databases[0]
    assert (row.state, row.lag_seconds, row.changesets, row.bytes_shipped) == ("replicating", 0.0, 7, 123456)


def test_without_check_the_exit_code_is_zero_even_when_unhealthy(tmp_path: Path) -> None:
    db = database(tmp_path)
    report = status_report([db], now=NOW, alive=alive)
    assert report.exit_code == 0 and not report.healthy
    assert report.databases[0].state == "not running"


@pytest.mark.parametrize(
    ("rec", "needle"),
    [
        (record(pid=99999), "not running: stuck for 1s (0 failed attempts); daemon pid 99999 is gone"),
        (record(written=NOW - 100), "stale: stuck for 1m"),
        (record(state="stopped"), "stopped: the daemon stopped 1s ago"),
        (record(state="starting"), "starting: stuck for 10m"),
        (
            record(state="backing off", failing_since=NOW - 125, attempts=4, last_error="boom"),
            "backing off: stuck for 2m (4 failed attempts); last error: boom",
        ),
        (
            record(state="backing off", failing_since=NOW - 5, attempts=1, retrying=False, last_error="x"),
            "not retried",
        ),
    ],
)
def test_unhealthy_states_fail_check_with_reasons(tmp_path: Path, rec: StatusRecord, needle: str) -> None:
    db = database(tmp_path)
    publish(db, rec)
    report = status_report([db], check=True, now=NOW, alive=alive)
    assert report.exit_code == 1
    text = render_check_text(report)
    assert text.startswith("app: ")
    assert needle in text


def test_max_lag(tmp_path: Path) -> None:
    db = database(tmp_path)
    publish(db, record(oldest_unshipped=NOW - 700, last_sync=NOW - 720))
    assert status_report([db], check=True, now=NOW, alive=alive).exit_code == 0
    assert status_report([db], check=True, max_lag=900, now=NOW, alive=alive).exit_code == 0
    failing = status_report([db], check=True, max_lag=600, now=NOW, alive=alive)
    assert failing.exit_code == 1
    assert render_check_text(failing) == "app: replica is 11m behind (--max-lag 10m)"
    # The lag keeps growing between writes of the file: absolute times, not the writer's view.
    later = status_report([db], check=True, max_lag=600, now=NOW + 30, alive=alive)
    assert later.databases[0].lag_seconds == pytest.approx(730)


def test_lag_is_unknown_before_the_first_sync_and_for_a_dead_daemon(tmp_path: Path) -> None:
    db = database(tmp_path)
    publish(db, record(state="snapshotting", last_sync=None, oldest_unshipped=NOW - 3000))
    assert status_report([db], check=True, max_lag=60, now=NOW, alive=alive).exit_code == 0
    publish(db, record(pid=99999, oldest_unshipped=NOW - 3000))
    assert status_report([db], now=NOW, alive=alive).databases[0].lag_seconds is None


def test_max_verify_age(tmp_path: Path) -> None:
    db = database(tmp_path)
    publish(db, record())

    def check(max_age: float) -> str:
        report = status_report([db], check=True, max_verify_age=max_age, now=NOW, alive=alive)
        return render_check_text(report)

    assert check(36 * 3600) == "app: never verified (--max-verify-age 36h): run `bakelite verify`"
    write_marker(db.path, VerifyMarker("app", NOW - 3600, "deep", True, (), NOW - 3600, "deep"))
    assert check(36 * 3600) == ""
    assert check(1800) == "app: last clean verify was 1h ago (--max-verify-age 30m)"
    # A failed run after a clean one: the check fails even though the clean one is recent enough.
    write_marker(
        db.path, VerifyMarker("app", NOW - 60, "shallow", False, ("k: bad crc",), NOW - 3600, "deep")
    )
    assert check(36 * 3600) == "app: the last verify (shallow, 1m ago) found problems: k: bad crc"


def test_unreadable_status_file_is_not_healthy(tmp_path: Path) -> None:
    db = database(tmp_path)
    path = status_path(db.path, db.name)
    path.parent.mkdir()
    path.write_text("{not json")
    with pytest.raises(StatusFileError):
        read_status(db.path, db.name)
    report = status_report([db], check=True, now=NOW, alive=alive)
    assert report.exit_code == 1
    assert "status file unreadable" in render_check_text(report)


def test_status_text_table_and_detail_lines(tmp_path: Path) -> None:
    app, other = database(tmp_path, "app"), database(tmp_path, "other")
    publish(app, record(oldest_unshipped=NOW - 95, last_sync=NOW - 100))
    write_marker(app.path, VerifyMarker("app", NOW - 7200, "deep", True, (), NOW - 7200, "deep"))
    publish(
        other,
        record(
            state="backing off",
            failing_since=NOW - 300,
            attempts=3,
            last_error="disk on fire",
            last_sync=None,
        ),
    )
    write_marker(other.path, VerifyMarker("other", NOW - 60, "shallow", False, ("a: x", "b: y"), None, None))
    text = render_status_text(status_report([app, other], now=NOW, alive=alive))
    lines = text.splitlines()
    assert lines[0].split() == ["DATABASE", "STATE", "FRESH", "SYNCED", "CHANGES", "SHIPPED"]
    assert lines[1].split() == ["app", "replicating", "-1m", "1m", "ago", "7", "121", "KiB"]
    assert lines[2] == "  verified: clean (deep) 2h ago"
    assert lines[3].split()[:4] == ["other", "backing", "off", "-"]
    assert lines[4] == "  stuck for 5m (3 failed attempts)"
    assert lines[5] == "  last error: disk on fire"
    assert lines[6] == "  verify: PROBLEMS (shallow, 1m ago): a: x; +1 more"


def test_fresh_column() -> None:
    assert fresh_text(None) == "-"
    assert fresh_text(0.0) == "live"
    assert fresh_text(42.0) == "-42s"
    assert fresh_text(300.0) == "-5m"


# -- files and the publisher ----------------------------------------------------------------------


def test_status_record_round_trip_tolerates_new_fields(tmp_path: Path) -> None:
    db = database(tmp_path)
    rec = record(database="app", path=str(db.path))
    publish(db, rec)
    assert read_status(db.path, "app") == rec
    path = status_path(db.path, "app")
    data = json.loads(path.read_text())
    data["from_the_future"] = 1
    path.write_text(json.dumps(data))
    assert read_status(db.path, "app") == rec
    del data["pid"]
    path.write_text(json.dumps(data))
    with pytest.raises(StatusFileError):
        read_status(db.path, "app")


def test_marker_round_trip(tmp_path: Path) -> None:
    db = database(tmp_path)
    assert read_marker(db.path, "app") is None
    marker = VerifyMarker("app", NOW, "deep", False, ("x",), NOW - 5, "shallow")
    write_marker(db.path, marker)
    assert read_marker(db.path, "app") == marker


class FakeClock:
    def __init__(self) -> None:
        self.t = NOW

    def __call__(self) -> float:
        return self.t


def publication(path: Path, rec: StatusRecord, heartbeat: float = 30.0) -> Publication:
    key = tuple(v for k, v in rec.to_dict().items() if k != "written")
    return Publication(path, key, heartbeat, lambda now: replace(rec, written=now))


def test_publisher_writes_changes_and_heartbeats_only(tmp_path: Path) -> None:
    db = database(tmp_path)
    path = status_path(db.path, db.name)
    clock = FakeClock()
    current = [record(database="app", path=str(db.path))]
    pub = StatusPublisher(lambda: [publication(path, current[0])], interval=2.0, clock=clock)
    assert pub.publish_all() == 1
    assert not list(path.parent.glob(".*tmp*"))  # no temp file left behind
    first = read_status(db.path, "app")
    assert first is not None and first.written == NOW
    clock.t += 2
    assert pub.publish_all() == 0  # unchanged, heartbeat not due
    current[0] = replace(current[0], changesets=8)
    assert pub.publish_all() == 1  # changed
    clock.t += 29
    assert pub.publish_all() == 0
    clock.t += 1
    assert pub.publish_all() == 1  # heartbeat: rewritten so its age proves the daemon alive
    latest = read_status(db.path, "app")
    assert latest is not None and latest.written == NOW + 32 and latest.changesets == 8
    assert pub.publish_all(force=True) == 1


def test_publisher_survives_an_unwritable_directory(tmp_path: Path) -> None:
    gone = tmp_path / "gone" / ".bakelite" / "app.status.json"
    pub = StatusPublisher(lambda: [publication(gone, record())], clock=FakeClock())
    assert pub.publish_all() == 0
    assert not gone.parent.exists()  # only .bakelite/ itself is ever made, not missing parents


def test_supervisor_records_before_start(tmp_path: Path) -> None:
    from bakelite.daemon.supervisor import Supervisor

    db = database(tmp_path)
    sup = Supervisor((db,), lambda d: [], clock=lambda: NOW)
    try:
        assert sup.publisher is not None
        assert sup.publisher.publish_all() == 1
        rec = read_status(db.path, "app")
        assert rec is not None
        assert (rec.state, rec.pid, rec.written, rec.stale_after) == ("starting", os.getpid(), NOW, 40.0)
        assert sup.status_records() == [rec]
    finally:
        sup.pool.shutdown()
