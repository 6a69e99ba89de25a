"""bakelite: continuous backup and point-in-time restore for live SQLite databases.

The Python API (``bakelite.api``) and the embedded :class:`Replicator` are re-exported here and
imported on first use, so ``bakelite --help`` stays cheap.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# A library logs, it does not print: without this, warnings would reach stderr through logging's
# last-resort handler in applications that never configured logging.  The CLI adds its own handler.
logging.getLogger(__name__).addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from bakelite.api import (
        compact,
        doctor,
        list_databases,
        list_restore_points,
        load_config,
        repair,
        restore,
        status,
        usage,
        validate_config,
        verify,
    )
    from bakelite.config.model import (
        AzureBackend,
        Config,
        DaemonSettings,
        Database,
        Encryption,
        FileBackend,
        GCSBackend,
        S3Backend,
        SFTPBackend,
    )
    from bakelite.embedded import Replicator
    from bakelite.errors import BakeliteError

__all__ = [
    "AzureBackend",
    "BakeliteError",
    "Config",
    "DaemonSettings",
    "Database",
    "Encryption",
    "FileBackend",
    "GCSBackend",
    "Replicator",
    "S3Backend",
    "SFTPBackend",
    "__version__",
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

_MODULES: dict[str, str] = {
    "BakeliteError": "bakelite.errors",
    "Replicator": "bakelite.embedded",
    **dict.fromkeys(
        [
            "AzureBackend",
            "Config",
            "DaemonSettings",
            "Database",
            "Encryption",
            "FileBackend",
            "GCSBackend",
            "S3Backend",
            "SFTPBackend",
        ],
        "bakelite.config.model",
    ),
}


def __getattr__(name: str) -> Any:
    """Import an API name on first use."""
    module = _MODULES.get(name, "bakelite.api" if name in __all__ else None)
    if module is None:
        raise AttributeError(f"module 'bakelite' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
