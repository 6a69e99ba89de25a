"""The Python API: typed reports, the error tree, configs built in code, and the embedded Replicator."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import bakelite
from bakelite import Config, Database, FileBackend, Replicator
from bakelite.cli.render import to_jsonable
from bakelite.config.load import parse_config
from bakelite.errors import (
    BakeliteError,
    ConfigError,
    LockHeldError,
    NoReplicaError,
    OutputExistsError,
    UsageError,
)
from bakelite.ops.doctor import DoctorReport
from bakelite.ops.listing import DatabaseListing, FleetReport
from bakelite.ops.restore import RestoreReport
from bakelite.ops.status import StatusReport
from bakelite.ops.verify import VerifyReport

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import workload
from harness import Deployment

ROOT = Path(__file__).resolve().parents[2]


def make_db(path: Path) -> sqlite3.Connection:
    """The app's own connection to a WAL database holding the marked workload's schema."""
    con = sqlite3.connect(path, isolation_level=None, timeout=10, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(workload.SCHEMA)
    return con


def write(con: sqlite3.Connection, first: int, count: int, rng: random.Random) -> str:
    """``count`` marked commits from seq ``first``, in this process; the digest after the last."""
    digest = workload.RunningDigest(con)
    for k in range(first, first + count):
        con.execute("BEGIN")
        workload.one_commit(con, k, rng, 7, digest)
        con.execute("COMMIT")
        digest.commit()
    return workload.content_digest(con)


def restored_state(path: Path) -> tuple[list[int], str]:
    """Markers and content digest of a restored file, after integrity_check."""
    con = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return workload.markers(con), workload.content_digest(con)
    finally:
        con.close()


def config_for(tmp_path: Path, *names: str) -> Config:
    backend = FileBackend(path=tmp_path / "backups")
    return Config(
        databases=[
            Database(
                name=n, path=tmp_path / f"{n}.db", backends=[backend], debounce=0.05, max_batch_delay=0.2
            )
            for n in names or ("app",)
        ]
    )


# -- configs built in code --------------------------------------------------------------------------


def test_config_in_code_accepts_lists_and_validates_like_toml(tmp_path: Path) -> None:
    """Lists become tuples; a bad value raises the same ConfigError, at the same key path, as TOML."""
    cfg = bakelite.validate_config(config_for(tmp_path))
    assert isinstance(cfg.databases, tuple) and isinstance(cfg.databases[0].backends, tuple)

    bad = Config(
        databases=[
            Database(
                name="app",
                path=tmp_path / "app.db",
                backends=[FileBackend(path=tmp_path / "b")],
                max_batch_delay=0.0,
            )
        ]
    )
    with pytest.raises(ConfigError) as in_code:
        bakelite.validate_config(bad)
    toml = {
        "database": [
            {
                "name": "app",
                "path": str(tmp_path / "app.db"),
                "max_batch_delay": "0s",
                "backends": [{"type": "file", "path": str(tmp_path / "b")}],
            }
        ]
    }
    with pytest.raises(ConfigError) as from_toml:
        parse_config(toml, environ={})
    assert "database[app].max_batch_delay" in in_code.value.message
    assert in_code.value.message == from_toml.value.message

    # Every operation validates: a bad config never reaches a backend.
    with pytest.raises(ConfigError, match=r"database\[app\]\.max_batch_delay"):
        bakelite.restore(bad, output=tmp_path / "out.db")
    with pytest.raises(ConfigError, match="backends"):
        bakelite.status(Database(name="app", path=tmp_path / "app.db"))


def test_load_config_reads_toml(tmp_path: Path) -> None:
    """load_config is the CLI's loader: strict keys with the path named."""
    path = tmp_path / "bakelite.toml"
    path.write_text(f'[[database]]\nname = "app"\npath = "{tmp_path}/app.db"\ndebounse = "1s"\n')
    with pytest.raises(ConfigError, match="debounce"):
        bakelite.load_config(path)
    path.write_text(
        '[[database]]\nname = "app"\npath = "app.db"\n[[database.backends]]\ntype = "file"\npath = "b"\n'
    )
    cfg = bakelite.load_config(path, environ={})
    assert cfg.databases[0].path == tmp_path / "app.db"


# -- operations -------------------------------------------------------------------------------------


def test_every_function_returns_its_report_and_prints_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Reports are the CLI's dataclasses; nothing reaches stdout or stderr."""
    cfg = config_for(tmp_path)
    con = make_db(tmp_path / "app.db")
    with Replicator(cfg) as rep:
        write(con, 1, 20, random.Random(1))
        rep.sync()
        assert isinstance(bakelite.status(cfg, max_lag="10m"), StatusReport)
    con.close()

    assert isinstance(bakelite.restore(cfg, output=tmp_path / "r.db"), RestoreReport)
    skipped = bakelite.restore(cfg, if_db_not_exists=True)
    assert isinstance(skipped, RestoreReport) and skipped.skipped
    assert isinstance(bakelite.list_restore_points(cfg, verbose=True), DatabaseListing)
    assert isinstance(bakelite.list_databases(cfg), FleetReport)
    report = bakelite.verify(cfg, deep=True, database="app")
    assert isinstance(report, VerifyReport) and report.clean
    st = bakelite.status(cfg, check=True)
    assert isinstance(st, StatusReport) and st.databases[0].state == "stopped"
    doc = bakelite.doctor(cfg)
    assert isinstance(doc, DoctorReport) and doc.exit_code == 0, doc
    bad_doc = bakelite.doctor(Config(databases=[Database(name="app", path=tmp_path / "app.db")]))
    assert bad_doc.exit_code == 1 and bad_doc.general[0].level == "FAIL"
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_errors_are_the_bakelite_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Failures raise BakeliteError subclasses (never SystemExit) and print nothing."""
    cfg = config_for(tmp_path, "app", "other")
    with pytest.raises(NoReplicaError):
        bakelite.restore(cfg, database="app", output=tmp_path / "x.db")
    with pytest.raises(UsageError, match="database=NAME"):
        bakelite.restore(cfg)
    with pytest.raises(ConfigError, match="no database named"):
        bakelite.list_restore_points(cfg, database="nope")
    (tmp_path / "exists.db").write_bytes(b"")
    with pytest.raises(OutputExistsError):
        bakelite.restore(cfg, database="app", output=tmp_path / "exists.db")
    with pytest.raises(UsageError):
        bakelite.restore(cfg, database="app", output=tmp_path / "y.db", timestamp="last tuesday-ish")
    with pytest.raises(BakeliteError):
        bakelite.status(cfg, max_lag="ten minutes")
    from bakelite.ops.compact import CompactReport
    from bakelite.ops.repair import RepairReport
    from bakelite.ops.usage import UsageReport

    assert isinstance(bakelite.usage(cfg, database="app"), UsageReport)
    assert isinstance(bakelite.compact(cfg, database="app"), CompactReport)
    assert isinstance(bakelite.repair(cfg, database="app"), RepairReport)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


# -- the embedded replicator ------------------------------------------------------------------------


def test_replicator_sync_then_close_restores_exactly(tmp_path: Path) -> None:
    """Writes in this process; sync() makes them restorable; close() ships the rest."""
    cfg = config_for(tmp_path)
    con = make_db(tmp_path / "app.db")
    rng = random.Random(7)
    rep = Replicator(cfg)
    with rep:
        assert rep.running
        digest = write(con, 1, 150, rng)
        rep.sync(timeout=60)
        markers, got = restored_state(bakelite.restore(cfg, output=tmp_path / "synced.db").output)
        assert markers == list(range(1, 151)) and got == digest
        final = write(con, 151, 80, rng)
        assert [r.database for r in rep.status()] == ["app"]
    assert not rep.running
    markers, got = restored_state(bakelite.restore(cfg, output=tmp_path / "closed.db").output)
    assert markers == list(range(1, 231)) and got == final
    con.close()
    with pytest.raises(UsageError):
        rep.sync()
    with pytest.raises(UsageError):
        rep.start()


def test_replicator_resumes_and_drives_several_databases(tmp_path: Path) -> None:
    """A second run resumes from the cursor; several databases share one replicator."""
    cfg = config_for(tmp_path, "a", "b")
    cons = {n: make_db(tmp_path / f"{n}.db") for n in ("a", "b")}
    digests = {}
    for round_ in range(2):
        with Replicator(cfg) as rep:
            for i, (name, con) in enumerate(cons.items()):
                digests[name] = write(con, round_ * 30 + 1, 30, random.Random(i + round_))
            rep.sync()
    for name in cons:
        report = bakelite.restore(cfg, database=name, output=tmp_path / f"{name}.r")
        markers, got = restored_state(report.output)
        assert markers == list(range(1, 61)) and got == digests[name]
        cons[name].close()
    only_b = Replicator(cfg, databases="b")
    assert [d.name for d in only_b.databases] == ["b"]


def test_a_second_replicator_is_refused(tmp_path: Path) -> None:
    """Two replicators never drive one database; the first keeps working."""
    cfg = config_for(tmp_path)
    con = make_db(tmp_path / "app.db")
    with Replicator(cfg) as first:
        second = Replicator(cfg)
        with pytest.raises(LockHeldError):
            second.start()
        assert not second.running
        digest = write(con, 1, 10, random.Random(3))
        first.sync()
    _markers, got = restored_state(bakelite.restore(cfg, output=tmp_path / "r.db").output)
    assert got == digest
    # Released on close: a new one starts.
    with Replicator(cfg):
        pass
    con.close()


def test_daemon_and_replicator_exclude_each_other(tmp_path: Path) -> None:
    """A running daemon refuses the replicator, and a running replicator refuses the daemon."""
    dep = Deployment(tmp_path)
    dep.init_db()
    cfg = bakelite.load_config(dep.config, environ={})
    dep.start_daemon()
    try:
        dep.wait_replicating()
        assert dep.daemon is not None
        with pytest.raises(LockHeldError) as refused:
            Replicator(cfg).start()
        assert f"held by pid {dep.daemon.pid}" in (refused.value.detail or "")
    finally:
        assert dep.stop_daemon() == 0
    with Replicator(cfg):
        done = subprocess.run(
            [sys.executable, "-m", "bakelite", "daemon", "--config", str(dep.config)],
            capture_output=True,
            text=True,
            env=dep.env(),
            timeout=60,
            check=False,
        )
        assert done.returncode == 3, done.stderr
        assert "locked" in done.stderr


def test_api_and_cli_agree_on_the_same_replica(tmp_path: Path) -> None:
    """list --json is the API's listing; both restores hold the same content."""
    dep = Deployment(tmp_path)
    con = make_db(dep.db)
    cfg = bakelite.load_config(dep.config, environ={})
    with Replicator(cfg) as rep:
        digest = write(con, 1, 40, random.Random(11))
        rep.sync()
    con.close()
    cli = dep.bakelite("list", "--db", "app", "--json", check=True)
    assert json.loads(cli.stdout) == to_jsonable(bakelite.list_restore_points(cfg, database="app"))
    dep.restore(tmp_path / "cli.db").check_returncode()
    api = bakelite.restore(cfg, database="app", output=tmp_path / "api.db")
    assert restored_state(tmp_path / "cli.db") == restored_state(api.output)
    assert restored_state(api.output)[1] == digest
    cli_verify = json.loads(dep.bakelite("verify", "--json", "--db", "app").stdout)
    api_verify = to_jsonable(bakelite.verify(cfg, database="app"))
    for report in (cli_verify, api_verify):
        for db in report["databases"]:
            db.pop("elapsed_seconds", None)
            db.pop("marker", None)
            db.pop("verified_at", None)
    assert cli_verify["clean"] == api_verify["clean"] is True
    assert cli_verify["databases"] == api_verify["databases"]


def test_the_api_type_checks_under_mypy_strict(tmp_path: Path) -> None:
    """A consumer using the documented calls passes mypy --strict against the shipped hints."""
    snippet = tmp_path / "consumer.py"
    snippet.write_text(
        textwrap.dedent(
            """
            from pathlib import Path

            import bakelite
            from bakelite.errors import LockHeldError
            from bakelite.ops.restore import RestoreReport


            def boot(db: Path) -> RestoreReport:
                backend = bakelite.FileBackend(path=db.parent / "backups")
                config = bakelite.Config(
                    databases=(bakelite.Database(name="app", path=db, backends=(backend,)),)
                )
                report = bakelite.restore(config, if_db_not_exists=True, if_replica_exists=True)
                try:
                    with bakelite.Replicator(config, start_timeout=30.0) as replicator:
                        replicator.sync(timeout=10)
                except LockHeldError as e:
                    print(e.one_line())
                listing = bakelite.list_restore_points(config)
                print(len(listing.backups), bakelite.verify(config).clean, bakelite.status(config).healthy)
                return report
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(snippet)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
