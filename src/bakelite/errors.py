"""The one exception tree of bakelite, and the exit codes the CLI maps it to.

Every error carries a one-line ``message``, an optional ``detail`` and an optional ``hint`` (the
fix).  The class decides the exit code; the CLI renders the error once, in ``cli/main.py``.

    BakeliteError (3)
    ├── UsageError (2)
    │   ├── ConfigError (2)
    │   ├── NotAvailableError (2)
    │   ├── OutputExistsError (2)
    │   └── RestoreTargetError (2)
    ├── CheckFailed (1)
    │   └── CorruptionError (1)
    │       ├── ChainBrokenError (1)
    │       └── IntegrityCheckError (1)
    ├── FormatVersionError (3)
    ├── DatabaseError (3)
    │   └── NotWalModeError (3)
    ├── LockHeldError (3)
    ├── EncryptionError (3)
    ├── NoReplicaError (3)
    └── BackendError (3)
        ├── ObjectNotFound (3)
        ├── PermanentBackendError (3)
        │   └── DeleteRefusedError (3)
        └── TransientBackendError (3)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_RUNTIME = 3
EXIT_INTERNAL = 70


class BakeliteError(Exception):
    """Base of every error bakelite raises on purpose."""

    exit_code = EXIT_RUNTIME

    def __init__(self, message: str, *, detail: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.hint = hint

    def one_line(self) -> str:
        """The message, detail and hint joined into the single line the CLI prints."""
        parts = [self.message]
        if self.detail:
            parts.append(f"({self.detail})")
        line = " ".join(parts)
        if self.hint:
            line += f"; {self.hint}"
        return line


class UsageError(BakeliteError):
    """The command line was wrong."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """The configuration file or environment is invalid."""


class NotAvailableError(UsageError):
    """The subcommand exists in the interface but is not part of this build yet."""


class OutputExistsError(UsageError):
    """A restore would overwrite an existing file."""


class RestoreTargetError(UsageError):
    """The requested restore point does not exist in the replica."""


class CheckFailed(BakeliteError):
    """A health or integrity check found a problem."""

    exit_code = EXIT_CHECK_FAILED


class CorruptionError(CheckFailed):
    """A stored object failed its envelope, hash or authentication check."""


class ChainBrokenError(CorruptionError):
    """The lineage of a backup is missing, reordered or substituted objects."""


class IntegrityCheckError(CorruptionError):
    """A restored database failed PRAGMA integrity_check."""


class FormatVersionError(BakeliteError):
    """An object was written by a newer replica format than this build reads."""


class DatabaseError(BakeliteError):
    """The live database cannot be replicated as it is."""


class NotWalModeError(DatabaseError):
    """The live database is not in WAL mode."""


class LockHeldError(BakeliteError):
    """Another process holds the per-database lock."""


class EncryptionError(BakeliteError):
    """A key could not be loaded, or an object could not be decrypted."""


class NoReplicaError(BakeliteError):
    """The backend holds no backup for the database."""


class BackendError(BakeliteError):
    """A storage backend failed."""


class ObjectNotFound(BackendError):
    """The requested object does not exist on the backend."""


class PermanentBackendError(BackendError):
    """A backend failure that retrying will not fix (auth, missing bucket, permission)."""


class TransientBackendError(BackendError):
    """A backend failure worth retrying (timeout, throttling, connection reset)."""


class DeleteRefusedError(PermanentBackendError):
    """The backend refused a delete (WORM / Object Lock); pruning skips, never loops."""
