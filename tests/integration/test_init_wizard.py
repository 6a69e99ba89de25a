"""The ``bakelite init`` wizard, driven for real through a pseudo-terminal (pexpect), for every recipe."""

from __future__ import annotations

import os
import sqlite3
import stat
import sys
import tomllib
from pathlib import Path

import pexpect
import pytest

from bakelite.config.load import load_config
from bakelite.ops import init

BIN = Path(sys.executable).parent


def env_for(root: Path) -> dict[str, str]:
    """The environment of a bakelite run in the temp root: no env files of the host."""
    env = dict(
        os.environ, BAKELITE_INIT_ROOT=str(root), BAKELITE_ENV_FILE=os.devnull, HOME=str(root / "home")
    )
    env["PATH"] = f"{BIN}:{env['PATH']}"
    env.pop("BAKELITE_CONFIG", None)
    return env


def make_db(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    con.commit()
    con.close()


# (prompt substring, answer) after the database questions; "" takes the default.
BACKEND_ANSWERS: dict[str, list[tuple[str, str]]] = {
    "local": [("Backup directory", "")],
    "s3": [
        ("S3 bucket", "my-bucket"),
        ("Key prefix", ""),
        ("Region", "eu-west-1"),
        ("Endpoint URL", "http://127.0.0.1:9"),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", 's3cr"et'),
    ],
    "gcs": [("GCS bucket", "my-gcs-bucket"), ("Object prefix", ""), ("Service-account JSON", "")],
    "azure": [
        ("Storage account", "myaccount"),
        ("Container", ""),
        ("Blob prefix", "apps/app"),
        ("AZURE_STORAGE_ACCOUNT_KEY", "a2V5"),
    ],
    "sftp": [
        ("SFTP host", "backup.example.com"),
        ("Port", "2222"),
        ("Login user", ""),
        ("Directory on the server", ""),
        ("Private key file", ""),
        ("known_hosts file", ""),
    ],
}
CREDENTIALS = {
    "s3": 'AWS_ACCESS_KEY_ID="AKIDEXAMPLE"\nAWS_SECRET_ACCESS_KEY="s3cr\\"et"\n',
    "azure": 'AZURE_STORAGE_ACCOUNT_KEY="a2V5"\n',
}


def spawn(root: Path, *args: str, path: str | None = None) -> pexpect.spawn:
    env = env_for(root)
    if path is not None:
        env["PATH"] = path
    child = pexpect.spawn(
        str(BIN / "bakelite"), ["init", *args], env=env, encoding="utf-8", timeout=60, dimensions=(50, 200)
    )
    child.logfile_read = sys.stdout
    return child


def answer(child: pexpect.spawn, prompt: str, reply: str) -> None:
    child.expect_exact(prompt)
    child.sendline(reply)


def finish(child: pexpect.spawn) -> int:
    child.expect(pexpect.EOF, timeout=120)
    child.close()
    assert child.exitstatus is not None
    return int(child.exitstatus)


@pytest.mark.parametrize("recipe", init.RECIPES)
def test_wizard_recipe(tmp_path: Path, recipe: str) -> None:
    root = tmp_path / "root"
    db = root / "var/lib/app/app.db"
    make_db(db)
    child = spawn(root)
    answer(child, "Recipe (local / s3 / gcs / azure / sftp) [local]:", recipe)
    answer(child, "Database file to back up:", "relative.db")  # rejected: must be absolute
    answer(child, "please give an absolute path", str(db))
    answer(child, "Name for it in the config [app]:", "")
    for prompt, reply in BACKEND_ANSWERS[recipe]:
        answer(child, prompt, reply)
    answer(child, "Encrypt backups at rest", "")
    child.expect_exact("The config (validated):")
    answer(child, "Generate a new key at", "y")
    answer(child, "Write the config to", "y")
    if recipe in CREDENTIALS:
        answer(child, "Write the credentials to", "y")
    answer(child, "Run bakelite as user (the owner of app.db is root) [root]:", "")
    answer(child, "... and group [root]:", "")
    if recipe == "local":
        answer(child, "mode 0700, owned by root)?", "y")
    answer(child, "so the daemon can read it?", "y")
    child.expect_exact("systemd is not running here")
    # Doctor probes the destination: only the local one is reachable from a test.
    answer(child, "Run doctor now", "y" if recipe == "local" else "n")
    if recipe == "local":
        child.expect_exact("0 failures, 0 warnings")
    assert finish(child) == 0

    config = root / "etc/bakelite/bakelite.toml"
    cfg = load_config(config, environ={})
    (database,) = cfg.databases
    assert database.name == "app" and database.path == db
    backend = database.backends[0]
    assert backend.type == ("file" if recipe == "local" else recipe)
    key = root / "etc/bakelite/bakelite.key"
    assert database.encryption is not None and database.encryption.key_file == key
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    table = tomllib.loads(config.read_text())["database"][0]["backends"][0]
    if recipe == "s3":
        assert table == {
            "type": "s3", "bucket": "my-bucket", "prefix": "app", "region": "eu-west-1",
            "endpoint": "http://127.0.0.1:9",
        }  # fmt: skip
    if recipe == "sftp":
        assert table["port"] == 2222 and table["user"] == "bakelite" and table["path"] == "backups/app"
    if recipe == "azure":
        assert table["prefix"] == "apps/app" and table["container"] == "backups"
    env_file = root / "etc/bakelite/bakelite.env"
    if recipe in CREDENTIALS:
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        assert env_file.read_text().endswith(CREDENTIALS[recipe])
    else:
        assert not env_file.exists()


def test_wizard_never_overwrites_without_asking(tmp_path: Path) -> None:
    root = tmp_path / "root"
    db = root / "var/lib/app/app.db"
    make_db(db)
    config = root / "etc/bakelite/bakelite.toml"
    config.parent.mkdir(parents=True)
    config.write_text("# the placeholder a package dropped\n")
    key = root / "etc/bakelite/bakelite.key"
    child = spawn(root)
    answer(child, "[local]:", "")
    answer(child, "Database file to back up:", str(db))
    answer(child, "[app]:", "renamed")
    answer(child, "Backup directory", "")
    answer(child, "Encrypt backups at rest", "n")
    answer(child, "Write the config to", "y")
    answer(child, "exists and differs. Overwrite it? [y/N]:", "")  # the default is no
    answer(child, "Run bakelite as user", "")
    answer(child, "and group", "")
    answer(child, "mode 0700", "n")
    child.expect_exact("systemd is not running here")
    answer(child, "Run doctor now", "n")
    assert finish(child) == 0
    assert config.read_text() == "# the placeholder a package dropped\n"
    assert not key.exists()
    assert not (root / "var/backups/bakelite").exists()


def test_wizard_under_systemd_writes_the_dropin_and_enables(tmp_path: Path) -> None:
    root = tmp_path / "root"
    db = root / "var/lib/app/app.db"
    make_db(db)
    (root / "run/systemd/system").mkdir(parents=True)
    fake = tmp_path / "bin"
    fake.mkdir()
    calls = tmp_path / "calls"
    (fake / "systemctl").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    (fake / "systemctl").chmod(0o755)
    child = spawn(root, "--recipe", "local", path=f"{fake}:{BIN}:{os.environ['PATH']}")
    answer(child, "[local]:", "")
    answer(child, "Database file to back up:", str(db))
    answer(child, "[app]:", "")
    answer(child, "Backup directory", "")
    answer(child, "Encrypt backups at rest", "y")
    answer(child, "Generate a new key", "")
    answer(child, "Write the config to", "")
    answer(child, "Run bakelite as user", "")
    answer(child, "and group", "")
    answer(child, "mode 0700", "")
    answer(child, "so the daemon can read it?", "")
    answer(child, "Install the bakelite units", "")
    child.expect_exact(f"ReadWritePaths={db.parent} {root / 'var/backups/bakelite'}")
    answer(child, "Write this drop-in for all five bakelite services?", "")
    answer(child, "Enable and start the daemon and the check/verify timers now? [y/N]:", "y")
    answer(child, "Run doctor now", "y")
    child.expect_exact("0 failures")
    assert finish(child) == 0
    unit_dir = root / "etc/systemd/system"
    for unit in init.UNIT_FILES:
        assert (unit_dir / unit).is_file()
    for unit in init.SERVICE_UNITS:
        assert "User=root" in (unit_dir / f"{unit}.d" / init.DROPIN_NAME).read_text()
    assert calls.read_text().splitlines() == [
        "daemon-reload",
        "unmask bakelite.service",
        "enable --now " + " ".join(init.ENABLE_UNITS),
    ]
