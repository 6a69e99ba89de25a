"""The WAL-index header in ``-shm``: which frames SQLite has published, and how far it has backfilled.

The layout is SQLite's documented file format (https://www.sqlite.org/walformat.html): two copies
of a 48-byte header (written second copy first, so equal copies mean no update was in flight),
then the checkpoint info.  Integers are in the host's byte order; the salts are the WAL header's
bytes.  A reader's snapshot ends at the published ``mxFrame`` it saw, and it takes read-mark slot 0
exactly when that equals ``nBackfill``; reading this before and after a BEGIN tells which it got.
"""

from __future__ import annotations

import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

HEADER_BYTES = 136
# Offsets in a header copy: isInit (u8) at 12, mxFrame (u32) at 16, the salts at 32..40; nBackfill
# (u32) opens the checkpoint info at 96.
_U32 = struct.Struct("=I")


@dataclass(frozen=True)
class WalIndexState:
    """What the WAL-index header says at one moment."""

    salts: bytes  # the generation (raw WAL-header salt bytes)
    max_frame: int  # frames published to readers (mxFrame)
    backfilled: int  # frames copied into the database file (nBackfill)


def parse_wal_index(raw: bytes) -> WalIndexState | None:
    """The header in ``raw`` (the first HEADER_BYTES of ``-shm``); None if absent, torn or uninitialised."""
    if len(raw) < HEADER_BYTES or raw[0:48] != raw[48:96]:
        return None
    if not raw[12]:
        return None
    (mx_frame,) = _U32.unpack_from(raw, 16)
    (backfilled,) = _U32.unpack_from(raw, 96)
    return WalIndexState(raw[32:40], mx_frame, backfilled)


def surely_off_slot0(before: WalIndexState | None, after: WalIndexState | None) -> bool:
    """Whether a reader begun between the two readings took a read-mark slot above 0.

    Its snapshot ends at some mxFrame in [before, after] and it took slot 0 only if nBackfill then
    equalled it; nBackfill only grows within a generation, so ``after.backfilled < before.max_frame``
    rules that out.  Anything else (a new generation, a torn header) cannot tell.
    """
    if before is None or after is None or before.salts != after.salts:
        return False
    return after.backfilled < before.max_frame


# Descriptors on -shm files, by inode, with how many LiveDatabases use each.  Closing any
# descriptor of a file drops every POSIX lock the process holds on it (SQLite's among them), so one
# is closed only once no user is left and SQLite has unlinked the file (it does so on the last
# close of a WAL database, when no connection of any process holds it).
_lock = threading.Lock()
_shm: dict[tuple[int, int], list[int]] = {}  # inode -> [fd, users]


def open_shm(path: Path) -> int | None:
    """A read-only descriptor on ``path`` (a ``-shm``), shared by inode; None if it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    with _lock:
        entry = _shm.get((st.st_dev, st.st_ino))
        if entry is None:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None  # then no begin is proven off slot 0: a sync follows each commit
            got = os.fstat(fd)
            entry = _shm.get((got.st_dev, got.st_ino))
            if entry is None:
                entry = _shm[(got.st_dev, got.st_ino)] = [fd, 0]
            # else: the path was replaced meanwhile and we already hold its inode; keep ``fd``
            # open for good rather than risk closing a descriptor a lock may rely on.
        entry[1] += 1
        return entry[0]


def release_shm(fd: int) -> None:
    """One user is done with ``fd`` (call after closing its connections); closed if safe."""
    st = os.fstat(fd)
    with _lock:
        entry = _shm.get((st.st_dev, st.st_ino))
        if entry is None or entry[0] != fd:
            return
        entry[1] -= 1
        if entry[1] <= 0 and st.st_nlink == 0:
            del _shm[(st.st_dev, st.st_ino)]
            os.close(fd)


def read_wal_index(fd: int) -> WalIndexState | None:
    """The WAL-index header now (two tries past a torn read); None if unreadable."""
    for _ in range(2):
        try:
            state = parse_wal_index(os.pread(fd, HEADER_BYTES, 0))
        except OSError:
            return None
        if state is not None:
            return state
    return None
