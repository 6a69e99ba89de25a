"""End to end through every object-store backend: a real daemon replicates, the CLI restores.

The servers are real (tests/servers.py): moto for S3, fake-gcs-server, Azurite, OpenSSH sshd.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import Deployment, grade
from servers import (
    AzureServer,
    GCSServer,
    S3Server,
    SSHServer,
    azure_server,
    gcs_server,
    s3_server,
    sftp_server,
)

__all__ = ["azure_server", "gcs_server", "s3_server", "sftp_server"]  # fixtures, used by name


def _s3(request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    server: S3Server = request.getfixturevalue("s3_server")
    return server.backend_toml(server.new_bucket(), extra="checksum = true\n"), server.env()


def _gcs(request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    server: GCSServer = request.getfixturevalue("gcs_server")
    return server.backend_toml(server.new_bucket()), {}


def _azure(request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    server: AzureServer = request.getfixturevalue("azure_server")
    return server.backend_toml(server.new_container()), server.env()


def _sftp(request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    server: SSHServer = request.getfixturevalue("sftp_server")
    return server.backend_toml(server.new_dir()), {}


BACKENDS: dict[str, Callable[[pytest.FixtureRequest], tuple[str, dict[str, str]]]] = {
    "s3": _s3,
    "gcs": _gcs,
    "azure": _azure,
    "sftp": _sftp,
}


@pytest.fixture(params=sorted(BACKENDS))
def dep(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    toml, env = BACKENDS[request.param](request)
    d = Deployment(tmp_path / "site", backend_toml=toml, extra_env=env)
    d.init_db()
    yield d
    d.cleanup()


def test_replicate_restore_verify(dep: Deployment, tmp_path: Path) -> None:
    dep.start_daemon()
    dep.wait_replicating()
    dep.run_writer("--commits", "100", "--blob-every", "5", "--seed", "9")
    assert dep.stop_daemon() == 0, dep.daemon_log.read_text()

    listed = dep.bakelite("list", "--db", dep.name)
    assert listed.returncode == 0, listed.stderr

    out = tmp_path / "restored.db"
    r = dep.restore(out)
    assert r.returncode == 0, r.stderr + dep.daemon_log.read_text()
    log = dep.commits()
    verdict = grade(out, log)
    assert verdict.seq == log[-1].seq == 100  # exact after a clean stop
    assert "integrity_check: ok" in r.stdout and "lineage verified" in r.stdout


# -- S3 under duress ---------------------------------------------------------------------------


def _fill(db: Path, mib: int) -> None:
    """Grow the database with incompressible rows, so its snapshot is a multipart upload."""
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE IF NOT EXISTS filler(id INTEGER PRIMARY KEY, b BLOB)")
    with con:
        con.executemany(
            "INSERT INTO filler(b) VALUES (randomblob(?))", [(64 * 1024,) for _ in range(mib * 16)]
        )
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def test_s3_server_stopped_mid_snapshot_then_restarted(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.new_bucket()
    # Short timeouts and no SDK-level retries, so the outage surfaces to bakelite's own retries.
    toml = s3_server.backend_toml(bucket, extra='request_timeout = "2s"\nmax_retries = 0\n')
    dep = Deployment(tmp_path / "site", backend_toml=toml, extra_env=s3_server.env())
    try:
        dep.init_db()
        _fill(dep.db, 64)
        boto = s3_server.client()
        dep.start_daemon()
        deadline = time.monotonic() + 60
        while not boto.list_multipart_uploads(Bucket=bucket).get("Uploads"):
            assert time.monotonic() < deadline, dep.daemon_log.read_text()
            assert dep.daemon is not None and dep.daemon.poll() is None, dep.daemon_log.read_text()
            time.sleep(0.01)
        with s3_server.paused():  # mid-snapshot: parts are in flight
            time.sleep(4)
        dep.wait_replicating(timeout=120)
        dep.run_writer("--commits", "30", "--seed", "4")
        assert dep.stop_daemon() == 0, dep.daemon_log.read_text()

        # Whatever the outage left behind, reclaim clears it.
        r = dep.bakelite("reclaim", "--db", dep.name, "--min-age", "0s")
        assert r.returncode == 0, r.stderr
        assert boto.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []

        out = tmp_path / "restored.db"
        r = dep.restore(out)
        assert r.returncode == 0, r.stderr
        log = dep.commits()
        assert grade(out, log).seq == log[-1].seq
    finally:
        dep.cleanup()


def test_s3_object_lock_bucket_replicates_and_restores(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.new_bucket(lock_days=1)
    toml = s3_server.backend_toml(bucket, extra="checksum = true\nexpect_object_lock = true\n")
    dep = Deployment(
        tmp_path / "site",
        backend_toml=toml,
        extra_env=s3_server.env(),
        extra_config='retention = "0s"\ncompaction_levels = []\n',
    )
    try:
        dep.init_db()
        _fill(dep.db, 12)  # a multipart snapshot into the locked bucket, with its checksum headers
        dep.start_daemon()
        dep.wait_replicating(timeout=60)
        dep.run_writer("--commits", "40", "--seed", "5")
        assert dep.stop_daemon() == 0, dep.daemon_log.read_text()
        out = tmp_path / "restored.db"
        r = dep.restore(out)
        assert r.returncode == 0, r.stderr
        assert grade(out, dep.commits()).seq == 40
    finally:
        dep.cleanup()


def test_s3_missing_bucket_fails_at_once_naming_the_bucket(s3_server: S3Server, tmp_path: Path) -> None:
    toml = s3_server.backend_toml("no-such-bucket-here", prefix="p")
    dep = Deployment(tmp_path / "site", backend_toml=toml, extra_env=s3_server.env())
    start = time.monotonic()
    r = dep.restore(tmp_path / "x.db")
    assert time.monotonic() - start < 30
    assert r.returncode == 3, r.stderr
    assert "s3://no-such-bucket-here/p" in r.stderr and "does not exist" in r.stderr
    assert s3_server.env()["AWS_SECRET_ACCESS_KEY"] not in r.stderr + r.stdout


def test_s3_without_credentials_fails_fast(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "BAKELITE_AWS_USE_DEFAULT_CREDENTIAL_CHAIN"):
        monkeypatch.delenv(name, raising=False)
    dep = Deployment(tmp_path / "site", backend_toml=s3_server.backend_toml(s3_server.new_bucket()))
    start = time.monotonic()
    r = dep.restore(tmp_path / "x.db")
    assert time.monotonic() - start < 15  # no instance-metadata timeouts
    assert r.returncode == 2
    assert "no S3 credentials found" in r.stderr
