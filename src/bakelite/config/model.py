"""The configuration as typed, frozen objects.

Durations are float seconds, sizes are int bytes.  ``load.py`` builds these from TOML; the Python
API builds them directly; ``validate.py`` checks both the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

Compression = Literal["zstd", "lz4", "none"]
DestinationMode = Literal["sync", "async"]
IncompletePolicy = Literal["backfill", "refuse", "warn"]


@dataclass(frozen=True, kw_only=True)
class Encryption:
    """One ``[encryption]`` block: exactly one key source, and the plaintext policy."""

    key_file: Path | None = None
    passphrase: str | None = field(default=None, repr=False)
    passphrase_file: Path | None = None
    require_encrypted: bool = True
    # Inline key material, only ever set from BAKELITE_KEY (never read from TOML).
    key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, kw_only=True)
class BackendBase(ABC):
    """Keys every destination shares."""

    type: ClassVar[str] = ""
    mode: DestinationMode = "sync"

    @abstractmethod
    def describe(self) -> str:
        """A URL-like description with no secrets, for messages."""


@dataclass(frozen=True, kw_only=True)
class FileBackend(BackendBase):
    """A directory on a local (or mounted) filesystem."""

    type: ClassVar[str] = "file"
    path: Path

    def describe(self) -> str:
        return f"file://{self.path}"


@dataclass(frozen=True, kw_only=True)
class S3Backend(BackendBase):
    """An S3-compatible bucket."""

    type: ClassVar[str] = "s3"
    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str | None = None
    force_path_style: bool | None = None
    request_timeout: float | None = None
    max_retries: int | None = None
    checksum: bool = False
    sse: Literal["aes256", "aws:kms"] | None = None
    sse_kms_key_id: str | None = None
    storage_class: str | None = None
    expect_object_lock: bool = False

    @property
    def path_style(self) -> bool:
        """Path-style addressing: explicit, else the default with a custom endpoint."""
        if self.force_path_style is not None:
            return self.force_path_style
        return self.endpoint is not None

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


@dataclass(frozen=True, kw_only=True)
class GCSBackend(BackendBase):
    """A Google Cloud Storage bucket."""

    type: ClassVar[str] = "gcs"
    bucket: str
    prefix: str = ""
    service_account_path: Path | None = None
    request_timeout: float | None = None
    max_retries: int | None = None
    storage_class: str | None = None
    # Test-only: reach an emulator instead of storage.googleapis.com.
    endpoint: str | None = None

    def describe(self) -> str:
        return f"gs://{self.bucket}/{self.prefix}".rstrip("/")


@dataclass(frozen=True, kw_only=True)
class AzureBackend(BackendBase):
    """An Azure Blob Storage container."""

    type: ClassVar[str] = "azure"
    account: str
    container: str
    prefix: str = ""
    request_timeout: float | None = None
    max_retries: int | None = None
    storage_class: str | None = None
    # Test-only: reach Azurite instead of <account>.blob.core.windows.net.
    endpoint: str | None = None

    def describe(self) -> str:
        return f"azure://{self.account}/{self.container}/{self.prefix}".rstrip("/")


@dataclass(frozen=True, kw_only=True)
class SFTPBackend(BackendBase):
    """A directory on an SSH host."""

    type: ClassVar[str] = "sftp"
    host: str
    port: int = 22
    user: str | None = None
    path: str = "."
    identity_file: Path | None = None
    passphrase_env: str | None = None
    password_env: str | None = None
    password: str | None = field(default=None, repr=False)
    known_hosts: Path | None = None
    insecure_skip_host_key_check: bool = False
    connect_timeout: float = 30.0
    request_timeout: float = 30.0

    def describe(self) -> str:
        who = f"{self.user}@" if self.user else ""
        return f"sftp://{who}{self.host}:{self.port}/{self.path}"


Backend = FileBackend | S3Backend | GCSBackend | AzureBackend | SFTPBackend


@dataclass(frozen=True, kw_only=True)
class Tunables:
    """Per-database tunables; ``[defaults]`` sets them for all, ``[[database]]`` overrides."""

    debounce: float = 0.25
    max_batch_delay: float = 1.0
    safety_poll: float = 30.0
    busy_timeout: float = 5.0
    max_wal_size: int = 16 * 1024 * 1024
    manifest_flush: float = 10.0
    snapshot_interval: float = 86400.0
    retention: float = 0.0
    compaction_levels: tuple[float, ...] = (30.0, 300.0, 3600.0)
    compaction_keep_recent: int = 16
    max_segments_per_snapshot: int = 0
    max_total_size: int = 0
    max_backups: int = 0
    multipart_sweep_interval: float = 3600.0
    multipart_min_age: float = 3600.0
    mirror_interval: float = 60.0
    compression: Compression = "zstd"
    validate_on_restore: bool = True
    on_incomplete_destination: IncompletePolicy = "backfill"
    # Opt-in: switch a database found in rollback-journal mode to WAL (persistent) instead of refusing.
    auto_wal: bool = False


TUNABLE_NAMES: tuple[str, ...] = tuple(Tunables.__dataclass_fields__)


@dataclass(frozen=True, kw_only=True)
class Database(Tunables):
    """One ``[[database]]``: what to back up, where, and how."""

    name: str
    path: Path
    backends: tuple[Backend, ...] = ()
    encryption: Encryption | None = None

    @property
    def sync_backends(self) -> tuple[Backend, ...]:
        """Destinations written in lock-step (the first is the primary)."""
        return tuple(b for b in self.backends if b.mode == "sync")

    @property
    def async_backends(self) -> tuple[Backend, ...]:
        """Destinations reconciled in the background."""
        return tuple(b for b in self.backends if b.mode == "async")


@dataclass(frozen=True, kw_only=True)
class DaemonSettings:
    """``[daemon]``: process-wide knobs (CLI flags override them)."""

    max_concurrent_snapshots: int = 0
    snapshot_workers: int = 0
    metrics_addr: str | None = None

    @property
    def effective_max_concurrent_snapshots(self) -> int:
        """0 means auto: one at a time."""
        return self.max_concurrent_snapshots or 1

    @property
    def effective_snapshot_workers(self) -> int:
        """0 means auto: single-threaded."""
        return self.snapshot_workers or 1


@dataclass(frozen=True, kw_only=True)
class Config:
    """The whole configuration."""

    databases: tuple[Database, ...] = ()
    daemon: DaemonSettings = DaemonSettings()
    source: Path | None = None

    def database(self, name: str) -> Database:
        """The database named ``name``; ConfigError naming the known ones otherwise."""
        from bakelite.errors import ConfigError

        for db in self.databases:
            if db.name == name:
                return db
        known = ", ".join(d.name for d in self.databases) or "none"
        raise ConfigError(f"no database named {name!r} in the config", hint=f"configured: {known}")

    def select(self, name: str | None) -> tuple[Database, ...]:
        """Every database, or just the one named (``--db``)."""
        return self.databases if name is None else (self.database(name),)
