"""``bakelite reencrypt``: enable, rotate (with skipped steps), decrypt, dry runs, crash safety, the lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from test_encryption import KEY_A, KEY_B, PASSPHRASE, InProcessCli, Site, cli, key_file

from bakelite.config.model import Encryption
from bakelite.crypto import keys
from bakelite.crypto.aead import XChaCha20Poly1305
from bakelite.daemon.lock import DatabaseLock, lock_holder
from bakelite.format.envelope import peek_header
from bakelite.ops.catalog import list_backups, restore_points
from bakelite.ops.reencrypt import reencrypt
from bakelite.replication.cursor import load_cursor
from bakelite.storage.base import Storage
from bakelite.storage.file import FileStorage

KEY_C = bytes(range(200, 232))


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> InProcessCli:
    return InProcessCli(monkeypatch, capsys)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path / "site")
    yield s
    s.close()


def states(site: Site) -> dict[str, str]:
    """Each data object's sealing: ``plaintext`` or the key id."""
    out = {}
    for key in site.data_keys():
        h = peek_header((site.backups / key).read_bytes())
        out[key] = h.key_id if h.encrypted and h.key_id else "plaintext"
    return out


def spans(site: Site) -> list[tuple[str, int, float, float]]:
    """The restore points as ``list`` shows them."""
    storage = site.storage()
    return [
        (s.backup, s.last_seq, s.first_time, s.last_time)
        for s in restore_points(storage, site.name, list_backups(storage, site.name))
    ]


def new_backup(site: Site, cipher: XChaCha20Poly1305 | None, batches: list[int], **kw: object) -> None:
    """A further backup (the cursor is dropped, as after a key change the daemon starts afresh)."""
    cursor = site.root / ".bakelite" / f"{site.name}.cursor"
    cursor.unlink(missing_ok=True)
    enc = None if cipher is None else Encryption(key="unused")
    site.replicate(cipher, batches, enc, **kw)


# -- rotation -------------------------------------------------------------------------------------


def test_rotate_a_b_to_c_with_a_skipped_step_keeps_history(
    site: Site, tmp_path: Path, run: InProcessCli
) -> None:
    a, b, c = XChaCha20Poly1305(KEY_A), XChaCha20Poly1305(KEY_B), XChaCha20Poly1305(KEY_C)
    site.write(10)
    new_backup(site, a, [3, 4])  # an old backup under A
    new_backup(site, b, [2, 5, 1])  # a newer one under B (a rotation that was never finished)
    assert set(states(site).values()) == {a.key_id, b.key_id}
    points = spans(site)
    ka, kb = key_file(tmp_path / "a.txt", KEY_A), key_file(tmp_path / "b.txt", KEY_B)
    kc = key_file(tmp_path / "c.txt", KEY_C)
    cfg = site.config(f'key_file = "{kc}"')

    # Only B given: refused before anything is written, naming the missing key.
    before = site.files()
    r = run("reencrypt", "--db", "app", "--old-key-file", str(kb), "--config", str(cfg))
    assert r.returncode == 3 and a.key_id in r.stderr and "--old-key-file" in r.stderr
    assert site.files() == before

    r = run(
        "reencrypt", "--db", "app", "--old-key-file", str(kb), "--old-key-file", str(ka),
        "--config", str(cfg), "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)["databases"][0]
    assert doc["rewritten"] == len(before) - 1 and doc["skipped"] == 0  # every object but CURRENT
    assert set(states(site).values()) == {c.key_id}
    assert spans(site) == points, "point-in-time history must be unchanged"
    assert site.check_restores(c) == 7
    with pytest.raises(Exception, match="decrypt"):
        site.check_restores(a)
    # Idempotent: a rerun rewrites nothing.
    r = run("reencrypt", "--db", "app", "--old-key-file", str(ka), "--config", str(cfg), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["databases"][0]["rewritten"] == 0


def test_dry_run_counts_the_work_and_touches_nothing(site: Site, tmp_path: Path, run: InProcessCli) -> None:
    site.write(6)
    new_backup(site, XChaCha20Poly1305(KEY_A), [2, 2])
    ka, kc = key_file(tmp_path / "a.txt", KEY_A), key_file(tmp_path / "c.txt", KEY_C)
    cfg = site.config(f'key_file = "{kc}"')
    before = site.files()
    r = run(
        "reencrypt", "--db", "app", "--old-key-file", str(ka), "--dry-run", "--json", "--config", str(cfg)
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)["databases"][0]
    assert doc["dry_run"] and doc["rewritten"] == 3 and doc["objects"] == 3
    assert doc["bytes_rewritten"] == sum(len(v) for k, v in before.items() if k != "app/CURRENT")
    assert doc["destinations"][0]["by_source"] == {f"key {XChaCha20Poly1305(KEY_A).key_id}": 3}
    assert site.files() == before
    r = run("reencrypt", "--db", "app", "--old-key-file", str(ka), "--dry-run", "--config", str(cfg))
    assert "would rewrite 3 object(s)" in r.stdout


# -- enable / decrypt ------------------------------------------------------------------------------


def test_enable_needs_require_encrypted_false_then_encrypts_everything(
    site: Site, tmp_path: Path, run: InProcessCli
) -> None:
    site.write(8)
    new_backup(site, None, [2, 3])
    kf = key_file(tmp_path / "k.txt", KEY_A)
    strict = site.config(f'key_file = "{kf}"')
    before = site.files()
    r = run("reencrypt", "--db", "app", "--config", str(strict))
    assert r.returncode == 3 and "require_encrypted = false" in r.stderr
    assert site.files() == before
    lax = site.config(f'key_file = "{kf}"\nrequire_encrypted = false', path=tmp_path / "lax.toml")
    r = run("reencrypt", "--db", "app", "--config", str(lax))
    assert r.returncode == 0, r.stderr
    assert set(states(site).values()) == {XChaCha20Poly1305(KEY_A).key_id}
    assert site.check_restores(XChaCha20Poly1305(KEY_A), require_encrypted=True) == 3
    # The daemon's cursor now says encrypted, so it resumes instead of taking a new full backup.
    cursor = load_cursor(site.db_path, "app")
    assert cursor is not None and cursor.encrypted


def test_decrypt_back_to_plaintext(site: Site, tmp_path: Path, run: InProcessCli) -> None:
    site.write(8)
    new_backup(site, XChaCha20Poly1305(KEY_A), [2, 3])
    kf = key_file(tmp_path / "k.txt", KEY_A)
    cfg = site.config()
    r = run("reencrypt", "--db", "app", "--old-key-file", str(kf), "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert set(states(site).values()) == {"plaintext"}
    assert site.check_restores(None, require_encrypted=False) == 3
    out = tmp_path / "o.db"
    r = run("restore", "--db", "app", "--output", str(out), "--config", str(cfg))
    assert r.returncode == 0 and site.content(out) == site.content()
    cursor = load_cursor(site.db_path, "app")
    assert cursor is not None and not cursor.encrypted


def test_passphrase_change_and_passphrase_to_key_file(site: Site, tmp_path: Path, run: InProcessCli) -> None:
    site.write(6)
    enc = Encryption(passphrase=PASSPHRASE)
    first = keys.cipher_for(site.database(enc))
    assert first is not None
    new_backup(site, first, [2])  # type: ignore[arg-type]
    old = tmp_path / "old-pass.txt"
    old.write_text(PASSPHRASE + "\n")
    # The new passphrase without the old one: refused as a mistyped passphrase.
    cfg = site.config('passphrase = "a brand new passphrase"')
    r = run("reencrypt", "--db", "app", "--config", str(cfg))
    assert r.returncode == 3 and "does not match" in r.stderr
    r = run("reencrypt", "--db", "app", "--old-passphrase-file", str(old), "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    second = keys.cipher_for(site.database(Encryption(passphrase="a brand new passphrase")))
    assert second is not None and site.check_restores(second) == 2
    # And on to a key file, the passphrase given as the old key.
    new = tmp_path / "new-pass.txt"
    new.write_text("a brand new passphrase\n")
    kf = key_file(tmp_path / "k.txt", KEY_B)
    cfg = site.config(f'key_file = "{kf}"', path=tmp_path / "kf.toml")
    r = run("reencrypt", "--db", "app", "--old-passphrase-file", str(new), "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert site.check_restores(XChaCha20Poly1305(KEY_B)) == 2


# -- crash safety ---------------------------------------------------------------------------------


class Killed(BaseException):
    """Stands for the process dying (not an Exception: nothing may catch and carry on)."""


class DyingStorage:
    """Passes everything to ``inner``; the ``die_at``-th put_stream dies after its first chunk."""

    def __init__(self, inner: Storage, die_at: int) -> None:
        self.inner = inner
        self.die_at = die_at
        self.puts = 0

    def put_stream(self, key: str, chunks: Iterable[bytes], *, cold: bool = False) -> int:
        self.puts += 1
        if self.puts != self.die_at:
            return self.inner.put_stream(key, chunks, cold=cold)

        def dying() -> Iterator[bytes]:
            for i, chunk in enumerate(chunks):
                if i == 1:
                    raise Killed
                yield chunk

        return self.inner.put_stream(key, dying(), cold=cold)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_crash_mid_reencrypt_then_rerun_leaves_a_restorable_replica(site: Site, tmp_path: Path) -> None:
    a, c = XChaCha20Poly1305(KEY_A), XChaCha20Poly1305(KEY_C)
    site.write(10)
    new_backup(site, a, [2, 3, 1, 4, 2])
    total = len(site.data_keys())
    ka, kc = key_file(tmp_path / "a.txt", KEY_A), key_file(tmp_path / "c.txt", KEY_C)
    db = site.database(Encryption(key_file=kc))
    dying = DyingStorage(FileStorage(site.backups), die_at=4)
    with pytest.raises(Killed):
        reencrypt(db, [dying], old_key_files=[ka])  # type: ignore[list-item]
    mixed = states(site)
    assert sorted(mixed.values()).count(c.key_id) == 3 and len(mixed) == total
    assert not any(".tmp~" in p.name for p in site.backups.rglob("*")), "no partial object is visible"
    # A half-rotated replica does not restore under either key alone...
    with pytest.raises(Exception, match="decrypt"):
        site.check_restores(c)
    # ...and the rerun (not holding the crashed run's lock any more) finishes the job.
    report = reencrypt(db, [FileStorage(site.backups)], old_key_files=[ka])
    assert (report.rewritten, report.skipped) == (total - 3, 3)
    assert set(states(site).values()) == {c.key_id}
    assert site.check_restores(c) == 6


def test_sigkill_during_reencrypt_then_rerun(site: Site, tmp_path: Path) -> None:
    a, c = XChaCha20Poly1305(KEY_A), XChaCha20Poly1305(KEY_C)
    site.write(4)
    # Big snapshots (incompressible 12 MiB each) make the run long enough to be killed inside it.
    site.write(8, blob=1536 * 1024)
    new_backup(site, a, [1, 1], compression="zstd")
    new_backup(site, a, [1, 1], compression="zstd", blob=64 * 1024)
    new_backup(site, a, [2], compression="zstd")
    keys_before = site.data_keys()
    inodes = {k: (site.backups / k).stat().st_ino for k in keys_before}
    ka, kc = key_file(tmp_path / "a.txt", KEY_A), key_file(tmp_path / "c.txt", KEY_C)
    cfg = site.config(f'key_file = "{kc}"')
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAKELITE_")}
    env.update(BAKELITE_ENV_FILE=os.devnull, XDG_CONFIG_HOME="/nonexistent/bakelite-test")
    args = ["reencrypt", "--db", "app", "--old-key-file", str(ka), "--config", str(cfg)]
    killed_mid_run = False
    for _attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "bakelite", *args], env=env)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            replaced = [k for k in keys_before if (site.backups / k).stat().st_ino != inodes[k]]
            if replaced:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        code = proc.wait()
        now = states(site)
        rotated = sum(1 for v in now.values() if v == c.key_id)
        if code == -signal.SIGKILL and 0 < rotated < len(keys_before):
            killed_mid_run = True
            print(f"killed after {rotated} of {len(keys_before)} objects")
            break
        if rotated == len(keys_before):
            pytest.fail("reencrypt finished before it could be killed; make the replica bigger")
    assert killed_mid_run
    # The interrupted state: each object wholly old or wholly new, never a torn one.
    assert set(now.values()) <= {a.key_id, c.key_id}
    for k in keys_before:
        peek_header((site.backups / k).read_bytes())
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert set(states(site).values()) == {c.key_id}
    assert site.check_restores(c) == 8


# -- the lock -------------------------------------------------------------------------------------


def test_reencrypt_refuses_while_a_daemon_runs(site: Site, tmp_path: Path, run: InProcessCli) -> None:
    site.write(4)
    new_backup(site, XChaCha20Poly1305(KEY_A), [2])
    ka, kc = key_file(tmp_path / "a.txt", KEY_A), key_file(tmp_path / "c.txt", KEY_C)
    cfg = site.config(f'key_file = "{kc}"')
    before = site.files()
    # A real daemon for the same database (shipping, unencrypted, to a directory of its own).
    daemon_cfg = tmp_path / "daemon.toml"
    daemon_cfg.write_text(
        f'[[database]]\nname = "app"\npath = "{site.db_path}"\n'
        f'[[database.backends]]\ntype = "file"\npath = "{tmp_path / "daemon-backups"}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAKELITE_")}
    env.update(BAKELITE_ENV_FILE=os.devnull, XDG_CONFIG_HOME="/nonexistent/bakelite-test")
    log = tmp_path / "daemon.log"
    with open(log, "wb") as logf:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "bakelite", "daemon", "--config", str(daemon_cfg)],
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 30
        while lock_holder(site.db_path, "app") != daemon.pid:
            assert daemon.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        r = run("reencrypt", "--db", "app", "--old-key-file", str(ka), "--config", str(cfg))
        assert r.returncode == 3, r.stderr
        assert "cannot reencrypt 'app'" in r.stderr and f"pid {daemon.pid}" in r.stderr
        assert "stop it first" in r.stderr
        assert site.files() == before
        # A dry run is allowed, and says who holds the lock.
        r = run(
            "reencrypt", "--db", "app", "--old-key-file", str(ka), "--dry-run", "--json", "--config", str(cfg)
        )
        assert r.returncode == 0 and json.loads(r.stdout)["databases"][0]["daemon_pid"] == daemon.pid
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    r = run("reencrypt", "--db", "app", "--old-key-file", str(ka), "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    # And reencrypt takes that same lock: a daemon cannot start while it runs.
    with DatabaseLock(site.db_path, "app", purpose="reencrypt"):
        r = run("reencrypt", "--db", "app", "--old-key-file", str(ka), "--config", str(cfg))
        assert r.returncode == 3
