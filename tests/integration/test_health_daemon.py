"""``status``, ``status --check`` and ``/metrics`` against a real daemon subprocess.

One daemon per test, driven through the states a monitor must tell apart: replicating, backing
off (a destination under a regular file, or the backup directory replaced by one), stale (SIGSTOP),
not running (SIGKILL) and stopped (SIGTERM).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sqlite3
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bakelite.cli.main import main
from bakelite.config.load import load_config
from bakelite.ops.status import DatabaseStatus, status_report
from harness import Deployment


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No host env files or variables for in-process CLI runs; logging and os.environ restored."""
    saved = dict(os.environ)
    monkeypatch.setenv("BAKELITE_ENV_FILE", os.devnull)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BAKELITE_CONFIG", raising=False)
    monkeypatch.delenv("BAKELITE_LOG", raising=False)
    handlers = list(logging.getLogger().handlers)
    yield
    os.environ.clear()
    os.environ.update(saved)
    for h in list(logging.getLogger().handlers):
        if h not in handlers:
            logging.getLogger().removeHandler(h)


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment(tmp_path / "site")
    d.init_db()
    yield d
    if d.daemon is not None and d.daemon.poll() is None:
        d.daemon.send_signal(signal.SIGCONT)  # a stopped process cannot die of SIGKILL's wait
    d.cleanup()


def state_of(dep: Deployment, name: str) -> DatabaseStatus:
    (row,) = status_report(load_config(dep.config).select(name)).databases
    return row


def wait_for(what: str, cond: Callable[[], bool], dep: Deployment, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{dep.daemon_log.read_text()}")


def cli(dep: Deployment, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main([*args, "--config", str(dep.config)])
    out, _ = capsys.readouterr()
    return code, out


def scrape(url: str) -> dict[str, dict[str, float]]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[s.labels["database"]] = s.value
    return out


def commit(db: Path, n: int = 3) -> None:
    con = sqlite3.connect(db)
    for i in range(n):
        con.execute("INSERT INTO data(k, v) VALUES (?, randomblob(3000))", (f"k{i}",))
        con.commit()
    con.close()


def test_live_daemon_states_and_metrics(dep: Deployment, capsys: pytest.CaptureFixture[str]) -> None:
    broken = dep.root / "broken.db"
    con = sqlite3.connect(broken)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t(x)")
    con.commit()
    con.close()
    (dep.root / "a-file").write_text("not a directory\n")
    dep.config.write_text(
        '[defaults]\ndebounce = "50ms"\nmax_batch_delay = "200ms"\nsafety_poll = "1s"\n'
        f'[[database]]\nname = "app"\npath = "{dep.db}"\n'
        f'  [[database.backends]]\n  type = "file"\n  path = "{dep.backups}"\n'
        f'[[database]]\nname = "broken"\npath = "{broken}"\n'
        f'  [[database.backends]]\n  type = "file"\n  path = "{dep.root / "a-file" / "backups"}"\n'
    )
    dep.start_daemon("--metrics-addr", "127.0.0.1:0")
    dep.wait_replicating()
    wait_for("the metrics URL", lambda: "serving metrics at" in dep.daemon_log.read_text(), dep)
    match = re.search(r"serving metrics at (\S+)", dep.daemon_log.read_text())
    assert match is not None
    url = match.group(1)
    commit(dep.db)
    wait_for(
        "app replicating with a change-set and broken backing off",
        lambda: (
            state_of(dep, "app").state == "replicating"
            and state_of(dep, "app").changesets >= 1
            and state_of(dep, "broken").state == "backing off"
        ),
        dep,
    )

    code, out = cli(dep, capsys, "status")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines() if not line.startswith(" ")}
    assert rows["app"][1:3] == ["replicating", "live"]
    assert " ".join(rows["broken"][1:3]) == "backing off"
    assert re.search(r"^  stuck for \d+s \(\d+ failed attempts?\)$", out, flags=re.M), out
    assert "  last error: not a directory" in out

    code, out = cli(dep, capsys, "status", "--check")
    assert code == 1
    assert out.startswith("broken: backing off: stuck for ") and "last error: not a directory" in out
    assert "app:" not in out
    assert cli(dep, capsys, "status", "--check", "--db", "app") == (0, "")
    assert cli(dep, capsys, "status", "--check", "--db", "app", "--max-lag", "1m") == (0, "")
    code, out = cli(dep, capsys, "status", "--check", "--db", "app", "--max-verify-age", "1h")
    assert (code, out.strip()) == (1, "app: never verified (--max-verify-age 1h): run `bakelite verify`")

    m = scrape(url)
    assert m["bakelite_up"] == {"app": 1.0, "broken": 0.0}
    assert set(m["bakelite_replica_lag_seconds"]) == {"app"}
    assert m["bakelite_replica_lag_seconds"]["app"] < 5
    assert set(m["bakelite_last_synced_seconds"]) == {"app"}
    assert set(m["bakelite_backing_off_seconds"]) == {"broken"}
    assert m["bakelite_change_sets"]["app"] >= 1 and "broken" not in m["bakelite_change_sets"]
    assert (
        m["bakelite_bytes_shipped_total"]["app"] > 9000 and m["bakelite_bytes_shipped_total"]["broken"] == 0
    )
    assert "bakelite_verify_ok" not in m and "bakelite_last_verified_seconds" not in m

    assert cli(dep, capsys, "verify", "--db", "app")[0] == 0
    m = scrape(url)
    assert m["bakelite_verify_ok"] == {"app": 1.0}
    assert m["bakelite_last_verified_seconds"]["app"] < 60
    assert cli(dep, capsys, "status", "--check", "--db", "app", "--max-verify-age", "1h") == (0, "")
    assert "  verified: clean (shallow) " in cli(dep, capsys, "status", "--db", "app")[1]

    # A hung daemon: its files stop being refreshed, and the PID is still there.
    assert dep.daemon is not None
    pid = dep.daemon.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        stale_after = state_of(dep, "app").stale_after_seconds
        assert stale_after == 12.0  # safety_poll 1s: one 2 s heartbeat plus the 10 s margin
        wait_for("stale", lambda: state_of(dep, "app").state == "stale", dep, timeout=stale_after + 10)
        code, out = cli(dep, capsys, "status", "--check", "--db", "app")
        assert code == 1
        assert out.startswith("app: stale: stuck for ") and f"daemon pid {pid} may be hung" in out
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for("replicating again", lambda: state_of(dep, "app").state == "replicating", dep)

    # A dead daemon: the PID in the file is gone, whatever the file says.
    assert dep.stop_daemon(signal.SIGKILL) == -signal.SIGKILL
    code, out = cli(dep, capsys, "status", "--check")
    assert code == 1
    assert "app: not running: stuck for " in out and f"daemon pid {pid} is gone" in out
    assert "broken: not running: stuck for " in out and "last error: not a directory" in out


def test_backend_breaks_recovers_and_stops_cleanly(
    dep: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    dep.start_daemon()
    dep.wait_replicating()
    wait_for("replicating", lambda: state_of(dep, "app").state == "replicating", dep)
    # The backup directory replaced by a regular file (we run as root: permissions would not stop us).
    moved = dep.root / "backups.moved"
    dep.backups.rename(moved)
    dep.backups.write_text("not a directory\n")
    commit(dep.db)
    wait_for(
        "backing off",
        lambda: state_of(dep, "app").state == "backing off" and state_of(dep, "app").attempts >= 1,
        dep,
    )
    row = state_of(dep, "app")
    assert row.failing_since is not None and row.lag_seconds is not None and row.lag_seconds > 0
    code, out = cli(dep, capsys, "status", "--check")
    assert code == 1
    assert out.startswith("app: backing off: stuck for ") and "last error: not a directory" in out

    dep.backups.unlink()
    moved.rename(dep.backups)
    wait_for("recovery", lambda: state_of(dep, "app").state == "replicating", dep)
    row = state_of(dep, "app")
    assert (row.failing_since, row.attempts, row.lag_seconds) == (None, 0, 0.0)
    assert cli(dep, capsys, "status", "--check", "--max-lag", "30s") == (0, "")

    assert dep.stop_daemon() == 0
    code, out = cli(dep, capsys, "status")
    assert code == 0
    assert out.splitlines()[1].split()[:2] == ["app", "stopped"]
    assert "  the daemon stopped " in out
    code, out = cli(dep, capsys, "status", "--check")
    assert code == 1 and out.startswith("app: stopped: the daemon stopped ")
