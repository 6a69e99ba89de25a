"""Restore from S3: moto's standalone S3 server on loopback, as the test suite starts it.

bakelite (``type = "s3"`` backend) and Litestream (``type: s3`` replica with ``endpoint`` and
``force-path-style``) each take the initial snapshot of the database to their own bucket; the
baseline is ``sqlite3 .backup`` + ``zstd -3`` uploaded as one object.  Then each restore is timed:
``bakelite restore``, ``litestream restore s3://bucket/path?endpoint=...&force-path-style=true`` and
the baseline's ``GET | zstd -d`` (this module's ``get`` command streams the object to stdout).

moto keeps the objects in memory and serves them from one Python process, so the absolute figures
say more about moto than about S3; the ratios, measured in the same run, are the point.

The host's ``AWS_CA_BUNDLE`` is unset for every process that talks to moto (plain http on loopback):
Litestream 0.5.17 refuses to start with it set ("unable to add custom RootCAs HTTPClient").

usage: python bench/s3bench.py get ENDPOINT BUCKET KEY > file
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _util import (
    PY,
    Proc,
    Table,
    bakelite_config,
    cursor_path,
    fresh_dir,
    litestream_bin,
    read_cursor_seq,
    timed,
    wait_for,
)

NAME = "app"
MiB = 1024 * 1024
REGION = "us-east-1"
# moto accepts any keys; these are not credentials of anything.
KEY_ID = "bench-key-id"
SECRET = "bench-secret-key"
MISSING = (
    "moto[server] is not installed in the bench venv: `rm .venv-bench/.installed && make bench` "
    "(the Makefile's bench install line adds it)"
)


@dataclass
class MotoServer:
    """A running moto server and a boto3 client for set-up and inspection."""

    endpoint: str
    proc: subprocess.Popen[bytes]
    log: Path

    def env(self) -> dict[str, str | None]:
        """What every process talking to it gets (and loses: the host's CA bundle)."""
        return {
            "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CA_BUNDLE": None,
        }

    def client(self) -> Any:
        return s3_client(self.endpoint)

    def new_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def reset(self) -> None:
        """Drop every bucket and object (moto's reset API), to free its memory."""
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=60):
            pass

    def bytes_in(self, bucket: str, prefix: str = "") -> int:
        total = 0
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            total += sum(int(o["Size"]) for o in page.get("Contents", []))
        return total

    def has_suffix(self, bucket: str, prefix: str, suffix: str) -> bool:
        resp = self.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
        return any(o["Key"].endswith(suffix) for o in resp.get("Contents", []))


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_server(root: Path) -> Iterator[MotoServer]:
    """moto's standalone S3 server on a free loopback port; stopped by its PID on exit."""
    try:
        import moto.server  # noqa: F401
    except ImportError as e:
        raise RuntimeError(MISSING) from e
    root.mkdir(parents=True, exist_ok=True)
    log = root / "moto.log"
    port = _free_port()
    cmd = [PY, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with open(log, "wb") as lf:
        proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto exited early ({proc.returncode}): {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/moto-api/", timeout=1):
                    break
            except urllib.error.HTTPError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"moto did not answer on {url}") from None
                time.sleep(0.05)
        yield MotoServer(url, proc, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def bakelite_s3_config(root: Path, db: Path, server: MotoServer, bucket: str) -> Path:
    backend = (
        f'[[backends]]\ntype = "s3"\nbucket = "{bucket}"\nprefix = "bench"\n'
        f'endpoint = "{server.endpoint}"\nregion = "{REGION}"\n\n'
    )
    return bakelite_config(root, db, NAME, root / "unused", backend=backend)


def litestream_s3_config(root: Path, db: Path, server: MotoServer, bucket: str) -> Path:
    cfg = root / "litestream.yml"
    cfg.write_text(
        f"dbs:\n  - path: {db}\n    replica:\n      type: s3\n      bucket: {bucket}\n"
        f"      path: {NAME}\n      endpoint: {server.endpoint}\n      region: {REGION}\n"
        f"      force-path-style: true\n"
    )
    return cfg


def litestream_s3_url(server: MotoServer, bucket: str) -> str:
    return f"s3://{bucket}/{NAME}?endpoint={server.endpoint}&force-path-style=true"


def _copy_db(src: Path, dst: Path) -> None:
    for suffix in ("-wal", "-shm"):
        Path(f"{dst}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(src, dst)


def _table_counts(db: Path) -> dict[str, int]:
    """Row counts of every table: a cheap check that a restore brought back the right database.

    Litestream's own bookkeeping tables (``_litestream_seq``, ``_litestream_lock``, which it creates in
    the replicated database) are left out."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        names = [
            r[0]
            for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not r[0].startswith("_litestream")
        ]
        return {n: int(con.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0]) for n in names}
    finally:
        con.close()


def s3_restore_table(
    work: Path, server: MotoServer, src: Path, label: str, runs: int, with_litestream: bool
) -> Table:
    """Snapshot ``src`` to S3 with each contender, then time restores of the latest state from it."""
    t = Table(
        f"restore latest from S3 (moto on loopback), {label} database",
        [("seconds", "s"), ("peak RSS", "MiB"), ("replica", "MiB")],
        baseline="GET + zstd -d",
    )
    env = server.env()
    notes: list[str] = []
    # Baseline: .backup + zstd -3, uploaded as one object.
    root = fresh_dir(work / "s3-baseline")
    db = root / "app.db"
    _copy_db(src, db)
    backup, packed = root / "app.backup", root / "app.backup.zst"
    timed(["sqlite3", str(db), f".backup '{backup}'"])
    timed(["zstd", "-3", "-q", "-f", str(backup), "-o", str(packed)])
    bucket_base = server.new_bucket("bench-baseline")
    t0 = time.perf_counter()
    server.client().upload_file(str(packed), bucket_base, "app.backup.zst")
    notes.append(f"upload of the baseline's .backup.zst (boto3): {time.perf_counter() - t0:.2f} s")
    t.add("GET + zstd -d", "replica", packed.stat().st_size / MiB)
    backup.unlink()
    packed.unlink()
    # bakelite: the daemon until the snapshot is durable (its cursor exists), then stopped.
    root = fresh_dir(work / "s3-bakelite")
    db = root / "app.db"
    _copy_db(src, db)
    bucket_bk = server.new_bucket("bench-bakelite")
    cfg = bakelite_s3_config(root, db, server, bucket_bk)
    cur = cursor_path(db, NAME)
    daemon = Proc([PY, "-m", "bakelite", "daemon", "--config", str(cfg)], root / "daemon.log", env)
    try:
        secs = wait_for(lambda: read_cursor_seq(cur) == 0, daemon, 1800)
    finally:
        daemon.stop()
    notes.append(f"bakelite's initial snapshot to S3: {secs:.2f} s")
    t.add("bakelite", "replica", server.bytes_in(bucket_bk) / MiB)
    # Litestream: replicate until its first LTX file is in the bucket.
    exe = litestream_bin()
    ls_url = ""
    if with_litestream and exe is not None:
        root = fresh_dir(work / "s3-litestream")
        db = root / "app.db"
        _copy_db(src, db)
        bucket_ls = server.new_bucket("bench-litestream")
        lcfg = litestream_s3_config(root, db, server, bucket_ls)
        proc = Proc([exe, "replicate", "-config", str(lcfg)], root / "litestream.log", env)
        try:
            secs = wait_for(lambda: server.has_suffix(bucket_ls, f"{NAME}/", ".ltx"), proc, 1800, step=0.05)
        finally:
            proc.stop()
        notes.append(f"Litestream's initial snapshot to S3: {secs:.2f} s")
        t.add("litestream", "replica", server.bytes_in(bucket_ls) / MiB)
        ls_url = litestream_s3_url(server, bucket_ls)

    out_dir = fresh_dir(work / "s3-restored")
    out = out_dir / "out.db"
    cmds: dict[str, list[str]] = {
        "GET + zstd -d": [
            "sh",
            "-c",
            f'"{PY}" "{Path(__file__).resolve()}" get {server.endpoint} {bucket_base} app.backup.zst'
            f' | zstd -d -q -f -o "{out}"',
        ],
        "bakelite": [
            PY,
            "-m",
            "bakelite",
            "restore",
            "--db",
            NAME,
            "--output",
            str(out),
            "--config",
            str(cfg),
        ],
    }
    if ls_url:
        cmds["litestream"] = [exe or "litestream", "restore", "-o", str(out), ls_url]
    want = _table_counts(src)
    for i in range(runs):
        for row, cmd in cmds.items():
            for p in out_dir.glob("out.db*"):
                p.unlink()
            r = timed(cmd, env_extra=env)
            t.add(row, "seconds", r.seconds)
            t.add(row, "peak RSS", r.rss_mib)
            if i == 0:
                got = _table_counts(out)
                if got != want:
                    raise RuntimeError(f"{row}: restored row counts {got} differ from the source's {want}")
    for p in out_dir.glob("out.db*"):
        p.unlink()
    t.notes += notes
    t.notes.append(
        "moto keeps objects in memory and serves them from one Python process (werkzeug): absolute times "
        "are moto's as much as the tools'. Every restore's row counts were checked against the source "
        "(first run). bakelite's restore includes fsync and PRAGMA integrity_check; Litestream's and the "
        "baseline's do neither. 'replica' is the bytes stored in the bucket."
    )
    return t


def get(endpoint: str, bucket: str, key: str) -> int:
    """Stream one object to stdout."""
    body = s3_client(endpoint).get_object(Bucket=bucket, Key=key)["Body"]
    out = sys.stdout.buffer
    for chunk in iter(lambda: body.read(1 << 20), b""):
        out.write(chunk)
    out.flush()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "get":
        os.environ.pop("AWS_CA_BUNDLE", None)
        sys.exit(get(*sys.argv[2:]))
    print(__doc__, file=sys.stderr)
    sys.exit(2)
