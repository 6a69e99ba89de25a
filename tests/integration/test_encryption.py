"""At-rest encryption end to end: a live database replicated in-process by ``DatabaseReplicator``
with ``cipher_for(db)``, restored by the real CLI (subprocess) or the restore op.

Also the helpers the reencrypt tests share (``test_encryption_reencrypt.py`` imports them).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import crc32c
import pytest

from bakelite.config.model import Database, Encryption, FileBackend
from bakelite.crypto import keys
from bakelite.crypto.aead import XChaCha20Poly1305
from bakelite.errors import ChainBrokenError, CorruptionError, EncryptionError
from bakelite.format import layout
from bakelite.format.envelope import FrameCipher, decode_object, encode_object, peek_header
from bakelite.ops.catalog import list_backups
from bakelite.ops.restore import restore, restore_to_path
from bakelite.replication.shipper import DatabaseReplicator
from bakelite.storage.file import FileStorage

MARK = "PLAINTEXT-MARKER"
PASSPHRASE = "correct horse battery staple 42"


# -- helpers (shared with test_encryption_reencrypt.py) ------------------------------------------


@dataclasses.dataclass
class Site:
    """One database, its replica directory, and the states it had when each sync shipped."""

    root: Path
    name: str = "app"

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / f"{self.name}.db"
        self.backups = self.root / "backups"
        self.con = sqlite3.connect(self.db_path, isolation_level=None)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, note TEXT, blob BLOB)")
        self.rows = 0
        # (backup id, seq) -> the rows at that commit
        self.states: dict[tuple[str, int], list[tuple[object, ...]]] = {}

    def database(self, enc: Encryption | None, **kw: object) -> Database:
        """The config model of this database (no compression by default, so markers stay visible)."""
        kw.setdefault("compression", "none")
        return Database(
            name=self.name,
            path=self.db_path,
            backends=(FileBackend(path=self.backups),),
            encryption=enc,
            **kw,  # type: ignore[arg-type]
        )

    def storage(self) -> FileStorage:
        """The replica directory as a storage."""
        return FileStorage(self.backups)

    def write(self, n: int, blob: int = 0) -> None:
        """``n`` commits, each adding one marked row (and an optional random blob)."""
        for _ in range(n):
            self.rows += 1
            self.con.execute(
                "INSERT INTO t(note, blob) VALUES (?, ?)",
                (f"{MARK}-{self.rows}-" + "secret" * 10, os.urandom(blob) if blob else None),
            )

    def content(self, path: Path | None = None) -> list[tuple[object, ...]]:
        """Every row, in order."""
        con = sqlite3.connect(path or self.db_path)
        try:
            return list(con.execute("SELECT * FROM t ORDER BY id"))
        finally:
            con.close()

    def replicate(
        self,
        cipher: FrameCipher | None,
        batches: list[int],
        enc: Encryption | None = None,
        *,
        blob: int = 0,
        new_backup: bool = False,
        **kw: object,
    ) -> DatabaseReplicator:
        """Start a replicator, ship one change-set per batch, stop; record each shipped state."""
        rep = DatabaseReplicator(self.database(enc, **kw), [self.storage()], cipher=cipher)
        rep.start()
        if new_backup:
            rep.snapshot()
        self._record(rep)
        for n in batches:
            self.write(n, blob)
            rep.sync()
            self._record(rep)
        rep.stop()
        return rep

    def _record(self, rep: DatabaseReplicator) -> None:
        assert rep.cursor is not None
        self.states[(rep.cursor.backup, rep.cursor.seq)] = self.content()

    def files(self) -> dict[str, bytes]:
        """Every stored object, by key."""
        return {
            str(p.relative_to(self.backups)): p.read_bytes() for p in self.backups.rglob("*") if p.is_file()
        }

    def data_keys(self) -> list[str]:
        """Keys of every snapshot and change-set."""
        return [k for k in self.files() if layout.parse_key(self.name, k) is not None]

    def config(self, encryption_toml: str = "", path: Path | None = None, extra: str = "") -> Path:
        """Write a TOML config for this site; returns its path."""
        cfg = path or self.root / "bakelite.toml"
        text = (
            f'[[database]]\nname = "{self.name}"\npath = "{self.db_path}"\ncompression = "none"\n{extra}'
            f'[[database.backends]]\ntype = "file"\npath = "{self.backups}"\n'
        )
        if encryption_toml:
            text += f"[database.encryption]\n{encryption_toml}\n"
        cfg.write_text(text)
        return cfg

    def check_restores(self, cipher: FrameCipher | None, require_encrypted: bool = True) -> int:
        """Restore every recorded state in-process; assert each is exact; returns how many."""
        storage = self.storage()
        by_backup = {b.backup: b for b in list_backups(storage, self.name)}
        for i, ((backup, seq), rows) in enumerate(sorted(self.states.items())):
            out = self.root / f"check-{os.getpid()}-{i}.db"
            restore_to_path(
                storage,
                self.name,
                backup,
                seq,
                out,
                cipher=cipher,
                require_encrypted=require_encrypted,
                listing=by_backup[backup],
            )
            assert self.content(out) == rows, f"backup {backup} seq {seq} restored wrong"
            out.unlink()
        return len(self.states)

    def close(self) -> None:
        """Close the app connection."""
        self.con.close()


def key_file(path: Path, key: bytes) -> Path:
    """Write a key file (mode 0600)."""
    keys.write_key_file(path, keys.format_key(key))
    return path


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m bakelite`` in a subprocess with no host env files and no inherited key variables."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("BAKELITE_")}
    base.update(BAKELITE_ENV_FILE=os.devnull, XDG_CONFIG_HOME="/nonexistent/bakelite-test")
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bakelite", *args],
        capture_output=True,
        text=True,
        env=base,
        timeout=timeout,
    )


@dataclasses.dataclass
class Result:
    """What an in-process CLI run returned and printed."""

    returncode: int
    stdout: str
    stderr: str


class InProcessCli:
    """``bakelite.cli.main.main`` in this process (fast), with a clean environment and logging per run."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        self.monkeypatch = monkeypatch
        self.capsys = capsys

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Result:
        from bakelite.cli.main import main

        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        self.capsys.readouterr()
        with self.monkeypatch.context() as m:
            for name in list(os.environ):
                if name.startswith("BAKELITE_"):
                    m.delenv(name)
            m.setenv("BAKELITE_ENV_FILE", os.devnull)
            m.setenv("XDG_CONFIG_HOME", "/nonexistent/bakelite-test")
            for name, value in (env or {}).items():
                m.setenv(name, value)
            try:
                code = main(list(args))
            finally:
                for h in list(root.handlers):
                    if h not in handlers:
                        root.removeHandler(h)
                root.setLevel(level)
        out = self.capsys.readouterr()
        return Result(code, out.out, out.err)


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> InProcessCli:
    return InProcessCli(monkeypatch, capsys)


def rewrite_header(data: bytes, **changes: object) -> bytes:
    """An object with its cleartext header JSON edited and every CRC fixed (what an attacker can do)."""
    magic, version, hlen = struct.unpack_from(">4sHI", data)
    hdict = json.loads(data[10 : 10 + hlen])
    hdict.update(changes)
    hbytes = json.dumps(hdict, sort_keys=True, separators=(",", ":")).encode()
    body = struct.pack(">4sHI", magic, version, len(hbytes)) + hbytes + data[10 + hlen : -4]
    return body + struct.pack(">I", crc32c.crc32c(body))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path / "site")
    yield s
    s.close()


KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))


# -- confidentiality ------------------------------------------------------------------------------


def test_no_plaintext_marker_appears_in_any_stored_byte(tmp_path: Path) -> None:
    # Control first: without encryption (and without compression) the markers are plainly there.
    plain = Site(tmp_path / "plain")
    plain.write(5)
    plain.replicate(None, [3, 4])
    assert any(MARK.encode() in data for data in plain.files().values())
    plain.close()

    enc_site = Site(tmp_path / "enc")
    enc_site.write(5)
    kf = key_file(tmp_path / "k", KEY_A)
    db = enc_site.database(Encryption(key_file=kf))
    enc_site.replicate(keys.cipher_for(db), [3, 4, 1], Encryption(key_file=kf))
    files = enc_site.files()
    assert len(enc_site.data_keys()) >= 4
    for key, data in files.items():
        assert MARK.encode() not in data and b"secret" * 3 not in data, key
        assert keys.format_key(KEY_A).encode() not in data
    assert enc_site.check_restores(keys.cipher_for(db)) == 4
    enc_site.close()


# -- restore --------------------------------------------------------------------------------------


def test_cli_restore_with_right_key_is_exact_and_wrong_key_fails_naming_decryption(
    site: Site, tmp_path: Path, run: InProcessCli
) -> None:
    kf = key_file(tmp_path / "key.txt", KEY_A)
    enc = Encryption(key_file=kf)
    site.write(20)
    site.replicate(keys.cipher_for(site.database(enc)), [5, 7, 2], enc)
    expected = site.content()

    cfg = site.config(f'key_file = "{kf}"')
    out = tmp_path / "restored.db"
    r = run("restore", "--db", "app", "--output", str(out), "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert site.content(out) == expected and "integrity_check: ok" in r.stdout

    wrong = key_file(tmp_path / "wrong.txt", KEY_B)
    cfg_wrong = site.config(f'key_file = "{wrong}"', path=tmp_path / "wrong.toml")
    r = run("restore", "--db", "app", "--output", str(tmp_path / "x.db"), "--config", str(cfg_wrong))
    assert r.returncode == 3, r.stderr
    assert "decrypt" in r.stderr and "another key" in r.stderr
    assert keys.format_key(KEY_B)[16:] not in r.stderr + r.stdout
    assert not (tmp_path / "x.db").exists()

    # The --if-* guards make a restore a no-op before any key is needed (restore on every boot).
    cfg_gone = site.config(f'key_file = "{tmp_path / "not-mounted-yet.txt"}"', path=tmp_path / "gone.toml")
    r = run("restore", "--db", "app", "--output", str(out), "--if-db-not-exists", "--config", str(cfg_gone))
    assert r.returncode == 0, r.stderr
    r = run("restore", "--db", "app", "--output", str(tmp_path / "z.db"), "--config", str(cfg_gone))
    assert r.returncode == 3 and "not found" in r.stderr

    cfg_none = site.config(path=tmp_path / "none.toml")
    r = run("restore", "--db", "app", "--output", str(tmp_path / "y.db"), "--config", str(cfg_none))
    assert r.returncode == 3 and "no encryption key is configured" in r.stderr


def _encrypted_site(site: Site, tmp_path: Path) -> tuple[XChaCha20Poly1305, list[str]]:
    cipher = XChaCha20Poly1305(KEY_A)
    site.write(10)
    site.replicate(cipher, [3, 4, 5, 6], Encryption(key=keys.format_key(KEY_A)))
    changesets = sorted(k for k in site.data_keys() if not k.endswith("snapshot"))
    assert len(changesets) == 4
    return cipher, changesets


def test_swapped_objects_are_rejected(site: Site, tmp_path: Path) -> None:
    cipher, cs = _encrypted_site(site, tmp_path)
    a, b = site.backups / cs[1], site.backups / cs[2]
    da, db_ = a.read_bytes(), b.read_bytes()
    a.write_bytes(db_)
    b.write_bytes(da)
    with pytest.raises(ChainBrokenError):
        restore(site.database(Encryption(key="x")), site.storage(), output=tmp_path / "o.db", cipher=cipher)
    assert not (tmp_path / "o.db").exists()


def test_object_moved_to_another_position_with_a_forged_header_fails_decryption(
    site: Site, tmp_path: Path
) -> None:
    cipher, cs = _encrypted_site(site, tmp_path)
    # Put change-set #3 in #2's place, with #2's identity written into its cleartext header, and the
    # lineage field made to match: only the AEAD binding can notice.
    target = site.backups / cs[1]
    wanted = peek_header(target.read_bytes())
    moved = rewrite_header(
        (site.backups / cs[2]).read_bytes(),
        first=wanted.first,
        last=wanted.last,
        prev=wanted.prev,
        meta=dict(wanted.meta),
        created=wanted.created,
    )
    target.write_bytes(moved)
    with pytest.raises(CorruptionError, match="fails decryption"):
        restore(site.database(Encryption(key="x")), site.storage(), output=tmp_path / "o.db", cipher=cipher)


def test_object_moved_to_another_database_fails_decryption(tmp_path: Path) -> None:
    cipher = XChaCha20Poly1305(KEY_A)
    enc = Encryption(key=keys.format_key(KEY_A))
    app, other = Site(tmp_path / "a", "app"), Site(tmp_path / "a", "other")
    for s in (app, other):
        s.write(8)
        s.replicate(cipher, [2], enc)
    # other's snapshot replaced by app's, with other's identity forged into the header.
    other_snap = next(k for k in other.data_keys() if k.startswith("other/") and k.endswith("snapshot"))
    app_snap = next(k for k in app.data_keys() if k.startswith("app/") and k.endswith("snapshot"))
    theirs = peek_header((other.backups / other_snap).read_bytes())
    forged = rewrite_header(
        (app.backups / app_snap).read_bytes(),
        db="other",
        backup=theirs.backup,
        created=theirs.created,
        meta=dict(theirs.meta),
    )
    (other.backups / other_snap).write_bytes(forged)
    with pytest.raises(CorruptionError, match="fails decryption"):
        restore(other.database(enc), other.storage(), output=tmp_path / "o.db", cipher=cipher)
    # Untouched, app still restores.
    assert app.check_restores(cipher) == 2
    app.close()
    other.close()


def test_plaintext_substitute_is_refused_under_require_encrypted(site: Site, tmp_path: Path) -> None:
    cipher, cs = _encrypted_site(site, tmp_path)
    path = site.backups / cs[0]
    header, frames, _ = decode_object(path.read_bytes(), cipher=cipher)
    plain, _ = encode_object(dataclasses.replace(header, encrypted=False, key_id=None), frames)
    path.write_bytes(plain)
    strict = site.database(Encryption(key="x", require_encrypted=True))
    with pytest.raises(EncryptionError, match="not encrypted"):
        restore(strict, site.storage(), output=tmp_path / "o.db", cipher=cipher)
    assert not (tmp_path / "o.db").exists()
    # During a migration window (require_encrypted = false) a plaintext object passes through.
    lax = site.database(Encryption(key="x", require_encrypted=False))
    restore(lax, site.storage(), output=tmp_path / "lax.db", cipher=cipher)
    assert site.content(tmp_path / "lax.db") == site.content()


# -- passphrases ----------------------------------------------------------------------------------


def test_passphrase_round_trip_on_a_second_host(site: Site, tmp_path: Path) -> None:
    enc = Encryption(passphrase=PASSPHRASE)
    site.write(12)
    site.replicate(keys.cipher_for(site.database(enc)), [4, 4], enc)
    params = json.loads((site.backups / "app" / "KEYPARAMS").read_bytes())
    assert params["memory_kib"] == keys.ARGON2_MEMORY_KIB and PASSPHRASE not in json.dumps(params)
    expected = site.content()

    # A recovery host: a fresh directory, only the passphrase (in a file) and the replica.
    host = tmp_path / "host-b"
    host.mkdir()
    (host / "pass.txt").write_text(f"# recovery\n\n{PASSPHRASE}\n")
    (host / "pass.txt").chmod(0o600)
    cfg = host / "bakelite.toml"
    cfg.write_text(
        f'[[database]]\nname = "app"\npath = "{host / "app.db"}"\n'
        f'[[database.backends]]\ntype = "file"\npath = "{site.backups}"\n'
        f'[database.encryption]\npassphrase_file = "{host / "pass.txt"}"\n'
    )
    r = cli("restore", "--db", "app", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert site.content(host / "app.db") == expected

    (host / "pass.txt").write_text("correct horse battery staple 43\n")
    r = cli("restore", "--db", "app", "--output", str(host / "again.db"), "--config", str(cfg))
    assert r.returncode == 3 and "does not match" in r.stderr
    assert "staple 43" not in r.stderr + r.stdout


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Site]]:
    """A key-encrypted and a passphrase-encrypted replica, built once."""
    root = tmp_path_factory.mktemp("env")
    by_key = Site(root / "key")
    by_key.write(6)
    enc = Encryption(key=keys.format_key(KEY_A))
    by_key.replicate(keys.cipher_for(by_key.database(enc)), [3], enc)
    by_pass = Site(root / "pass")
    by_pass.write(6)
    penc = Encryption(passphrase=PASSPHRASE)
    by_pass.replicate(keys.cipher_for(by_pass.database(penc)), [3], penc)
    yield {"key": by_key, "pass": by_pass}
    by_key.close()
    by_pass.close()


@pytest.mark.parametrize(
    "variable", ["BAKELITE_KEY", "BAKELITE_KEY_FILE", "BAKELITE_PASSPHRASE", "BAKELITE_PASSPHRASE_FILE"]
)
def test_each_env_override_replaces_the_config_key(
    replicas: dict[str, Site], tmp_path: Path, variable: str, run: InProcessCli
) -> None:
    site = replicas["pass" if "PASSPHRASE" in variable else "key"]
    value = {
        "BAKELITE_KEY": keys.format_key(KEY_A),
        "BAKELITE_KEY_FILE": str(key_file(tmp_path / "k.txt", KEY_A)),
        "BAKELITE_PASSPHRASE": PASSPHRASE,
        "BAKELITE_PASSPHRASE_FILE": str(tmp_path / "p.txt"),
    }[variable]
    (tmp_path / "p.txt").write_text(PASSPHRASE + "\n")
    (tmp_path / "p.txt").chmod(0o600)
    # The config names a wrong key: the variable must win over it.
    wrong = key_file(tmp_path / "wrong.txt", KEY_B)
    cfg = site.config(f'key_file = "{wrong}"', path=tmp_path / "c.toml")
    out = tmp_path / "o.db"
    r = run("restore", "--db", "app", "--output", str(out), "--config", str(cfg))
    assert r.returncode == 3 and "decrypt" in r.stderr, "the config's wrong key must fail on its own"
    r = run("restore", "--db", "app", "--output", str(out), "--config", str(cfg), env={variable: value})
    assert r.returncode == 0, r.stderr
    assert site.content(out) == site.content()
    # Also with no [encryption] block at all.
    out.unlink()
    plain_cfg = site.config(path=tmp_path / "plain.toml")
    r = run("restore", "--db", "app", "--output", str(out), "--config", str(plain_cfg), env={variable: value})
    assert r.returncode == 0, r.stderr
    secret = value if variable in ("BAKELITE_KEY", "BAKELITE_PASSPHRASE") else None
    if secret:
        assert secret not in r.stdout + r.stderr


# -- toggling -------------------------------------------------------------------------------------


def test_disabling_warns_and_starts_a_plaintext_backup_leaving_history_untouched(
    site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cipher = XChaCha20Poly1305(KEY_A)
    site.write(5)
    site.replicate(cipher, [2, 2], Encryption(key=keys.format_key(KEY_A)))
    before = site.files()
    with caplog.at_level(logging.WARNING, "bakelite"):
        site.replicate(None, [3])
    assert any("encryption was turned on or off" in r.getMessage() for r in caplog.records)
    after = site.files()
    assert all(after[k] == v for k, v in before.items() if k != "app/CURRENT"), "history rewritten"
    backups = list_backups(site.storage(), "app")
    assert len(backups) == 2
    # The newest backup is plaintext and restores with no key; the old one needs the key.
    newest = site.database(None)
    restore(newest, site.storage(), output=tmp_path / "latest.db")
    assert site.content(tmp_path / "latest.db") == site.content()
    with pytest.raises(EncryptionError, match="no encryption key"):
        restore_to_path(site.storage(), "app", backups[0].backup, None, tmp_path / "old.db")
    restore_to_path(site.storage(), "app", backups[0].backup, None, tmp_path / "old.db", cipher=cipher)


def test_enabling_over_plaintext_history_needs_require_encrypted_false(site: Site, tmp_path: Path) -> None:
    site.write(5)
    site.replicate(None, [2])
    cipher = XChaCha20Poly1305(KEY_A)
    lax = Encryption(key=keys.format_key(KEY_A), require_encrypted=False)
    site.replicate(cipher, [3], lax)
    assert len(list_backups(site.storage(), "app")) == 2
    # Mixed replica: with require_encrypted = false both generations restore.
    assert site.check_restores(cipher, require_encrypted=False) == 4
    with pytest.raises(EncryptionError, match="not encrypted"):
        site.check_restores(cipher, require_encrypted=True)


# -- secrets stay secret ---------------------------------------------------------------------------


def test_secrets_never_appear_in_logs_json_or_errors(site: Site, tmp_path: Path, run: InProcessCli) -> None:
    enc = Encryption(passphrase=PASSPHRASE)
    site.write(4)
    site.replicate(keys.cipher_for(site.database(enc)), [2], enc)
    cfg = site.config(path=tmp_path / "c.toml")
    env = {"BAKELITE_PASSPHRASE": PASSPHRASE}
    outputs = []
    for args in (
        ["restore", "--db", "app", "--output", str(tmp_path / "o.db"), "--json"],
        ["reencrypt", "--db", "app", "--dry-run", "--json"],
        ["list", "--db", "app", "--json"],
    ):
        r = run(*args, "--config", str(cfg), "--log-level", "debug", env=env)
        assert r.returncode == 0, r.stderr
        outputs.append(r.stdout + r.stderr)
    r = run(
        "restore",
        "--db",
        "app",
        "--output",
        str(tmp_path / "p.db"),
        "--config",
        str(cfg),
        "--json",
        env={"BAKELITE_PASSPHRASE": "not " + PASSPHRASE},
    )
    assert r.returncode == 3
    outputs.append(r.stdout + r.stderr)
    r = run(
        "restore",
        "--db",
        "app",
        "--output",
        str(tmp_path / "q.db"),
        "--config",
        str(cfg),
        "--json",
        env={"BAKELITE_KEY": keys.format_key(KEY_A)[:-3] + "AAA"},
    )
    assert r.returncode == 3 and ("mistyped" in r.stderr or "checksum" in r.stderr), r.stderr
    outputs.append(r.stdout + r.stderr)
    for text in outputs:
        assert PASSPHRASE not in text and "battery staple" not in text
        assert keys.format_key(KEY_A)[16:40] not in text


# -- keygen ---------------------------------------------------------------------------------------


def test_keygen_writes_0600_refuses_to_overwrite_and_prints_to_stdout(
    tmp_path: Path, run: InProcessCli
) -> None:
    out = tmp_path / "key.txt"
    r = run("keygen", "--output", str(out))
    assert r.returncode == 0, r.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    key = keys.read_key_file(out)
    assert XChaCha20Poly1305(key).key_id in r.stdout and keys.format_key(key) not in r.stdout
    first = out.read_bytes()
    r = run("keygen", "--output", str(out))
    assert r.returncode == 2 and "already exists" in r.stderr
    assert out.read_bytes() == first
    r = run("keygen")
    assert r.returncode == 0 and keys.parse_key(r.stdout) != key
    r = run("keygen", "--json")
    doc = json.loads(r.stdout)
    assert (
        keys.parse_key(doc["key"]) and doc["key_id"] == XChaCha20Poly1305(keys.parse_key(doc["key"])).key_id
    )
    r = run("keygen", "--output", str(tmp_path / "missing" / "k.txt"))
    assert r.returncode == 2 and "does not exist" in r.stderr
