"""The per-database advisory lock: one daemon (or reencrypt, or embedded replicator) per database.

``flock`` on ``.bakelite/<name>.lock`` — a different inode from the database, so taking or
releasing it never disturbs SQLite's POSIX locks on the database or ``-shm``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from bakelite.errors import LockHeldError
from bakelite.fsutil import state_dir


def lock_path(db_path: Path, name: str) -> Path:
    """Where the lock of database ``name`` lives."""
    return state_dir(db_path) / f"{name}.lock"


class DatabaseLock:
    """An exclusive, non-blocking lock held for as long as the object is open."""

    def __init__(self, db_path: Path, name: str, purpose: str = "a daemon") -> None:
        self.path = lock_path(db_path, name)
        self.name = name
        self.purpose = purpose
        self.fd = -1

    def acquire(self) -> DatabaseLock:
        """Take the lock or raise LockHeldError naming the holder's PID."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockHeldError(
                f"database {self.name!r} is locked by another bakelite process",
                detail=f"lock {self.path} held by pid {holder}",
                hint="stop it first (e.g. systemctl stop bakelite)",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> DatabaseLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_holder(db_path: Path, name: str) -> int | None:
    """PID of the process holding the lock, or None if it is free."""
    path = lock_path(db_path, name)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 64, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
