"""The Python API: the operations the CLI runs, as typed functions returning the same report dataclasses.

Each function takes a :class:`Config` (loaded from TOML or built in code) or a single
:class:`Database`, opens the storages and keys it needs, and returns the report the CLI renders.
Nothing here prints or exits: failures raise the :class:`~bakelite.errors.BakeliteError` tree.

    >>> cfg = load_config("bakelite.toml")
    >>> report = restore(cfg, database="app", if_db_not_exists=True, if_replica_exists=True)

A config built in code is validated exactly like TOML (lists are accepted where the model holds
tuples), so a typo'd value raises a ConfigError naming its key path.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bakelite.config.load import load_config as _load_config
from bakelite.config.model import Backend, Config, Database, FileBackend
from bakelite.config.validate import validate
from bakelite.errors import ConfigError, UsageError
from bakelite.ops.compact import CompactReport
from bakelite.ops.doctor import Check, DatabaseChecks, DoctorReport
from bakelite.ops.listing import DatabaseListing, FleetReport
from bakelite.ops.repair import RepairReport
from bakelite.ops.restore import ProgressFn, RestoreReport
from bakelite.ops.status import StatusReport
from bakelite.ops.usage import UsageReport
from bakelite.ops.verify import VerifyReport
from bakelite.storage.base import Storage
from bakelite.units import parse_duration

logger = logging.getLogger(__name__)

__all__ = [
    "ConfigLike",
    "compact",
    "doctor",
    "list_databases",
    "list_restore_points",
    "load_config",
    "repair",
    "restore",
    "status",
    "usage",
    "validate_config",
    "verify",
]

ConfigLike = Config | Database
Duration = float | str


def load_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> Config:
    """Read, parse and validate a TOML config (BAKELITE_KEY* in ``environ`` override key sources)."""
    return _load_config(Path(path), environ)


def validate_config(config: ConfigLike) -> Config:
    """A :class:`Config` for ``config`` (lists normalised to tuples), validated exactly like TOML."""
    if isinstance(config, Database):
        config = Config(databases=(config,))
    if not isinstance(config, Config):
        raise ConfigError(f"expected a bakelite Config or Database, got {type(config).__name__}")
    databases: Any = config.databases
    if isinstance(databases, list):
        databases = tuple(databases)
    if isinstance(databases, tuple):
        databases = tuple(_normalise_database(db) for db in databases)
    return validate(dataclasses.replace(config, databases=databases))


def _normalise_database(db: Any) -> Any:
    """``db`` with list fields as tuples and string paths as Paths (anything else is left to validate)."""
    if not isinstance(db, Database):
        return db
    changes: dict[str, Any] = {}
    backends: Any = db.backends
    if isinstance(backends, list | tuple):
        changes["backends"] = tuple(_normalise_backend(b) for b in backends)
    if isinstance(db.path, str):
        changes["path"] = Path(db.path)
    if isinstance(db.compaction_levels, list):
        changes["compaction_levels"] = tuple(db.compaction_levels)
    return dataclasses.replace(db, **changes) if changes else db


def _normalise_backend(backend: Backend) -> Backend:
    if isinstance(backend, FileBackend) and isinstance(backend.path, str):
        return dataclasses.replace(backend, path=Path(backend.path))
    return backend


def _databases(config: ConfigLike, database: str | None) -> tuple[Database, ...]:
    """The validated databases an operation acts on: the one named, else every configured one."""
    cfg = validate_config(config)
    databases = cfg.select(database)
    if not databases:
        raise ConfigError("no databases configured", hint="add a Database to Config(databases=...)")
    return databases


def _single(config: ConfigLike, database: str | None, operation: str) -> Database:
    """The one database an operation needs: ``database=``, or the only one configured."""
    databases = _databases(config, database)
    if len(databases) != 1:
        names = ", ".join(d.name for d in databases)
        raise UsageError(f"{operation} needs database=NAME", hint=f"configured databases: {names}")
    return databases[0]


def _open_primary(db: Database) -> Storage:
    """The database's primary destination (its first sync backend), with retries."""
    from bakelite.cli import context

    return context.open_primary(db)


def _open_read(db: Database, *, exhaustive: bool = False) -> Storage:
    """What restore, list and verify read: the same storage the CLI opens for them."""
    # The CLI's helper, so the API and the CLI read alike (every destination behind a validating
    # fallback reader when there are several); only the primary in a build without it.
    from bakelite.cli import context

    open_read = getattr(context, "open_read", None)
    if open_read is None:
        return context.open_primary(db)
    storage: Storage = open_read(db, exhaustive=exhaustive)
    return storage


def _open_all(db: Database) -> list[tuple[Storage, bool]]:
    """Every destination with retries, each with whether it is a sync one (for repair)."""
    from bakelite.storage.registry import open_storage
    from bakelite.storage.retry import RetryingStorage

    return [(RetryingStorage(open_storage(b)), b.mode == "sync") for b in db.backends]


def _seconds(value: Duration | None) -> float | None:
    """Float seconds from a number or a duration with a unit (``"10m"``)."""
    if value is None or isinstance(value, int | float):
        return value
    return parse_duration(value)


# -- operations -----------------------------------------------------------------------------------


def restore(
    config: ConfigLike,
    *,
    database: str | None = None,
    output: str | os.PathLike[str] | None = None,
    timestamp: str | None = None,
    if_db_not_exists: bool = False,
    if_replica_exists: bool = False,
    progress: ProgressFn | None = None,
) -> RestoreReport:
    """Rebuild a database from its replica (``bakelite restore``); never overwrites an existing file."""
    from bakelite.crypto.keys import lazy_cipher_for
    from bakelite.ops.restore import restore as run_restore

    db = _single(config, database, "restore")
    storage = _open_read(db)
    try:
        return run_restore(
            db,
            storage,
            output=Path(output) if output is not None else None,
            timestamp=timestamp,
            if_db_not_exists=if_db_not_exists,
            if_replica_exists=if_replica_exists,
            cipher=lazy_cipher_for(db, [storage]),
            progress=progress,
        )
    finally:
        storage.close()


def list_restore_points(
    config: ConfigLike, *, database: str | None = None, verbose: bool = False
) -> DatabaseListing:
    """One database's restore points, read from its primary backend (``bakelite list --db``)."""
    from bakelite.ops.listing import list_restore_points as run_listing

    db = _single(config, database, "list_restore_points")
    storage = _open_read(db)
    try:
        return run_listing(db, storage, verbose=verbose)
    finally:
        storage.close()


def list_databases(config: ConfigLike, *, database: str | None = None) -> FleetReport:
    """One row per database, read from each primary backend (``bakelite list``)."""
    from bakelite.ops.listing import list_databases as run_fleet

    cfg = validate_config(config)
    storages: dict[str, Storage] = {}
    try:
        for db in _databases(cfg, database):
            storages[db.name] = _open_read(db)
        return run_fleet(cfg, storages)
    finally:
        for storage in storages.values():
            storage.close()


def verify(
    config: ConfigLike, *, database: str | None = None, deep: bool = False, record: bool = True
) -> VerifyReport:
    """Check replicas are intact and restorable (``bakelite verify``); a failure is in the report."""
    from bakelite.crypto.keys import lazy_cipher_for
    from bakelite.ops.verify import verify_databases

    return verify_databases(
        _databases(config, database),
        lambda db: _open_read(db, exhaustive=True),
        deep=deep,
        record=record,
        cipher_for=lambda db, storage: lazy_cipher_for(db, [storage]),
    )


def status(
    config: ConfigLike,
    *,
    database: str | None = None,
    check: bool = False,
    max_lag: Duration | None = None,
    max_verify_age: Duration | None = None,
) -> StatusReport:
    """Replication status from the local status files (``bakelite status``); durations as s or ``"10m"``."""
    from bakelite.ops.status import status_report

    return status_report(
        _databases(config, database),
        check=check,
        max_lag=_seconds(max_lag),
        max_verify_age=_seconds(max_verify_age),
    )


def doctor(
    config: ConfigLike | str | os.PathLike[str],
    *,
    database: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> DoctorReport:
    """Pre-flight checks (``bakelite doctor``); an invalid config is a FAIL check, as in the CLI.

    It reads the database file's header by path: call it before the application opens the
    database, or from another process, not while this process holds SQLite connections to it.
    """
    from bakelite.ops.doctor import check_database_all, run_doctor

    env = os.environ if environ is None else environ
    if not isinstance(config, Config | Database):
        return run_doctor(Path(config), database, None, environ=env)
    where = config.source if isinstance(config, Config) and config.source else Path("<python>")
    try:
        databases = _databases(config, database)
    except UsageError as e:
        text = f"{e.message} ({e.detail})" if e.detail else e.message
        return _doctor_report(where, [Check("config", "FAIL", text, e.hint)], ())
    general = [Check("config", "ok", f"{where}: valid, {len(databases)} database(s)")]
    return _doctor_report(where, general, tuple(check_database_all(db, env) for db in databases))


def _doctor_report(where: Path, general: Sequence[Check], dbs: tuple[DatabaseChecks, ...]) -> DoctorReport:
    from bakelite.errors import EXIT_CHECK_FAILED, EXIT_OK

    every = [*general, *(c for d in dbs for c in d.checks)]
    failures = sum(1 for c in every if c.level == "FAIL")
    return DoctorReport(
        config=where,
        general=tuple(general),
        env_files=(),
        databases=dbs,
        failures=failures,
        warnings=sum(1 for c in every if c.level == "warn"),
        exit_code=EXIT_CHECK_FAILED if failures else EXIT_OK,
    )


# -- operations landing separately (compaction, usage, repair) ------------------------------------


def usage(config: ConfigLike, *, database: str | None = None) -> UsageReport:
    """Stored bytes per database against its limits (``bakelite usage``)."""
    from bakelite.ops.usage import usage as usage_of

    return usage_of(_databases(config, database), _open_primary, detail=database is not None)


def compact(config: ConfigLike, *, database: str | None = None, dry_run: bool = False) -> CompactReport:
    """Merge older change-sets into fewer objects now (``bakelite compact``)."""
    from bakelite.ops.compact import compact_databases

    return compact_databases(_databases(config, database), _open_primary, dry_run=dry_run)


def repair(config: ConfigLike, *, database: str | None = None, dry_run: bool = False) -> RepairReport:
    """Heal corrupt or missing objects from a healthy destination (``bakelite repair``)."""
    from bakelite.crypto.keys import lazy_cipher_for
    from bakelite.ops.repair import repair_databases

    return repair_databases(
        _databases(config, database),
        _open_all,
        dry_run=dry_run,
        cipher_for=lambda db, storages: lazy_cipher_for(db, storages),
    )
