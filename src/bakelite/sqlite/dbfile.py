"""Descriptors on live database files, opened once per process and never closed.

POSIX locks belong to a process and an inode: closing *any* descriptor on a database file drops
every lock the process holds on it, SQLite's included.  In the daemon that would be our own read
locks; in an application that embeds bakelite it would be the application's own locks.  So every
descriptor bakelite opens on a live database comes from here and stays open for the life of the
process (one per database file: a few descriptors, nothing more).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

_lock = threading.Lock()
_fds: dict[tuple[int, int], int] = {}


def shared_fd(path: Path | str) -> int:
    """A read-only descriptor on ``path``'s file, shared and never closed (FileNotFoundError if absent)."""
    st = os.stat(path)  # stat opens nothing, so it cannot drop locks
    key = (st.st_dev, st.st_ino)
    with _lock:
        fd = _fds.get(key)
        if fd is not None:
            return fd
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        got = os.fstat(fd)
        # Registered under the inode actually opened (the path may have been replaced meanwhile);
        # it is never closed, even then, because closing could drop another connection's locks.
        _fds.setdefault((got.st_dev, got.st_ino), fd)
        return _fds[(got.st_dev, got.st_ino)]


def read_prefix(path: Path | str, n: int = 100) -> bytes:
    """The first ``n`` bytes of a database file, without ever closing a descriptor on it."""
    return os.pread(shared_fd(path), n, 0)
