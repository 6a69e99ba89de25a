"""bakelite.config: TOML loading, inheritance, env key overrides and every validation rule."""

from __future__ import annotations

import dataclasses
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest

from bakelite.config import (
    AzureBackend,
    Config,
    DaemonSettings,
    Database,
    Encryption,
    FileBackend,
    GCSBackend,
    S3Backend,
    SFTPBackend,
    Tunables,
    apply_env_overrides,
    load_config,
    parse_config,
    validate,
)
from bakelite.config.load import DATABASE_KEYS, DEFAULTS_KEYS, TOP_LEVEL_KEYS
from bakelite.config.validate import (
    BACKEND_CLASSES,
    DAEMON_SPECS,
    ENCRYPTION_SPECS,
    TUNABLE_SPECS,
    field_specs,
)
from bakelite.errors import EXIT_USAGE, ConfigError

MIB = 1024 * 1024

MINIMAL = """
[[database]]
name = "app"
path = "/var/lib/app/app.db"
  [[database.backends]]
  type = "file"
  path = "/var/backups/bakelite"
"""


def parse(text: str, *, source: Path | None = None, environ: dict[str, str] | None = None) -> Config:
    """Parse TOML text the way load_config does, with an empty environment unless given."""
    return parse_config(tomllib.loads(textwrap.dedent(text)), source=source, environ=environ or {})


def rejected(text: str, *, environ: dict[str, str] | None = None) -> str:
    """The rendered one-line error for an invalid config (and check it is a usage error)."""
    with pytest.raises(ConfigError) as info:
        parse(text, environ=environ)
    assert info.value.exit_code == EXIT_USAGE == 2
    return info.value.one_line()


def with_db(extra: str = "", backend: str = 'type = "file"\npath = "/b"', tables: str = "") -> str:
    """A one-database config with ``extra`` keys in the database table and one backend."""
    return (
        f'[[database]]\nname = "app"\npath = "/data/app.db"\n{extra}\n'
        f"[[database.backends]]\n{backend}\n{tables}\n"
    )


# -- the happy path -------------------------------------------------------------------------------


def test_minimal_config_gets_every_default() -> None:
    config = parse(MINIMAL)
    (db,) = config.databases
    assert db.name == "app"
    assert db.path == Path("/var/lib/app/app.db")
    assert db.backends == (FileBackend(path=Path("/var/backups/bakelite")),)
    assert db.encryption is None
    defaults = Tunables()
    for name in TUNABLE_SPECS:
        assert getattr(db, name) == getattr(defaults, name), name
    assert config.daemon == DaemonSettings()


EVERY_KEY = """
[defaults]
debounce = "100ms"
max_batch_delay = "2s"
safety_poll = "45s"
busy_timeout = "3s"
max_wal_size = "32MiB"
manifest_flush = "20s"
snapshot_interval = "12h"
retention = "7d"
compaction_levels = ["1m", "10m", "2h"]
compaction_keep_recent = 8
max_segments_per_snapshot = 500
max_total_size = "5GiB"
max_backups = 30
multipart_sweep_interval = "2h"
multipart_min_age = "90m"
mirror_interval = "2m"
compression = "lz4"
validate_on_restore = false
on_incomplete_destination = "refuse"
auto_wal = true

[defaults.encryption]
key_file = "/etc/bakelite/key.txt"
require_encrypted = false

[[backends]]
type = "sftp"
mode = "sync"
host = "backup.example.com"
port = 2222
user = "bakelite"
path = "/srv/backups"
identity_file = "/etc/bakelite/id_ed25519"
passphrase_env = "SFTP_KEY_PASS"
password_env = "SFTP_PASSWORD"
password = "hunter2"
known_hosts = "/etc/bakelite/known_hosts"
insecure_skip_host_key_check = true
connect_timeout = "10s"
request_timeout = "1m"

[[database]]
name = "inherits"
path = "/data/inherits.db"

[[database]]
name = "overrides"
path = "/data/overrides.db"
debounce = "1s"
max_batch_delay = "5s"
safety_poll = "15s"
busy_timeout = "10s"
max_wal_size = 1048576
manifest_flush = "1m"
snapshot_interval = "1d"
retention = "0s"
compaction_levels = []
compaction_keep_recent = 0
max_segments_per_snapshot = 0
max_total_size = "100MB"
max_backups = 0
multipart_sweep_interval = "0s"
multipart_min_age = "1h"
mirror_interval = "30s"
compression = "none"
validate_on_restore = true
on_incomplete_destination = "warn"
auto_wal = false

  [database.encryption]
  passphrase = "correct horse battery staple"

  [[database.backends]]
  type = "file"
  mode = "sync"
  path = "/srv/replicas"

  [[database.backends]]
  type = "s3"
  mode = "async"
  bucket = "offsite"
  prefix = "bakelite/critical"
  endpoint = "https://s3.example.com"
  region = "auto"
  force_path_style = false
  request_timeout = "30s"
  max_retries = 10
  checksum = true
  sse = "aws:kms"
  sse_kms_key_id = "arn:aws:kms:us-east-1:1:key/abc"
  storage_class = "GLACIER_IR"
  expect_object_lock = true

  [[database.backends]]
  type = "gcs"
  mode = "async"
  bucket = "gcs-bucket"
  prefix = "p"
  service_account_path = "/etc/bakelite/gcs.json"
  request_timeout = "20s"
  max_retries = 3
  storage_class = "ARCHIVE"
  endpoint = "http://127.0.0.1:4443"

  [[database.backends]]
  type = "azure"
  mode = "async"
  account = "acct"
  container = "backups"
  prefix = "pre"
  request_timeout = "15s"
  max_retries = 4
  storage_class = "Cold"
  endpoint = "http://127.0.0.1:10000/acct"

[[database]]
name = "passfile"
path = "/data/passfile.db"
  [database.encryption]
  passphrase_file = "/etc/bakelite/pass.txt"

[daemon]
max_concurrent_snapshots = 4
snapshot_workers = 2
metrics_addr = "127.0.0.1:9090"
"""


def _every_key_tables() -> dict[str, set[str]]:
    """The keys EVERY_KEY sets, per table kind, to prove the round-trip test covers the schema."""
    data = tomllib.loads(EVERY_KEY)
    seen: dict[str, set[str]] = {
        "top": set(data),
        "defaults": set(data["defaults"]),
        "daemon": set(data["daemon"]),
    }
    seen["encryption"] = set(data["defaults"]["encryption"])
    for db in data["database"]:
        seen.setdefault("database", set()).update(db)
        seen["encryption"].update(db.get("encryption", {}))
        for b in [*db.get("backends", []), *data["backends"]]:
            seen.setdefault(b["type"], set()).update(b)
    return seen


def test_every_key_round_trip_covers_the_whole_schema() -> None:
    seen = _every_key_tables()
    assert seen["top"] == set(TOP_LEVEL_KEYS)
    assert seen["defaults"] == set(DEFAULTS_KEYS)
    assert seen["database"] == set(DATABASE_KEYS)
    assert seen["daemon"] == set(DAEMON_SPECS)
    assert seen["encryption"] == set(ENCRYPTION_SPECS)
    for name, cls in BACKEND_CLASSES.items():
        assert seen[name] == {"type", *field_specs(cls)}, name


def test_every_key_round_trips() -> None:
    config = parse(EVERY_KEY)
    inherits, overrides, passfile = config.databases

    sftp = SFTPBackend(
        mode="sync",
        host="backup.example.com",
        port=2222,
        user="bakelite",
        path="/srv/backups",
        identity_file=Path("/etc/bakelite/id_ed25519"),
        passphrase_env="SFTP_KEY_PASS",
        password_env="SFTP_PASSWORD",
        password="hunter2",
        known_hosts=Path("/etc/bakelite/known_hosts"),
        insecure_skip_host_key_check=True,
        connect_timeout=10.0,
        request_timeout=60.0,
    )
    assert inherits.backends == (sftp,)
    assert inherits.encryption == Encryption(key_file=Path("/etc/bakelite/key.txt"), require_encrypted=False)
    assert dataclasses.asdict(
        Tunables(**{n: getattr(inherits, n) for n in TUNABLE_SPECS})
    ) == dataclasses.asdict(
        Tunables(
            debounce=0.1,
            max_batch_delay=2.0,
            safety_poll=45.0,
            busy_timeout=3.0,
            max_wal_size=32 * MIB,
            manifest_flush=20.0,
            snapshot_interval=12 * 3600.0,
            retention=7 * 86400.0,
            compaction_levels=(60.0, 600.0, 7200.0),
            compaction_keep_recent=8,
            max_segments_per_snapshot=500,
            max_total_size=5 * 1024**3,
            max_backups=30,
            multipart_sweep_interval=7200.0,
            multipart_min_age=5400.0,
            mirror_interval=120.0,
            compression="lz4",
            validate_on_restore=False,
            on_incomplete_destination="refuse",
            auto_wal=True,
        )
    )

    expected_overrides = {
        "debounce": 1.0,
        "max_batch_delay": 5.0,
        "safety_poll": 15.0,
        "busy_timeout": 10.0,
        "max_wal_size": MIB,
        "manifest_flush": 60.0,
        "snapshot_interval": 86400.0,
        "retention": 0.0,
        "compaction_levels": (),
        "compaction_keep_recent": 0,
        "max_segments_per_snapshot": 0,
        "max_total_size": 100_000_000,
        "max_backups": 0,
        "multipart_sweep_interval": 0.0,
        "multipart_min_age": 3600.0,
        "mirror_interval": 30.0,
        "compression": "none",
        "validate_on_restore": True,
        "on_incomplete_destination": "warn",
        "auto_wal": False,
    }
    assert set(expected_overrides) == set(TUNABLE_SPECS)
    for name, value in expected_overrides.items():
        assert getattr(overrides, name) == value, name
    assert overrides.encryption == Encryption(passphrase="correct horse battery staple")
    assert overrides.backends == (
        FileBackend(path=Path("/srv/replicas")),
        S3Backend(
            mode="async",
            bucket="offsite",
            prefix="bakelite/critical",
            endpoint="https://s3.example.com",
            region="auto",
            force_path_style=False,
            request_timeout=30.0,
            max_retries=10,
            checksum=True,
            sse="aws:kms",
            sse_kms_key_id="arn:aws:kms:us-east-1:1:key/abc",
            storage_class="GLACIER_IR",
            expect_object_lock=True,
        ),
        GCSBackend(
            mode="async",
            bucket="gcs-bucket",
            prefix="p",
            service_account_path=Path("/etc/bakelite/gcs.json"),
            request_timeout=20.0,
            max_retries=3,
            storage_class="ARCHIVE",
            endpoint="http://127.0.0.1:4443",
        ),
        AzureBackend(
            mode="async",
            account="acct",
            container="backups",
            prefix="pre",
            request_timeout=15.0,
            max_retries=4,
            storage_class="Cold",
            endpoint="http://127.0.0.1:10000/acct",
        ),
    )
    assert overrides.sync_backends == (FileBackend(path=Path("/srv/replicas")),)
    assert len(overrides.async_backends) == 3
    assert passfile.encryption == Encryption(passphrase_file=Path("/etc/bakelite/pass.txt"))
    assert passfile.backends == (sftp,)
    assert config.daemon == DaemonSettings(
        max_concurrent_snapshots=4, snapshot_workers=2, metrics_addr="127.0.0.1:9090"
    )


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "bakelite.toml"
    path.write_text(EVERY_KEY)
    config = load_config(path, environ={})
    assert config.source == path
    assert [db.name for db in config.databases] == ["inherits", "overrides", "passfile"]
    assert load_config(str(path), environ={}) == config


def test_sizes_accept_integers_and_both_unit_families() -> None:
    config = parse(with_db('max_wal_size = "512kB"\nmax_total_size = "2GiB"'))
    assert config.databases[0].max_wal_size == 512_000
    assert config.databases[0].max_total_size == 2 * 1024**3
    assert parse(with_db("max_wal_size = 4096")).databases[0].max_wal_size == 4096


# -- inheritance ----------------------------------------------------------------------------------


def test_database_inherits_defaults_and_overrides_per_key() -> None:
    config = parse(
        """
        [defaults]
        safety_poll = "10s"
        compression = "lz4"
        [[backends]]
        type = "file"
        path = "/b"
        [[database]]
        name = "a"
        path = "/a.db"
        [[database]]
        name = "b"
        path = "/b.db"
        safety_poll = "15s"
        """
    )
    a, b = config.databases
    assert (a.safety_poll, a.compression) == (10.0, "lz4")
    assert (b.safety_poll, b.compression) == (15.0, "lz4")
    assert a.debounce == b.debounce == Tunables().debounce


def test_database_encryption_replaces_the_default_block_entirely() -> None:
    config = parse(
        """
        [defaults.encryption]
        key_file = "/k"
        require_encrypted = false
        [[backends]]
        type = "file"
        path = "/b"
        [[database]]
        name = "a"
        path = "/a.db"
        [[database]]
        name = "b"
        path = "/b.db"
          [database.encryption]
          passphrase = "pw"
        """
    )
    a, b = config.databases
    assert a.encryption == Encryption(key_file=Path("/k"), require_encrypted=False)
    # Not merged: require_encrypted is back at its default, key_file is gone.
    assert b.encryption == Encryption(passphrase="pw")


def test_top_level_backends_apply_when_a_database_names_none() -> None:
    config = parse(
        """
        [[backends]]
        type = "s3"
        bucket = "shared"
        [[backends]]
        type = "file"
        path = "/mirror"
        mode = "async"
        [[database]]
        name = "user1"
        path = "/u1.db"
        [[database]]
        name = "user2"
        path = "/u2.db"
        [[database]]
        name = "own"
        path = "/own.db"
          [[database.backends]]
          type = "file"
          path = "/own"
        """
    )
    u1, u2, own = config.databases
    shared = (S3Backend(bucket="shared"), FileBackend(path=Path("/mirror"), mode="async"))
    assert u1.backends == u2.backends == shared
    assert own.backends == (FileBackend(path=Path("/own")),)


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "bakelite.toml"
    path.write_text(
        """
        [defaults.encryption]
        key_file = "keys/key.txt"
        [[database]]
        name = "app"
        path = "data/app.db"
          [[database.backends]]
          type = "file"
          path = "../backups"
          [[database.backends]]
          type = "sftp"
          host = "h"
          path = "relative/remote"
        """.replace("\n        ", "\n")
    )
    (db,) = load_config(path, environ={}).databases
    conf = tmp_path / "conf"
    assert db.path == conf / "data" / "app.db"
    assert db.backends[0] == FileBackend(path=conf / "../backups")
    assert db.encryption == Encryption(key_file=conf / "keys" / "key.txt")
    # A remote SFTP path is the server's business, never resolved locally.
    assert isinstance(db.backends[1], SFTPBackend)
    assert db.backends[1].path == "relative/remote"


def test_absolute_and_home_paths_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    config = parse(with_db(backend='type = "file"\npath = "~/b"'), source=Path("/etc/bakelite/bakelite.toml"))
    assert config.databases[0].path == Path("/data/app.db")
    assert config.databases[0].backends[0] == FileBackend(path=tmp_path / "b")


# -- env key overrides ----------------------------------------------------------------------------

TWO_DBS = """
[[backends]]
type = "file"
path = "/b"
[[database]]
name = "plain"
path = "/plain.db"
[[database]]
name = "enc"
path = "/enc.db"
  [database.encryption]
  key_file = "/from-config"
  require_encrypted = false
"""


@pytest.mark.parametrize(
    ("variable", "expected"),
    [
        ("BAKELITE_KEY", {"key": "BAKELITE-KEY-V1-abc"}),
        ("BAKELITE_KEY_FILE", {"key_file": Path("/env/key")}),
        ("BAKELITE_PASSPHRASE", {"passphrase": "env pass"}),
        ("BAKELITE_PASSPHRASE_FILE", {"passphrase_file": Path("/env/pass")}),
    ],
)
def test_env_key_variable_wins_for_every_database(variable: str, expected: dict[str, Any]) -> None:
    value = str(next(iter(expected.values())))
    plain, enc = parse(TWO_DBS, environ={variable: value}).databases
    assert plain.encryption == Encryption(**expected)
    # The key source is replaced; the block's require_encrypted stays.
    assert enc.encryption == Encryption(**expected, require_encrypted=False)


def test_two_env_key_variables_are_an_error() -> None:
    text = rejected(TWO_DBS, environ={"BAKELITE_KEY": "k", "BAKELITE_PASSPHRASE": "p"})
    assert (
        "environment: more than one encryption key variable is set: BAKELITE_KEY, BAKELITE_PASSPHRASE" in text
    )


def test_empty_env_key_variable_counts_as_unset() -> None:
    plain, enc = parse(TWO_DBS, environ={"BAKELITE_KEY": "", "BAKELITE_KEY_FILE": ""}).databases
    assert plain.encryption is None
    assert enc.encryption == Encryption(key_file=Path("/from-config"), require_encrypted=False)


def test_block_with_only_require_encrypted_needs_an_env_key() -> None:
    text = """
    [defaults.encryption]
    require_encrypted = false
    """ + with_db()
    assert "defaults.encryption: no key source" in rejected(text)
    (db,) = parse(text, environ={"BAKELITE_KEY_FILE": "/k"}).databases
    assert db.encryption == Encryption(key_file=Path("/k"), require_encrypted=False)


def test_ambiguous_block_is_reported_even_when_env_overrides_it() -> None:
    text = """
    [defaults.encryption]
    key_file = "/k"
    passphrase = "p"
    """ + with_db()
    message = rejected(text, environ={"BAKELITE_KEY_FILE": "/env"})
    assert "defaults.encryption: more than one key source is set (key_file, passphrase)" in message


def test_apply_env_overrides_on_a_python_config() -> None:
    config = Config(
        databases=(Database(name="a", path=Path("/a.db"), backends=(FileBackend(path=Path("/b")),)),)
    )
    assert apply_env_overrides(config, {}) is config
    (db,) = apply_env_overrides(config, {"BAKELITE_PASSPHRASE": "pw"}).databases
    assert db.encryption == Encryption(passphrase="pw")
    with pytest.raises(ConfigError):
        apply_env_overrides(config, {"BAKELITE_KEY": "a", "BAKELITE_KEY_FILE": "b"})


# -- load_config errors ---------------------------------------------------------------------------


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml", environ={})
    err = info.value
    assert err.exit_code == 2
    assert err.message == f"config file {tmp_path / 'nope.toml'} not found"
    assert err.hint is not None and "--config" in err.hint and "bakelite init" in err.hint


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[database]]\nname = "app"\npath = /oops\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert "invalid TOML" in info.value.message
    assert "line 3" in info.value.one_line()
    assert info.value.detail == "line 3: path = /oops"


def test_config_path_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, environ={})


# -- rejections -----------------------------------------------------------------------------------

UNITS = "ms, s (sec, secs), m (min, mins), h (hr, hrs), d (day, days)"

REJECTIONS: list[tuple[str, str, str]] = [
    # (id, config, expected fragment of the one-line error; every fragment starts with the key path)
    (
        "bare-int-duration",
        "[defaults]\ndebounce = 250\n" + with_db(),
        "defaults.debounce: a duration needs a unit",
    ),
    (
        "numeric-string-duration",
        with_db('safety_poll = "30"'),
        "database[app].safety_poll: a duration needs a unit",
    ),
    ("float-duration", with_db("retention = 1.5"), "database[app].retention: a duration needs a unit"),
    ("unknown-unit", with_db('retention = "2y"'), "database[app].retention: unknown duration unit 'y'"),
    (
        "backend-duration",
        with_db(backend='type = "s3"\nbucket = "b"\nrequest_timeout = 30'),
        "database[app].backends[0].request_timeout: a duration needs a unit",
    ),
    (
        "sftp-duration",
        with_db(backend='type = "sftp"\nhost = "h"\nconnect_timeout = "30"'),
        "database[app].backends[0].connect_timeout: a duration needs a unit",
    ),
    (
        "compaction-decreasing",
        with_db('compaction_levels = ["5m", "30s"]'),
        "database[app].compaction_levels: windows must strictly increase, but 5m is followed by 30s",
    ),
    (
        "compaction-equal",
        with_db('compaction_levels = ["30s", "30s"]'),
        "database[app].compaction_levels: windows must strictly increase",
    ),
    (
        "compaction-bare-element",
        with_db('compaction_levels = ["30s", 300]'),
        "database[app].compaction_levels[1]: a duration needs a unit",
    ),
    ("compaction-zero", with_db('compaction_levels = ["0s"]'), "database[app].compaction_levels[0]: "),
    (
        "compaction-not-list",
        with_db('compaction_levels = "30s"'),
        "database[app].compaction_levels: expected",
    ),
    ("compression", with_db('compression = "gzip"'), "database[app].compression: 'gzip' is not one of"),
    (
        "on-incomplete",
        with_db('on_incomplete_destination = "ignore"'),
        "database[app].on_incomplete_destination: 'ignore' is not one of",
    ),
    (
        "mode",
        with_db(backend='type = "file"\npath = "/b"\nmode = "lazy"'),
        "database[app].backends[0].mode: 'lazy' is not one of",
    ),
    (
        "s3-glacier",
        with_db(backend='type = "s3"\nbucket = "b"\nstorage_class = "GLACIER"'),
        "database[app].backends[0].storage_class: 'GLACIER' (S3 Glacier Flexible Retrieval) needs a thaw",
    ),
    (
        "s3-deep-archive",
        with_db(backend='type = "s3"\nbucket = "b"\nstorage_class = "DEEP_ARCHIVE"'),
        "database[app].backends[0].storage_class: 'DEEP_ARCHIVE' (S3 Glacier Deep Archive) needs a thaw",
    ),
    (
        "s3-unknown-class",
        with_db(backend='type = "s3"\nbucket = "b"\nstorage_class = "standard_ia"'),
        "database[app].backends[0].storage_class: unknown storage class 'standard_ia' for a s3 backend "
        "(did you mean 'STANDARD_IA'?)",
    ),
    (
        "azure-archive",
        with_db(backend='type = "azure"\naccount = "a"\ncontainer = "c"\nstorage_class = "Archive"'),
        "database[app].backends[0].storage_class: 'Archive' (the Azure Archive tier) needs a thaw",
    ),
    (
        "gcs-unknown-class",
        with_db(backend='type = "gcs"\nbucket = "b"\nstorage_class = "GLACIER"'),
        "database[app].backends[0].storage_class: unknown storage class 'GLACIER' for a gcs backend",
    ),
    (
        "file-storage-class",
        with_db(backend='type = "file"\npath = "/b"\nstorage_class = "STANDARD"'),
        "database[app].backends[0]: unknown key 'storage_class' for a file backend "
        "(it applies to s3, gcs, azure)",
    ),
    (
        "sftp-storage-class",
        with_db(backend='type = "sftp"\nhost = "h"\nstorage_class = "STANDARD"'),
        "database[app].backends[0]: unknown key 'storage_class' for a sftp backend",
    ),
    (
        "encryption-two-sources",
        with_db(tables='[database.encryption]\nkey_file = "/k"\npassphrase_file = "/p"'),
        "database[app].encryption: more than one key source is set (key_file, passphrase_file)",
    ),
    (
        "encryption-three-sources",
        with_db(tables='[database.encryption]\nkey_file = "/k"\npassphrase = "x"\npassphrase_file = "/p"'),
        "database[app].encryption: more than one key source is set (key_file, passphrase, passphrase_file)",
    ),
    (
        "encryption-no-source",
        with_db(tables="[database.encryption]\nrequire_encrypted = true"),
        "database[app].encryption: no key source",
    ),
    (
        "encryption-empty-passphrase",
        with_db(tables='[database.encryption]\npassphrase = " "'),
        "database[app].encryption.passphrase: must not be empty",
    ),
    (
        "encryption-inline-key",
        with_db(tables='[database.encryption]\nkey = "BAKELITE-KEY-V1-x"'),
        "database[app].encryption: unknown key 'key' (an inline key can only come from the BAKELITE_KEY "
        "environment variable; use key_file)",
    ),
    (
        "sse-kms-without-key-id",
        with_db(backend='type = "s3"\nbucket = "b"\nsse = "aws:kms"'),
        'database[app].backends[0].sse_kms_key_id: is required with sse = "aws:kms"',
    ),
    (
        "kms-key-id-without-kms",
        with_db(backend='type = "s3"\nbucket = "b"\nsse = "aes256"\nsse_kms_key_id = "k"'),
        'database[app].backends[0].sse_kms_key_id: is only used with sse = "aws:kms"',
    ),
    (
        "kms-key-id-without-sse",
        with_db(backend='type = "s3"\nbucket = "b"\nsse_kms_key_id = "k"'),
        "database[app].backends[0].sse_kms_key_id: is only used with",
    ),
    (
        "sse-value",
        with_db(backend='type = "s3"\nbucket = "b"\nsse = "AES256"'),
        'database[app].backends[0].sse: \'AES256\' is not one of "aes256", "aws:kms" '
        "(did you mean 'aes256'?)",
    ),
    (
        "duplicate-names",
        with_db() + with_db(),
        "database[app]: duplicate database name 'app' (databases #1 and #2)",
    ),
    (
        "no-backend",
        '[[database]]\nname = "app"\npath = "/a.db"\n',
        "database[app]: no backend",
    ),
    (
        "all-async",
        with_db(backend='type = "file"\npath = "/b"\nmode = "async"'),
        'database[app].backends: every destination is mode = "async"',
    ),
    (
        "shared-all-async",
        '[[backends]]\ntype = "file"\npath = "/b"\nmode = "async"\n'
        '[[database]]\nname = "app"\npath = "/a.db"\n',
        'database[app].backends: every destination is mode = "async"',
    ),
    (
        "metrics-no-port",
        with_db() + '[daemon]\nmetrics_addr = "localhost"',
        "daemon.metrics_addr: 'localhost'",
    ),
    ("metrics-no-host", with_db() + '[daemon]\nmetrics_addr = "9090"', "daemon.metrics_addr: '9090' is not"),
    (
        "metrics-bad-port",
        with_db() + '[daemon]\nmetrics_addr = "h:99999"',
        "daemon.metrics_addr: 'h:99999': port",
    ),
    (
        "metrics-ipv6",
        with_db() + '[daemon]\nmetrics_addr = "::1:9090"',
        "daemon.metrics_addr: '::1:9090': an IPv6",
    ),
    ("metrics-type", with_db() + "[daemon]\nmetrics_addr = 9090", "daemon.metrics_addr: expected a string"),
    (
        "daemon-negative",
        with_db() + "[daemon]\nsnapshot_workers = -1",
        "daemon.snapshot_workers: must not be",
    ),
    (
        "daemon-string-int",
        with_db() + '[daemon]\nmax_concurrent_snapshots = "4"',
        'daemon.max_concurrent_snapshots: expected an integer, got string "4"; remove the quotes',
    ),
    (
        "keep-recent-negative",
        with_db("compaction_keep_recent = -1"),
        "database[app].compaction_keep_recent: must",
    ),
    ("max-backups-float", with_db("max_backups = 2.5"), "database[app].max_backups: expected an integer"),
    (
        "max-segments-bool",
        with_db("max_segments_per_snapshot = true"),
        "max_segments_per_snapshot: expected an",
    ),
    ("size-unit", with_db('max_wal_size = "16 parsecs"'), "database[app].max_wal_size: "),
    (
        "size-negative",
        with_db("max_total_size = -1"),
        "database[app].max_total_size: a size cannot be negative",
    ),
    ("size-zero-wal", with_db("max_wal_size = 0"), "database[app].max_wal_size: must be greater than 0"),
    ("zero-safety-poll", with_db('safety_poll = "0s"'), "database[app].safety_poll: must be greater than 0s"),
    (
        "bool-type",
        with_db('auto_wal = "yes"'),
        'database[app].auto_wal: expected true or false, got string "yes"',
    ),
    (
        "backend-bool-type",
        with_db(backend='type = "s3"\nbucket = "b"\nchecksum = 1'),
        "database[app].backends[0].checksum: expected true or false",
    ),
    (
        "max-retries-float",
        with_db(backend='type = "gcs"\nbucket = "b"\nmax_retries = 2.5'),
        "database[app].backends[0].max_retries: expected an integer",
    ),
    (
        "max-retries-negative",
        with_db(backend='type = "azure"\naccount = "a"\ncontainer = "c"\nmax_retries = -1'),
        "database[app].backends[0].max_retries: must not be negative",
    ),
    ("name-empty", '[[database]]\nname = ""\npath = "/a"\n', "database[0].name: the name must not be empty"),
    (
        "name-dot",
        '[[database]]\nname = ".hidden"\npath = "/a"\n',
        "database[0].name: the name '.hidden' starts",
    ),
    (
        "name-slash",
        '[[database]]\nname = "a/b"\npath = "/a"\n',
        "database[0].name: the name 'a/b' contains a path",
    ),
    (
        "name-dotdot",
        '[[database]]\nname = "a..b"\npath = "/a"\n',
        "database[0].name: the name 'a..b' contains '..'",
    ),
    (
        "name-long",
        f'[[database]]\nname = "{"x" * 129}"\npath = "/a"\n',
        "database[0].name: the name is 129 char",
    ),
    (
        "name-nul",
        '[[database]]\nname = "a\\u0000b"\npath = "/a"\n',
        "database[0].name: the name 'a\\x00b' contains a",
    ),
    (
        "name-tab",
        '[[database]]\nname = "a\\tb"\npath = "/a"\n',
        "database[0].name: the name 'a\\tb' contains a NUL",
    ),
    (
        "name-space",
        '[[database]]\nname = "my db"\npath = "/a"\n',
        "database[0].name: the name 'my db' contains ' '",
    ),
    (
        "name-unicode",
        '[[database]]\nname = "café"\npath = "/a"\n',
        "database[0].name: the name 'café' contains 'é'",
    ),
    (
        "name-type",
        "[[database]]\nname = 3\npath = '/a'\n",
        "database[0].name: expected a string, got integer 3",
    ),
    ("name-missing", '[[database]]\npath = "/a"\n', "database[0]: missing required key 'name'"),
    ("path-missing", '[[database]]\nname = "app"\n', "database[app]: missing required key 'path'"),
    ("path-empty", '[[database]]\nname = "app"\npath = ""\n', "database[app].path: must not be empty"),
    (
        "sftp-port-zero",
        with_db(backend='type = "sftp"\nhost = "h"\nport = 0'),
        "backends[0].port: 0 is not a TCP",
    ),
    (
        "sftp-port-high",
        with_db(backend='type = "sftp"\nhost = "h"\nport = 70000'),
        "database[app].backends[0].port: 70000 is not a TCP port (1-65535)",
    ),
    (
        "sftp-password-env",
        with_db(backend='type = "sftp"\nhost = "h"\npassword_env = "hunter 2"'),
        "database[app].backends[0].password_env: 'hunter 2' is not an environment variable name",
    ),
    (
        "endpoint-url",
        with_db(backend='type = "s3"\nbucket = "b"\nendpoint = "s3.example.com"'),
        "database[app].backends[0].endpoint: 's3.example.com' is not an http:// or https:// URL",
    ),
    (
        "backend-missing-type",
        with_db(backend='path = "/b"'),
        "database[app].backends[0]: missing required key 'type'; one of file, s3, gcs, azure, sftp",
    ),
    (
        "backend-type-case",
        with_db(backend='type = "S3"\nbucket = "b"'),
        "database[app].backends[0].type: unknown backend type 'S3' (did you mean 's3'?)",
    ),
    (
        "backend-missing-bucket",
        with_db(backend='type = "s3"'),
        "database[app].backends[0]: missing required key 'bucket' for a s3 backend",
    ),
    (
        "backend-empty-bucket",
        with_db(backend='type = "gcs"\nbucket = ""'),
        "backends[0].bucket: must not be empty",
    ),
    (
        "shared-backend",
        '[[backends]]\ntype = "s3"\nbucket = "b"\nstorage_class = "GLACIER"\n'
        '[[database]]\nname = "a"\npath = "/a"\n',
        "backends[0].storage_class: 'GLACIER'",
    ),
    ("no-database", '[defaults]\ndebounce = "1s"\n', "database: the config defines no database"),
    (
        "database-single-table",
        '[database]\nname = "app"\npath = "/a"\n',
        "database: expected an array of tables ([[database]]), got a table",
    ),
    (
        "backends-single-table",
        '[[database]]\nname = "app"\npath = "/a"\n[database.backends]\ntype = "file"\npath = "/b"\n',
        "database[app].backends: expected an array of tables ([[database.backends]]), got a table",
    ),
    ("defaults-not-table", 'defaults = "x"\n' + with_db(), "defaults: expected a table ([defaults])"),
    (
        "encryption-not-table",
        '[defaults]\nencryption = "/k"\n' + with_db(),
        "defaults.encryption: expected a table ([defaults.encryption])",
    ),
    (
        "top-level-encryption",
        "[encryption]\nkey_file = '/k'\n" + with_db(),
        "unknown top-level key 'encryption'; encryption goes in [defaults.encryption] "
        "or a [database.encryption] table",
    ),
    (
        "tunable-at-top-level",
        'debounce = "1s"\n' + with_db(),
        "unknown top-level key 'debounce'; tunables go in [defaults] or in a [[database]] table",
    ),
    (
        "backends-in-defaults",
        "[[defaults.backends]]\ntype = 'file'\npath = '/b'\n" + with_db(),
        "defaults: unknown key 'backends'; shared destinations are a top-level [[backends]] table",
    ),
]


@pytest.mark.parametrize(("config", "expected"), [r[1:] for r in REJECTIONS], ids=[r[0] for r in REJECTIONS])
def test_rejection_names_the_key_path(config: str, expected: str) -> None:
    assert expected in rejected(config)


def test_bare_duration_message_lists_the_units() -> None:
    text = rejected("[defaults]\ndebounce = 250\n" + with_db())
    assert 'e.g. "250s"' in text
    assert UNITS in text


@pytest.mark.parametrize(
    ("provider", "backend", "classes"),
    [
        (
            "s3",
            'type = "s3"\nbucket = "b"',
            ["STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR"],
        ),
        ("gcs", 'type = "gcs"\nbucket = "b"', ["STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"]),
        ("azure", 'type = "azure"\naccount = "a"\ncontainer = "c"', ["Hot", "Cool", "Cold"]),
    ],
)
def test_instant_storage_classes_are_accepted(provider: str, backend: str, classes: list[str]) -> None:
    for storage_class in classes:
        config = parse(with_db(backend=f'{backend}\nstorage_class = "{storage_class}"'))
        assert config.databases[0].backends[0].storage_class == storage_class, provider


@pytest.mark.parametrize("addr", ["127.0.0.1:9090", "localhost:1", "[::1]:9090", ":9090", "0.0.0.0:65535"])
def test_valid_metrics_addresses(addr: str) -> None:
    assert parse(with_db() + f'[daemon]\nmetrics_addr = "{addr}"').daemon.metrics_addr == addr


@pytest.mark.parametrize("name", ["app", "A-1", "my_db.v2", "x" * 128, "-dash", "0"])
def test_valid_database_names(name: str) -> None:
    config = parse(
        f'[[database]]\nname = "{name}"\npath = "/a"\n[[database.backends]]\ntype = "file"\npath = "/b"'
    )
    assert config.databases[0].name == name


def test_every_problem_is_reported_at_once() -> None:
    text = """
    [defaults]
    debounce = 250
    [[database]]
    name = "app"
    path = "/a.db"
    compression = "gzip"
    safety_pol = "1s"
      [[database.backends]]
      type = "s3"
      bucket = "b"
      storage_class = "GLACIER"
    [daemon]
    metrics_addr = "nope"
    """
    with pytest.raises(ConfigError) as info:
        parse(text)
    err = info.value
    assert err.message.startswith("defaults.debounce: a duration needs a unit")
    assert err.detail is not None and err.detail.startswith("5 problems; also: ")
    line = err.one_line()
    for fragment in (
        "database[app]: unknown key 'safety_pol' (did you mean 'safety_poll'?)",
        "database[app].compression: 'gzip' is not one of",
        "database[app].backends[0].storage_class: 'GLACIER'",
        "daemon.metrics_addr: 'nope' is not host:port",
    ):
        assert fragment in line


def test_file_name_is_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "bakelite.toml"
    path.write_text(with_db('compression = "gzip"'))
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.detail == f"in {path}"


def test_defaults_problem_is_reported_once_not_per_database() -> None:
    text = """
    [defaults]
    compaction_levels = ["1h", "1m"]
    [[backends]]
    type = "s3"
    bucket = "b"
    storage_class = "DEEP_ARCHIVE"
    [[database]]
    name = "a"
    path = "/a"
    [[database]]
    name = "b"
    path = "/b"
    """
    line = rejected(text)
    assert line.count("compaction_levels") == 1
    assert "defaults.compaction_levels: windows must strictly increase" in line
    assert line.count("DEEP_ARCHIVE") == 1
    assert "backends[0].storage_class: 'DEEP_ARCHIVE'" in line
    assert "database[a]" not in line


# -- a typo in any key of any table ---------------------------------------------------------------


def _typo(key: str) -> str:
    """A realistic misspelling: the middle letter doubled."""
    middle = len(key) // 2
    return key[:middle] + key[middle] + key[middle:]


BACKEND_SAMPLES = {
    "file": {"type": "file", "path": "/b"},
    "s3": {"type": "s3", "bucket": "b"},
    "gcs": {"type": "gcs", "bucket": "b"},
    "azure": {"type": "azure", "account": "a", "container": "c"},
    "sftp": {"type": "sftp", "host": "h"},
}
SAMPLE_VALUES: dict[str, object] = {"type": "file"}


def _document(table: str, backend_type: str = "file") -> dict[str, Any]:
    """A valid document with every table present, for ``table`` to be corrupted."""
    return {
        "defaults": {"debounce": "1s", "encryption": {"key_file": "/k"}},
        "backends": [dict(BACKEND_SAMPLES[backend_type] if table == "backends" else BACKEND_SAMPLES["file"])],
        "database": [
            {
                "name": "app",
                "path": "/a.db",
                "encryption": {"key_file": "/k"},
                "backends": [dict(BACKEND_SAMPLES[backend_type])],
            }
        ],
        "daemon": {"snapshot_workers": 1},
    }


def _typo_cases() -> list[tuple[str, str, str, str]]:
    """(table, backend type, key, expected table path) for every key of every table."""
    cases: list[tuple[str, str, str, str]] = [("top", "file", k, "") for k in TOP_LEVEL_KEYS]
    cases += [("defaults", "file", k, "defaults") for k in DEFAULTS_KEYS]
    cases += [("defaults.encryption", "file", k, "defaults.encryption") for k in ENCRYPTION_SPECS]
    cases += [
        ("database", "file", k, "database[0]" if k == "name" else "database[app]") for k in DATABASE_KEYS
    ]
    cases += [("database.encryption", "file", k, "database[app].encryption") for k in ENCRYPTION_SPECS]
    cases += [("daemon", "file", k, "daemon") for k in DAEMON_SPECS]
    for backend_type, cls in BACKEND_CLASSES.items():
        for k in ("type", *field_specs(cls)):
            cases.append(("database.backends", backend_type, k, "database[app].backends[0]"))
            cases.append(("backends", backend_type, k, "backends[0]"))
    return cases


def _table(doc: dict[str, Any], table: str) -> Any:
    if table == "top":
        return doc
    if table == "defaults":
        return doc["defaults"]
    if table == "defaults.encryption":
        return doc["defaults"]["encryption"]
    if table == "database":
        return doc["database"][0]
    if table == "database.encryption":
        return doc["database"][0]["encryption"]
    if table == "database.backends":
        return doc["database"][0]["backends"][0]
    if table == "backends":
        return doc["backends"][0]
    return doc[table]


@pytest.mark.parametrize(
    ("table", "backend_type", "key", "path"),
    _typo_cases(),
    ids=[f"{t}:{b}:{k}" if t.endswith("backends") else f"{t}:{k}" for t, b, k, _ in _typo_cases()],
)
def test_typo_in_any_key_names_the_path_and_suggests(
    table: str, backend_type: str, key: str, path: str
) -> None:
    doc = _document(table, backend_type)
    target = _table(doc, table)
    typo = _typo(key)
    target[typo] = target.pop(key, "1s")
    with pytest.raises(ConfigError) as info:
        parse_config(doc, environ={})
    expected = f"{path}: unknown key" if path else "unknown top-level key"
    assert f"{expected} {typo!r} (did you mean {key!r}?)" in info.value.one_line()
    assert info.value.exit_code == 2


# -- validate() on Python-built configs -----------------------------------------------------------


def _db(**overrides: Any) -> Database:
    fields: dict[str, Any] = {
        "name": "app",
        "path": Path("/a.db"),
        "backends": (FileBackend(path=Path("/b")),),
    }
    fields.update(overrides)
    return Database(**fields)


def test_validate_returns_a_valid_config_unchanged() -> None:
    config = Config(databases=(_db(),))
    assert validate(config) is config


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (Config(databases=(_db(debounce=-1.0),)), "database[app].debounce: must not be negative"),
        (
            Config(databases=(_db(compaction_levels=(60.0, 30.0)),)),
            "database[app].compaction_levels: windows",
        ),
        (Config(databases=(_db(compression="gzip"),)), "database[app].compression: 'gzip' is not one of"),
        (Config(databases=(_db(max_backups=-3),)), "database[app].max_backups: must not be negative"),
        (
            Config(databases=(_db(safety_poll="30s"),)),
            "database[app].safety_poll: expected a duration in seconds",
        ),
        (
            Config(databases=(_db(name="../etc"),)),
            "database[0].name: the name '../etc' contains a path separator",
        ),
        (Config(databases=(_db(path=Path("")),)), "database[app].path: is required"),
        (Config(databases=(_db(backends=()),)), "database[app]: no backend"),
        (
            Config(databases=(_db(backends=(S3Backend(bucket="b", storage_class="GLACIER"),)),)),
            "database[app].backends[0].storage_class: 'GLACIER' (S3 Glacier Flexible Retrieval) needs a thaw",
        ),
        (
            Config(databases=(_db(backends=(SFTPBackend(host="h", port=0),)),)),
            "database[app].backends[0].port: 0 is not a TCP port",
        ),
        (
            Config(databases=(_db(backends=(FileBackend(path=Path("/b"), mode="async"),)),)),
            'database[app].backends: every destination is mode = "async"',
        ),
        (
            Config(databases=(_db(encryption=Encryption(key="k", key_file=Path("/k"))),)),
            "database[app].encryption: more than one key source is set (key (BAKELITE_KEY), key_file)",
        ),
        (Config(databases=(_db(encryption=Encryption()),)), "database[app].encryption: no key source"),
        (Config(databases=(_db(), _db())), "database[app]: duplicate database name 'app'"),
        (
            Config(databases=(_db(),), daemon=DaemonSettings(metrics_addr="x")),
            "daemon.metrics_addr: 'x' is not host:port",
        ),
        (
            Config(databases=(_db(),), daemon=DaemonSettings(max_concurrent_snapshots=-1)),
            "daemon.max_concurrent_snapshots: must not be negative",
        ),
        (
            Config(databases=(_db(backends=(S3Backend(bucket="b", sse="aws:kms"),)),)),
            "database[app].backends[0].sse_kms_key_id: is required",
        ),
        (
            Config(databases=(_db(backends=(GCSBackend(bucket="b", request_timeout=0.0),)),)),
            "database[app].backends[0].request_timeout: must be greater than 0s",
        ),
    ],
)
def test_validate_python_configs(config: Config, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(config)
    assert expected in info.value.one_line()
    assert info.value.exit_code == 2


def test_validate_reports_a_shared_python_backend_per_database() -> None:
    bad = AzureBackend(account="a", container="c", storage_class="Archive")
    config = Config(databases=(_db(name="a", backends=(bad,)), _db(name="b", backends=(bad,))))
    line = rejected_python(config)
    assert "database[a].backends[0].storage_class" in line
    assert "database[b].backends[0].storage_class" in line


def rejected_python(config: Config) -> str:
    with pytest.raises(ConfigError) as info:
        validate(config)
    return info.value.one_line()
