"""``doctor``: pre-flight checks that catch, before the daemon runs, what would fail mid-replication.

Per database: the database file (exists, is SQLite, WAL or can be switched), its directory can hold
``.bakelite/``, and per destination: credentials for cloud backends, a write/read/delete probe under a
throw-away key, the replica's format version (the newest object's header), Object Lock
expectations; then the encryption key.  Once for the run: the config is valid, and which env files
were considered and which variables are set (secrets redacted).

Each check is one ``Check`` (ok / warn / FAIL, a message and the fix).  Any FAIL makes the exit code
1; warnings alone leave it 0.  Nothing is written except the probes, which are removed again.

Adding a check is adding a function that returns a ``Check``; ``check_encryption`` and
``check_credentials`` are the hooks the encryption and cloud-backend work fill in.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bakelite.config.env import EnvFileReport, EnvReport
from bakelite.config.load import load_config
from bakelite.config.model import (
    AzureBackend,
    Backend,
    Database,
    FileBackend,
    GCSBackend,
    S3Backend,
    SFTPBackend,
)
from bakelite.errors import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    BakeliteError,
    ConfigError,
    CorruptionError,
    DatabaseError,
    FormatVersionError,
)
from bakelite.format.envelope import FORMAT_VERSION, peek_header, read_version
from bakelite.fsutil import state_dir
from bakelite.ops.catalog import HEADER_PEEK, list_backups
from bakelite.sqlite.dbfile import read_prefix
from bakelite.sqlite.dbheader import DB_HEADER_SIZE, parse_db_header
from bakelite.storage.base import Storage
from bakelite.storage.registry import open_storage

logger = logging.getLogger(__name__)

Level = Literal["ok", "warn", "FAIL"]


@dataclass(frozen=True)
class Check:
    """One line of doctor's output: what was checked, how it went, and how to fix it."""

    name: str
    level: Level
    message: str
    fix: str | None = None


@dataclass(frozen=True)
class DatabaseChecks:
    """Every check of one configured database."""

    database: str
    path: Path
    checks: tuple[Check, ...]


@dataclass(frozen=True)
class DoctorReport:
    """``bakelite doctor``: run-wide checks, the environment, and per-database checks."""

    config: Path
    general: tuple[Check, ...]
    env_files: tuple[EnvFileReport, ...]
    # Known variables that are set, name -> value with secrets redacted, and where each came from.
    variables: Mapping[str, str] = field(default_factory=dict)
    variable_sources: Mapping[str, str] = field(default_factory=dict)
    databases: tuple[DatabaseChecks, ...] = ()
    failures: int = 0
    warnings: int = 0
    exit_code: int = EXIT_OK


def run_doctor(
    config_file: Path,
    db_name: str | None,
    env: EnvReport | None,
    env_error: BakeliteError | None = None,
    environ: Mapping[str, str] = os.environ,
) -> DoctorReport:
    """Run every check; ``env`` is what loading the env files reported (``env_error`` if it failed).

    An unknown ``--db`` name is a ConfigError (a usage error), not a failed check.
    """
    general = list(_env_checks(env, env_error))
    try:
        config = load_config(config_file, environ)
    except ConfigError as e:
        general.insert(0, Check("config", "FAIL", _with_detail(e), e.hint))
        return _finish(config_file, general, env, ())
    databases = config.select(db_name)
    if not databases:
        general.insert(
            0, Check("config", "FAIL", f"{config_file}: no databases configured", "add a [[database]]")
        )
        return _finish(config_file, general, env, ())
    general.insert(0, Check("config", "ok", f"{config_file}: valid, {len(config.databases)} database(s)"))
    results = tuple(check_database_all(db, environ) for db in databases)
    return _finish(config_file, general, env, results)


def _finish(
    config_file: Path, general: Sequence[Check], env: EnvReport | None, dbs: tuple[DatabaseChecks, ...]
) -> DoctorReport:
    every = [*general, *(c for d in dbs for c in d.checks)]
    failures = sum(1 for c in every if c.level == "FAIL")
    warnings = sum(1 for c in every if c.level == "warn")
    return DoctorReport(
        config=config_file,
        general=tuple(general),
        env_files=env.files if env is not None else (),
        variables=env.redacted() if env is not None else {},
        variable_sources=dict(env.sources) if env is not None else {},
        databases=dbs,
        failures=failures,
        warnings=warnings,
        exit_code=EXIT_CHECK_FAILED if failures else EXIT_OK,
    )


def _with_detail(e: BakeliteError) -> str:
    return f"{e.message} ({e.detail})" if e.detail else e.message


# -- environment ----------------------------------------------------------------------------------


def _env_checks(env: EnvReport | None, error: BakeliteError | None) -> list[Check]:
    if error is not None:
        return [Check("env files", "FAIL", _with_detail(error), error.hint)]
    if env is None:
        return []
    out = []
    for f in env.files:
        where = f"{f.path} ({f.role})"
        if f.status == "loaded":
            applied = f"{len(f.applied)} variable(s) applied" if f.applied else "nothing applied"
            shadowed = f", {len(f.shadowed)} already set elsewhere" if f.shadowed else ""
            out.append(Check("env file", "ok", f"{where}: loaded, {applied}{shadowed}"))
        elif f.status == "unreadable":
            out.append(
                Check(
                    "env file",
                    "warn",
                    f"{where}: not readable ({f.error})",
                    "run as a user that can read it, or the variables it holds are missing",
                )
            )
        else:
            out.append(Check("env file", "ok", f"{where}: {f.status}"))
    out += [Check("env file", "warn", w, "fix the line in the env file") for w in env.warnings]
    return out


# -- per database ---------------------------------------------------------------------------------


def check_database_all(db: Database, environ: Mapping[str, str]) -> DatabaseChecks:
    """Every check of one database, in the order they are printed."""
    checks = [check_database_file(db), check_state_dir(db)]
    primary: Storage | None = None
    opened: list[Storage] = []
    try:
        for i, backend in enumerate(db.backends):
            label = f"backend[{i}]"
            where = backend.describe()
            creds = check_credentials(backend, environ)
            if creds is not None:
                checks.append(creds)
            checks += check_object_lock(db, backend)
            try:
                storage = open_storage(backend)
            except BakeliteError as e:
                checks.append(Check(label, "FAIL", f"{where}: {_with_detail(e)}", e.hint))
                continue
            opened.append(storage)
            if primary is None:
                primary = storage
            checks.append(check_probe(db, storage, label))
            checks.append(check_format(db, storage, f"format[{i}]"))
        if not db.backends:
            checks.append(
                Check("backends", "FAIL", "no destination configured", "add a [[database.backends]]")
            )
        checks.append(check_encryption(db, primary))
    finally:
        for storage in opened:
            storage.close()
    return DatabaseChecks(db.name, Path(db.path), tuple(checks))


def check_database_file(db: Database) -> Check:
    """The database exists, is SQLite, and is in WAL mode (or auto_wal will switch it)."""
    path = Path(db.path)
    try:
        # Never open-and-close a live database by path: inside an application that embeds
        # bakelite, closing a descriptor would drop the application's own SQLite locks.
        head = read_prefix(path, DB_HEADER_SIZE)
    except FileNotFoundError:
        return Check(
            "database", "FAIL", f"{path} does not exist", "check `path` in the config, or create the database"
        )
    except IsADirectoryError:
        return Check("database", "FAIL", f"{path} is a directory", "point `path` at the database file")
    except PermissionError:
        return Check(
            "database", "FAIL", f"cannot read {path}: permission denied", "run as the database's owner"
        )
    except OSError as e:
        return Check("database", "FAIL", f"cannot read {path}: {e.strerror or e}")
    try:
        header = parse_db_header(head, path)
    except DatabaseError as e:
        return Check("database", "FAIL", _with_detail(e), "check `path`: it must name a SQLite database file")
    if not os.access(path, os.R_OK | os.W_OK):
        return Check(
            "database",
            "FAIL",
            f"{path} is not writable by this user (the daemon checkpoints the WAL into it)",
            "run bakelite as the database's owner",
        )
    size = f"{header.page_size}-byte pages"
    if header.is_wal_mode:
        return Check("database", "ok", f"{path}: SQLite, WAL mode, {size}")
    if db.auto_wal:
        return Check(
            "database",
            "warn",
            f"{path}: SQLite in rollback-journal mode; the daemon will switch it to WAL (auto_wal = true)",
            "or switch it yourself: sqlite3 <path> 'PRAGMA journal_mode=WAL'",
        )
    return Check(
        "database",
        "FAIL",
        f"{path}: SQLite in rollback-journal mode; bakelite needs WAL",
        f"sqlite3 {path} 'PRAGMA journal_mode=WAL' (persistent), or set auto_wal = true",
    )


def check_state_dir(db: Database) -> Check:
    """The database's directory can hold ``.bakelite/`` (probed by creating and removing a file)."""
    sd = state_dir(db.path)
    parent = sd.parent
    if not parent.is_dir():
        return Check("state dir", "FAIL", f"directory {parent} does not exist", "create it, or fix `path`")
    if os.path.lexists(sd) and not sd.is_dir():
        return Check("state dir", "FAIL", f"{sd} exists and is not a directory", "move it out of the way")
    target = sd if sd.is_dir() else parent
    try:
        fd, probe = tempfile.mkstemp(prefix=".bakelite-doctor-probe-", dir=target)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return Check(
            "state dir",
            "FAIL",
            f"cannot create files in {target}: {e.strerror or e}",
            "run as the database's owner (systemd: add the directory to ReadWritePaths=)",
        )
    if target == sd:
        return Check("state dir", "ok", f"{sd} is writable")
    return Check("state dir", "ok", f"{parent} can hold .bakelite/ (created on the daemon's first start)")


def check_credentials(backend: Backend, environ: Mapping[str, str]) -> Check | None:
    """Whether a cloud backend's credentials are present (None for backends that need none)."""
    name = f"credentials ({backend.type})"

    def has(*names: str) -> bool:
        return all(environ.get(n) for n in names)

    if isinstance(backend, FileBackend):
        return None
    if isinstance(backend, S3Backend):
        if has("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            return Check(
                name, "ok", "static AWS credentials are set (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
            )
        if environ.get("BAKELITE_AWS_USE_DEFAULT_CREDENTIAL_CHAIN", "").lower() in ("1", "true", "yes"):
            return Check(
                name, "ok", "using the AWS default credential chain (instance, task or pod identity)"
            )
        return Check(
            name,
            "FAIL",
            "no S3 credentials found",
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (e.g. in /etc/bakelite/bakelite.env), or "
            "BAKELITE_AWS_USE_DEFAULT_CREDENTIAL_CHAIN=1 on EC2/ECS/EKS",
        )
    if isinstance(backend, GCSBackend):
        if backend.service_account_path is not None:
            if Path(backend.service_account_path).is_file():
                return Check(name, "ok", f"service account key {backend.service_account_path}")
            return Check(
                name,
                "FAIL",
                f"service_account_path {backend.service_account_path} does not exist",
                "fix the path",
            )
        for var in ("GOOGLE_SERVICE_ACCOUNT", "GOOGLE_SERVICE_ACCOUNT_KEY", "GOOGLE_APPLICATION_CREDENTIALS"):
            if environ.get(var):
                return Check(name, "ok", f"{var} is set")
        adc = (
            Path(environ.get("HOME", "~")).expanduser()
            / ".config/gcloud/application_default_credentials.json"
        )
        if adc.is_file():
            return Check(name, "ok", f"application default credentials {adc}")
        return Check(
            name,
            "warn",
            "no GCS credentials found: only the GCE metadata server could provide them",
            "set service_account_path, or GOOGLE_APPLICATION_CREDENTIALS, off Google Cloud",
        )
    if isinstance(backend, AzureBackend):
        for var in ("AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_SAS_TOKEN"):
            if environ.get(var):
                return Check(name, "ok", f"{var} is set")
        if has("AZURE_STORAGE_CLIENT_ID", "AZURE_STORAGE_CLIENT_SECRET", "AZURE_STORAGE_TENANT_ID"):
            return Check(name, "ok", "service principal variables are set")
        return Check(
            name,
            "FAIL",
            "no Azure credentials found",
            "set AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_TOKEN or the AZURE_STORAGE_CLIENT_* variables",
        )
    if isinstance(backend, SFTPBackend):
        if backend.identity_file is not None:
            if Path(backend.identity_file).is_file():
                return Check(name, "ok", f"identity file {backend.identity_file}")
            return Check(
                name, "FAIL", f"identity_file {backend.identity_file} does not exist", "fix the path"
            )
        if backend.password_env and environ.get(backend.password_env):
            return Check(name, "ok", f"password from {backend.password_env}")
        if backend.password or environ.get("BAKELITE_SFTP_PASSWORD") or environ.get("SSH_AUTH_SOCK"):
            return Check(name, "ok", "password or ssh-agent available")
        return Check(
            name,
            "warn",
            "no identity_file, password or ssh-agent: only the default keys in ~/.ssh will be tried",
            "set identity_file for the daemon's user",
        )
    return None


def check_object_lock(db: Database, backend: Backend) -> list[Check]:
    """``expect_object_lock`` (S3): the bucket's lock, and settings that a lock would refuse."""
    from bakelite.errors import BakeliteError
    from bakelite.ops import s3inspect
    from bakelite.storage.registry import open_storage

    if not isinstance(backend, S3Backend) or not backend.expect_object_lock:
        return []
    try:
        storage = open_storage(backend)
    except BakeliteError as e:
        return [Check("object lock", "warn", f"{backend.describe()}: unverifiable: {e.one_line()}")]
    try:
        found = s3inspect.check_object_lock(storage)
    finally:
        storage.close()
    levels: dict[str, Level] = {"ok": "ok", "fail": "FAIL", "warn": "warn"}
    level = levels[found.status]
    fix = "enable Object Lock with a default retention on the bucket" if level == "FAIL" else None
    out = [Check("object lock", level, found.message, fix)]
    for advice in s3inspect.object_lock_advice(db, backend, found):
        out.append(Check("object lock", "warn", advice))
    return out


def check_probe(db: Database, storage: Storage, label: str) -> Check:
    """Write, read back and delete a small object under a throw-away key."""
    where = storage.describe()
    # Under the database's own prefix (so prefix-scoped permissions are exercised); a name that
    # layout.parse_key never takes for a backup object, so listings ignore it even if it lingers.
    key = f"{db.name}/.doctor-probe-{secrets.token_hex(6)}"
    data = secrets.token_bytes(64) + b" bakelite doctor probe\n"
    started = time.monotonic()
    step = "write"
    try:
        storage.put(key, data)
        step = "read"
        if storage.get(key) != data:
            return Check(
                label, "FAIL", f"{where}: the probe object read back different bytes", "check the backend"
            )
        step = "delete"
        storage.delete([key])
        if storage.stat(key) is not None:
            return Check(label, "FAIL", f"{where}: the probe object is still there after a delete")
    except BakeliteError as e:
        _cleanup(storage, key)
        return Check(
            label,
            "FAIL",
            f"{where}: {step} probe failed: {_with_detail(e)}",
            e.hint or "check the destination's permissions and that it is reachable",
        )
    ms = (time.monotonic() - started) * 1000
    return Check(label, "ok", f"{where}: write/read/delete probe ok ({ms:.0f} ms)")


def _cleanup(storage: Storage, key: str) -> None:
    try:
        storage.delete([key])
    except BakeliteError:
        logger.debug("could not remove probe %s", key)


def check_format(db: Database, storage: Storage, label: str) -> Check:
    """The newest stored object's header is readable by this build (its format version, its key)."""
    where = storage.describe()
    try:
        backups = list_backups(storage, db.name)
    except BakeliteError as e:
        return Check(label, "FAIL", f"{where}: cannot list the replica: {_with_detail(e)}", e.hint)
    if not backups:
        return Check(label, "ok", f"{where}: no replica yet (the daemon's first start takes a full backup)")
    newest = backups[-1]
    obj = max(newest.changesets, key=lambda o: (o.ref.last, o.ref.level), default=newest.snapshot)
    if obj is None:
        return Check(label, "warn", f"{where}: the newest backup {newest.backup} has no objects")
    try:
        head = storage.get_range(obj.key, 0, HEADER_PEEK)
        version = read_version(head, obj.key)
        header = peek_header(head, obj.key)
    except FormatVersionError as e:
        return Check(label, "FAIL", f"{where}: {e.message}", e.hint or "upgrade bakelite")
    except CorruptionError as e:
        return Check(
            label,
            "FAIL",
            f"{where}: the newest object cannot be read: {_with_detail(e)}",
            f"run `bakelite verify --db {db.name}`",
        )
    except BakeliteError as e:
        return Check(label, "FAIL", f"{where}: cannot read {obj.key}: {_with_detail(e)}", e.hint)
    if header.encrypted and db.encryption is None:
        return Check(
            label,
            "FAIL",
            f"{where}: the replica is encrypted but no encryption key is configured",
            "configure [database.encryption] (key_file) or set BAKELITE_KEY_FILE",
        )
    return Check(
        label,
        "ok",
        f"{where}: replica format {version} (this build reads up to {FORMAT_VERSION}), "
        f"{len(backups)} backup(s)",
    )


def check_encryption(db: Database, storage: Storage | None) -> Check:
    """The encryption key loads and decrypts an existing object of ``storage`` (the primary)."""
    from bakelite.crypto.keys import cipher_for, probe_key
    from bakelite.errors import BakeliteError
    from bakelite.ops.catalog import list_backups

    if db.encryption is None:
        return Check("encryption", "ok", "not configured: the replica is stored in plaintext")
    fix = "check key_file / passphrase in [encryption] (or BAKELITE_KEY_FILE); see docs/encryption.md"
    try:
        if storage is None:
            cipher_for(db, [], create=False)
            return Check("encryption", "ok", "the key loads (no replica to decrypt yet)")
        newest = None
        for backup in reversed(list_backups(storage, db.name)):
            if backup.snapshot is not None:
                newest = backup.snapshot.key
                break
        if newest is None:
            try:
                cipher_for(db, [storage], create=False)
            except BakeliteError as e:
                if "KEYPARAMS" not in e.one_line() and "keyparams" not in e.one_line().lower():
                    raise
            return Check("encryption", "ok", "the key loads (no backup to decrypt yet)")
        return Check("encryption", "ok", probe_key(db, storage, newest))
    except BakeliteError as e:
        return Check("encryption", "FAIL", e.one_line(), fix)


# -- text -----------------------------------------------------------------------------------------


def _check_line(c: Check, width: int) -> str:
    line = f"  {c.level:<4}  {c.name:<{width}}  {c.message}"
    if c.fix and c.level != "ok":
        line += f"; fix: {c.fix}"
    return line


def render_doctor_text(report: DoctorReport) -> str:
    """One line per check (level, name, message and fix), grouped by database."""
    every = [*report.general, *(c for d in report.databases for c in d.checks)]
    width = max((len(c.name) for c in every), default=0)
    lines = ["general"]
    lines += [_check_line(c, width) for c in report.general]
    for name, value in report.variables.items():
        source = report.variable_sources.get(name, "environment")
        lines.append(f"  {'':<4}  {'set':<{width}}  {name}={value} (from {source})")
    for d in report.databases:
        lines.append(f"database {d.database} ({d.path})")
        lines += [_check_line(c, width) for c in d.checks]
    n, w = report.failures, report.warnings
    lines.append(f"{n} failure{'' if n == 1 else 's'}, {w} warning{'' if w == 1 else 's'}")
    return "\n".join(lines)
