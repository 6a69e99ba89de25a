"""Helpers every command module shares: loading the config, ``--db`` selection, argument types.

The config modules are imported inside the functions so that ``bakelite --help`` (and a command that
never reads a config, like ``keygen``) stays cheap.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from bakelite import log
from bakelite.errors import BakeliteError, ConfigError, NotAvailableError, UsageError
from bakelite.units import parse_duration

if TYPE_CHECKING:
    from bakelite.config.model import Config, Database
    from bakelite.storage.base import Storage


def load(args: argparse.Namespace) -> Config:
    """Load env files, then the config from ``--config``, else ``$BAKELITE_CONFIG``, else the default."""
    from bakelite.config.env import config_path, load_env_files
    from bakelite.config.load import load_config

    load_env_files()
    # An env file may have set BAKELITE_LOG; logging was set up before it was read.
    log.refresh()
    return load_config(config_path(getattr(args, "config", None)))


def selected(args: argparse.Namespace, config: Config) -> tuple[Database, ...]:
    """The databases a command acts on: the one named by ``--db``, else every configured one."""
    databases = config.select(getattr(args, "db", None))
    if not databases:
        where = f" in {config.source}" if config.source else ""
        raise ConfigError(f"no databases configured{where}", hint="add a [[database]] section")
    return databases


def open_primary(db: Database) -> Storage:
    """The database's primary destination (its first sync backend), with retries."""
    from bakelite.storage.registry import open_storage
    from bakelite.storage.retry import RetryingStorage

    backend = (db.sync_backends or db.backends)[0]
    return RetryingStorage(open_storage(backend))


def open_read(db: Database, *, exhaustive: bool = False) -> Storage:
    """What restore, list and verify read: every destination behind a validating fallback reader.

    Built only with two or more destinations and ``validate_on_restore`` on; otherwise the primary
    alone (a single-destination database pays nothing).  ``exhaustive`` (verify) checks every copy,
    so a rotting destination is named even when the primary is healthy.
    """
    from bakelite.crypto.keys import lazy_cipher_for
    from bakelite.storage.fanout import FallbackStorage
    from bakelite.storage.registry import open_storage
    from bakelite.storage.retry import RetryingStorage

    backends = (*db.sync_backends, *db.async_backends)
    if len(backends) < 2 or not db.validate_on_restore:
        return open_primary(db)
    storages: list[Storage] = [RetryingStorage(open_storage(b)) for b in backends]
    reader = FallbackStorage(storages, exhaustive=exhaustive, required=[b.mode == "sync" for b in backends])
    # The AEAD tags are checked too when a key is configured (KEYPARAMS is read through the reader).
    reader.cipher = lazy_cipher_for(db, [reader])
    return reader


def single(args: argparse.Namespace, config: Config, command: str) -> Database:
    """The one database a command needs: ``--db``, or the only one configured."""
    databases = selected(args, config)
    if len(databases) != 1:
        names = ", ".join(d.name for d in databases)
        raise UsageError(f"{command} needs --db NAME", hint=f"configured databases: {names}")
    return databases[0]


def not_available(name: str) -> NotAvailableError:
    """The error a subcommand raises while its implementation has not landed in this build."""
    return NotAvailableError(
        f"`{name}` is not available in this build",
        hint="upgrade bakelite to a release that includes it",
    )


# Argument types: argparse turns ArgumentTypeError into a one-line usage error with exit code 2.


def duration(text: str) -> float:
    """A duration with a unit (``90s``, ``10m``, ``36h``, ``0s``) as float seconds."""
    try:
        return parse_duration(text)
    except BakeliteError as e:
        # argparse already names the flag; drop parse_duration's generic "duration: " prefix.
        raise argparse.ArgumentTypeError(e.one_line().removeprefix("duration: ")) from None


def count(text: str) -> int:
    """A whole number >= 0 (0 means "automatic" for the daemon's concurrency knobs)."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def host_port(text: str) -> str:
    """``HOST:PORT`` (``127.0.0.1:9090``, ``[::1]:9090``, ``:9090`` for every interface), unchanged."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT such as 127.0.0.1:9090, got {text!r}")
    if host.startswith("[") != host.endswith("]"):
        raise argparse.ArgumentTypeError(f"unbalanced brackets in {text!r}")
    return text


def log_filter(text: str) -> str:
    """A log level spec (``debug``, ``bakelite=debug,botocore=info``), checked but kept as text."""
    try:
        log.parse_filter(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text
