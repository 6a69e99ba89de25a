"""``bakelite init`` unattended and starter paths, end to end in a temp root with real subprocesses."""

from __future__ import annotations

import os
import pwd
import signal
import sqlite3
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from bakelite.config.load import load_config
from bakelite.ops import init

BIN = Path(sys.executable).parent


def env_for(root: Path, **extra: str) -> dict[str, str]:
    """The environment of a bakelite run in the temp root: no env files of the host."""
    env = dict(
        os.environ, BAKELITE_INIT_ROOT=str(root), BAKELITE_ENV_FILE=os.devnull, HOME=str(root / "home")
    )
    env["PATH"] = f"{BIN}:{env['PATH']}"
    env.pop("BAKELITE_CONFIG", None)
    env.update(extra)
    return env


def bakelite(root: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run the real console script."""
    return subprocess.run(
        [str(BIN / "bakelite"), *args],
        capture_output=True,
        text=True,
        env=env_for(root, **extra),
        timeout=120,
        check=False,
    )


def make_db(path: Path, rows: int = 3) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
    con.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i}",) for i in range(rows)])
    con.commit()
    con.close()


def count(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        return int(con.execute("SELECT count(*) FROM t").fetchone()[0])
    finally:
        con.close()


def unattended_args(root: Path, *extra: str) -> list[str]:
    return [
        "init", "--yes", "--force",
        "--db-path", str(root / "var/lib/app/app.db"), "--db-name", "app",
        "--backup-dir", str(root / "var/backups/bakelite"),
        "--encrypt", "--service-user", "root", *extra,
    ]  # fmt: skip


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_unattended_setup_then_a_real_daemon_replicates_and_verifies(tmp_path: Path) -> None:
    root = tmp_path / "root"
    db = root / "var/lib/app/app.db"
    make_db(db)
    (root / "etc/cron.d").mkdir(parents=True)

    r = bakelite(root, *unattended_args(root, "--enable"))
    assert r.returncode == 0, r.stdout + r.stderr
    # systemd is not running in this container: said, and only the systemd steps skipped.
    assert "systemd is not running here" in r.stdout
    assert "0 failures" in r.stdout  # doctor ran and was clean

    config = root / "etc/bakelite/bakelite.toml"
    key = root / "etc/bakelite/bakelite.key"
    backups = root / "var/backups/bakelite"
    cfg = load_config(config, environ={})
    (database,) = cfg.databases
    assert database.name == "app" and database.path == db
    assert database.backends[0].describe() == f"file://{backups}"
    assert database.encryption is not None and database.encryption.key_file == key
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(backups.stat().st_mode) == 0o700
    assert not (root / "etc/systemd").exists()
    cron = (root / "etc/cron.d/bakelite").read_text()
    assert f"root  bakelite status --check --max-lag 10m --max-verify-age 36h --config {config}" in cron

    # The daemon the unit would run, against the config init wrote.
    cfg_args = ("--config", str(config))
    log = (tmp_path / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [str(BIN / "bakelite"), "daemon", *cfg_args], stdout=log, stderr=subprocess.STDOUT, env=env_for(root)
    )
    try:
        wait_for(lambda: bakelite(root, "status", "--check", *cfg_args).returncode == 0)
        make_db(db, rows=50)
        wait_for(lambda: bakelite(root, "verify", *cfg_args).returncode == 0)
        deep = bakelite(root, "verify", "--deep", "--db", "app", *cfg_args)
        assert deep.returncode == 0, deep.stdout + deep.stderr
        check = bakelite(root, "status", "--check", "--max-lag", "10m", "--max-verify-age", "36h", *cfg_args)
        assert check.returncode == 0 and check.stdout == "", check.stdout + check.stderr
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0, (tmp_path / "daemon.log").read_text()
        log.close()
    stopped = bakelite(root, "status", "--check", *cfg_args)
    assert stopped.returncode == 1  # a stopped daemon is what the check timer pages on

    # The container's boot-time guard: a no-op while the database exists, a restore once it is gone.
    guard = ("restore", "--db", "app", "--if-db-not-exists", "--if-replica-exists", *cfg_args)
    assert bakelite(root, *guard).returncode == 0
    assert count(db) == 53
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    seeded = bakelite(root, *guard)
    assert seeded.returncode == 0, seeded.stderr
    assert count(db) == 53


def test_rerun_never_replaces_the_key_and_refuses_a_changed_config_without_force(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_db(root / "var/lib/app/app.db")
    assert bakelite(root, *unattended_args(root)).returncode == 0
    key = root / "etc/bakelite/bakelite.key"
    config = root / "etc/bakelite/bakelite.toml"
    first_key, first_config = key.read_bytes(), config.read_text()

    again = bakelite(root, *unattended_args(root))  # --force: config rewritten, key kept
    assert again.returncode == 0, again.stderr
    assert key.read_bytes() == first_key
    assert "a key file is never overwritten" in again.stdout

    args = [a for a in unattended_args(root) if a != "--force"]
    args[args.index("app")] = "other"
    refused = bakelite(root, *args)
    assert refused.returncode == 2
    assert "already exists" in refused.stderr and "--force" in refused.stderr
    assert config.read_text() == first_config


def test_unattended_under_systemd_installs_units_dropins_and_enables(tmp_path: Path) -> None:
    """systemd 'running' in the root (its /run/systemd/system) with a recording systemctl on PATH."""
    root = tmp_path / "root"
    db = root / "var/lib/app/app.db"
    make_db(db)
    nobody = pwd.getpwnam("nobody")
    (root / "run/systemd/system").mkdir(parents=True)
    fake = tmp_path / "bin"
    fake.mkdir()
    calls = tmp_path / "systemctl.calls"
    (fake / "systemctl").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    (fake / "systemctl").chmod(0o755)
    config = tmp_path / "srv" / "bakelite.toml"  # a non-default --config

    r = bakelite(
        root,
        "--config", str(config),
        *[a for a in unattended_args(root, "--enable") if a not in ("--service-user", "root")],
        "--service-user", "nobody",
        PATH=f"{fake}:{BIN}:{os.environ['PATH']}",
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    unit_dir = root / "etc/systemd/system"
    for unit in init.UNIT_FILES:
        assert (unit_dir / unit).read_text() == init.packaged_file(unit)
    for unit in init.SERVICE_UNITS:
        dropin = (unit_dir / f"{unit}.d" / init.DROPIN_NAME).read_text().splitlines()
        assert "User=nobody" in dropin
        assert f"ReadWritePaths={db.parent} {root / 'var/backups/bakelite'}" in dropin
        assert "ExecStart=" in dropin  # reset, then the same command with our --config
        assert any(
            line.startswith("ExecStart=/usr/bin/env bakelite") and str(config) in line for line in dropin
        )
    assert calls.read_text().splitlines() == [
        "daemon-reload",
        "unmask bakelite.service",
        "enable --now " + " ".join(init.ENABLE_UNITS),
    ]
    # Re-homed: the key and the backup directory belong to the service user.
    assert (config.parent / "bakelite.key").stat().st_uid == nobody.pw_uid
    assert (root / "var/backups/bakelite").stat().st_uid == nobody.pw_uid


def test_unattended_rejects_contradictions(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_db(root / "var/lib/app/app.db")
    both = bakelite(root, *unattended_args(root, "--key-file", str(tmp_path / "k")))
    assert both.returncode == 2 and "alternatives" in both.stderr
    cloud = bakelite(root, *unattended_args(root, "--recipe", "s3"))
    assert cloud.returncode == 2 and "local recipe only" in cloud.stderr
    user = bakelite(root, *[a if a != "root" else "no-such-user-xyz" for a in unattended_args(root)])
    assert user.returncode == 2 and "no such user" in user.stderr
    assert not (root / "etc/bakelite/bakelite.toml").exists()


def test_unattended_with_an_existing_key_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_db(root / "var/lib/app/app.db")
    key = tmp_path / "my.key"
    assert bakelite(root, "keygen", "--output", str(key)).returncode == 0
    args = [a for a in unattended_args(root, "--key-file", str(key)) if a != "--encrypt"]
    r = bakelite(root, *args)
    assert r.returncode == 0, r.stderr
    enc = tomllib.loads((root / "etc/bakelite/bakelite.toml").read_text())["database"][0]["encryption"]
    assert enc == {"key_file": str(key)}
    assert not (root / "etc/bakelite/bakelite.key").exists()


@pytest.mark.parametrize("recipe", init.RECIPES)
def test_recipe_yes_writes_a_valid_starter_config(tmp_path: Path, recipe: str) -> None:
    root = tmp_path / "root"
    r = bakelite(root, "init", "--recipe", recipe, "--yes")
    assert r.returncode == 0, r.stderr
    config = root / "etc/bakelite/bakelite.toml"  # the default --config, under the root
    cfg = load_config(config, environ={})
    assert cfg.databases[0].backends[0].type == ("file" if recipe == "local" else recipe)
    again = bakelite(root, "init", "--recipe", recipe, "--yes")
    assert again.returncode == 0  # identical: nothing to overwrite
    config.write_text(config.read_text() + "# my edit\n")
    refused = bakelite(root, "init", "--recipe", recipe, "--yes")
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert config.read_text().endswith("# my edit\n")


def test_without_a_terminal_or_yes_init_says_what_to_do(tmp_path: Path) -> None:
    r = subprocess.run(
        [str(BIN / "bakelite"), "init"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env_for(tmp_path),
        timeout=60,
        check=False,
    )
    assert r.returncode == 2
    assert "not a terminal" in r.stderr and "--yes" in r.stderr
