"""bakelite.config: the TOML config and environment, loaded into frozen, validated model objects."""

from bakelite.config.env import EnvFileReport, EnvReport, config_path, load_env_files, parse_env_text
from bakelite.config.load import apply_env_overrides, load_config, parse_config
from bakelite.config.model import (
    AzureBackend,
    Backend,
    BackendBase,
    Config,
    DaemonSettings,
    Database,
    Encryption,
    FileBackend,
    GCSBackend,
    S3Backend,
    SFTPBackend,
    Tunables,
)
from bakelite.config.validate import Problem, check, validate

__all__ = [
    "AzureBackend",
    "Backend",
    "BackendBase",
    "Config",
    "DaemonSettings",
    "Database",
    "Encryption",
    "EnvFileReport",
    "EnvReport",
    "FileBackend",
    "GCSBackend",
    "Problem",
    "S3Backend",
    "SFTPBackend",
    "Tunables",
    "apply_env_overrides",
    "check",
    "config_path",
    "load_config",
    "load_env_files",
    "parse_config",
    "parse_env_text",
    "validate",
]
