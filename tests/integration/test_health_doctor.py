"""``bakelite doctor``: one line per check, FAIL with a fix for each misconfiguration, exit 1 on any."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from bakelite.cli.main import main
from bakelite.format import layout
from bakelite.storage.file import FileStorage
from replica_builder import ReplicaBuilder, Workload

T0 = 1_780_000_000.0


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No host env files or variables; logging and os.environ restored afterwards."""
    saved = dict(os.environ)
    monkeypatch.setattr("bakelite.config.env.SYSTEM_ENV_FILE", tmp_path / "absent.env")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    for name in ("BAKELITE_CONFIG", "BAKELITE_LOG", "BAKELITE_ENV_FILE", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    handlers = list(logging.getLogger().handlers)
    yield
    os.environ.clear()
    os.environ.update(saved)
    for h in list(logging.getLogger().handlers):
        if h not in handlers:
            logging.getLogger().removeHandler(h)


def make_db(path: Path, wal: bool = True) -> Path:
    con = sqlite3.connect(path)
    if wal:
        con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t(x)")
    con.commit()
    con.close()
    return path


def config(root: Path, *, db: Path | None = None, backups: Path | None = None, extra: str = "") -> Path:
    path = root / "bakelite.toml"
    path.write_text(
        f'[[database]]\nname = "app"\npath = "{db or root / "app.db"}"\n{extra}'
        f'  [[database.backends]]\n  type = "file"\n  path = "{backups or root / "backups"}"\n'
    )
    return path


def doctor(cfg: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, str]]:
    """Exit code and, per check name, its line (the last one when a name repeats)."""
    code = main(["doctor", "--config", str(cfg), *args])
    out = capsys.readouterr().out
    lines = {}
    for line in out.splitlines():
        parts = line.split(maxsplit=2)
        if line.startswith("  ") and parts[0] in ("ok", "warn", "FAIL"):
            lines[parts[1]] = line.strip()
    lines["_all"] = out
    return code, lines


def test_healthy_setup_redacts_secrets_and_leaves_no_probe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_db(tmp_path / "app.db")
    env = tmp_path / "bakelite.env"
    env.write_text("AWS_SECRET_ACCESS_KEY=hunter2\nBAKELITE_LOG=warning\n")
    os.environ["BAKELITE_ENV_FILE"] = str(env)
    code, lines = doctor(config(tmp_path), capsys)
    out = lines["_all"]
    assert code == 0, out
    assert all(line.split()[0] == "ok" for name, line in lines.items() if name != "_all"), out
    assert lines["database"].endswith("SQLite, WAL mode, 4096-byte pages")
    assert "write/read/delete probe ok" in lines["backend[0]"]
    assert "no replica yet" in lines["format[0]"]
    assert f"{env} (BAKELITE_ENV_FILE): loaded, 2 variable(s) applied" in out
    assert f"AWS_SECRET_ACCESS_KEY=<redacted> (from {env})" in out
    assert "hunter2" not in out
    assert "BAKELITE_LOG=warning" in out
    assert out.rstrip().endswith("0 failures, 0 warnings")
    assert not [p for p in (tmp_path / "backups").rglob("*") if p.is_file()]
    assert not list(tmp_path.glob(".bakelite*"))


def test_missing_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = doctor(config(tmp_path), capsys)
    assert code == 1
    assert lines["database"] == (
        f"FAIL  database    {tmp_path / 'app.db'} does not exist; "
        "fix: check `path` in the config, or create the database"
    )


def test_unwritable_backup_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_db(tmp_path / "app.db")
    (tmp_path / "file").write_text("a regular file where a directory should be\n")
    code, lines = doctor(config(tmp_path, backups=tmp_path / "file" / "backups"), capsys)
    assert code == 1
    line = lines["backend[0]"]
    assert line.startswith(
        f"FAIL  backend[0]  file://{tmp_path}/file/backups: write probe failed: not a directory"
    )
    assert "fix: a component of" in line


def test_replica_of_a_newer_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_db(tmp_path / "app.db")
    storage = FileStorage(tmp_path / "backups")
    rb = ReplicaBuilder(storage, "app")
    work = Workload(tmp_path / "src.db")
    rb.new_backup(work.run("CREATE TABLE x(y)"), T0)
    rb.commit(work.run("INSERT INTO x VALUES (1)"), T0 + 1)
    key = rb.flush()
    work.close()
    assert key is not None
    code, lines = doctor(config(tmp_path), capsys)
    assert code == 0 and "replica format 1 (this build reads up to 1), 1 backup(s)" in lines["format[0]"]
    # The newest object, as a future bakelite would write it.
    path = tmp_path / "backups" / key
    data = bytearray(path.read_bytes())
    data[4:6] = struct.pack(">H", 2)
    path.write_bytes(bytes(data))
    code, lines = doctor(config(tmp_path), capsys)
    assert code == 1
    line = lines["format[0]"]
    assert line.startswith("FAIL  format[0]")
    assert f"{key} was written by replica format 2; this build reads format 1" in line
    assert "fix: upgrade bakelite" in line


def test_encrypted_replica_without_a_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_db(tmp_path / "app.db")
    backup = layout.new_backup_id(T0)
    header = {
        "kind": "snapshot", "db": "app", "backup": backup, "level": 0, "first": 0, "last": 0,
        "page_size": 4096, "codec": "zstd", "encrypted": True, "created": T0, "prev": None, "link": None,
        "meta": {"db_pages": 1, "commit_time": T0},
    }  # fmt: skip
    raw = json.dumps(header).encode()
    FileStorage(tmp_path / "backups").put(
        layout.snapshot_key("app", backup), b"BKLT" + struct.pack(">HI", 1, len(raw)) + raw
    )
    code, lines = doctor(config(tmp_path), capsys)
    assert code == 1
    assert "the replica is encrypted but no encryption key is configured" in lines["format[0]"]


def test_rollback_journal_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = make_db(tmp_path / "app.db", wal=False)
    code, lines = doctor(config(tmp_path), capsys)
    assert code == 1
    assert "rollback-journal mode; bakelite needs WAL" in lines["database"]
    assert f"fix: sqlite3 {db} 'PRAGMA journal_mode=WAL'" in lines["database"]
    code, lines = doctor(config(tmp_path, extra="auto_wal = true\n"), capsys)
    assert code == 0  # a warning alone does not fail
    assert lines["database"].startswith("warn") and "will switch it to WAL" in lines["database"]
    assert lines["_all"].rstrip().endswith("0 failures, 1 warning")


def test_not_a_database_and_state_dir_in_the_way(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "app.db").write_text("hello")
    (tmp_path / ".bakelite").write_text("a file where the state directory goes")
    code, lines = doctor(config(tmp_path), capsys)
    assert code == 1
    assert "is not a SQLite database" in lines["database"]
    assert lines["state"].startswith(
        f"FAIL  state dir   {tmp_path / '.bakelite'} exists and is not a directory"
    )


def test_invalid_config_is_a_failed_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bakelite.toml"
    cfg.write_text('[[database]]\nname = "app"\npath = "x.db"\nsafety_pol = "1s"\n')
    code, lines = doctor(cfg, capsys)
    assert code == 1
    assert lines["config"].startswith("FAIL  config") and "safety_pol" in lines["config"]


def test_json_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_db(tmp_path / "app.db")
    assert main(["doctor", "--json", "--config", str(config(tmp_path))]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["failures"], doc["exit_code"]) == (0, 0)
    (db,) = doc["databases"]
    names = [c["name"] for c in db["checks"]]
    assert names == ["database", "state dir", "backend[0]", "format[0]", "encryption"]
    assert {c["level"] for c in db["checks"]} == {"ok"}


def test_wrong_key_fails_and_right_key_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bakelite.config.model import Database, Encryption, FileBackend
    from bakelite.crypto.keys import cipher_for
    from bakelite.replication.shipper import DatabaseReplicator

    db_path = make_db(tmp_path / "app.db")
    right, wrong = tmp_path / "right.txt", tmp_path / "wrong.txt"
    for key in (right, wrong):
        assert main(["keygen", "--output", str(key)]) == 0
    capsys.readouterr()
    db = Database(
        name="app",
        path=db_path,
        backends=(FileBackend(path=tmp_path / "backups"),),
        encryption=Encryption(key_file=right),
    )
    rep = DatabaseReplicator(db, [FileStorage(tmp_path / "backups")], cipher=cipher_for(db))
    rep.start()
    rep.stop()
    ok_code, ok_lines = doctor(
        config(tmp_path, extra=f'  [database.encryption]\n  key_file = "{right}"\n'), capsys
    )
    assert ok_lines["encryption"].startswith("ok"), ok_lines["_all"]
    code, lines = doctor(config(tmp_path, extra=f'  [database.encryption]\n  key_file = "{wrong}"\n'), capsys)
    assert code == 1
    assert lines["encryption"].startswith("FAIL"), lines["_all"]
    assert "key" in lines["encryption"].lower()
    assert ok_code == 0 or "FAIL" not in ok_lines["encryption"]
