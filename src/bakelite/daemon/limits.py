"""The daemon's descriptor budget: how many open files N databases need, and raising the limit to fit.

An idle database holds at most ``FDS_PER_DATABASE`` descriptors: the reader that keeps our read
transaction (the database file and its ``-wal``: 2), the database-file descriptors SQLite keeps for
the other reader, the freeze connection and (once a checkpoint ran) the checkpoint connection after
they are closed (it may not close them while our reader holds a lock, and reuses them when they
reopen: 2-3), the shared ``-shm`` (1), our own descriptors on the database file and on ``-shm``
(2) and the ``.bakelite/<name>.lock`` (1): 8, or 9 after its first checkpoint.  A database being synced or
checkpointed opens up to three more (the other connections' ``-wal``) plus the files of an upload:
``FDS_PER_WORKER`` per running task.
"""

from __future__ import annotations

import logging
import resource
from pathlib import Path

from bakelite.errors import BakeliteError

logger = logging.getLogger(__name__)

FDS_PER_DATABASE = 9
FDS_PER_WORKER = 8
# inotify, logging, the metrics server, backend connection pools, mirrors, status writes.
FDS_BASE = 256
NR_OPEN = Path("/proc/sys/fs/nr_open")


def fd_budget(databases: int, workers: int) -> int:
    """Open files a daemon with ``databases`` databases and ``workers`` worker threads may need."""
    return databases * FDS_PER_DATABASE + workers * FDS_PER_WORKER + FDS_BASE


def _kernel_max() -> int | None:
    try:
        return int(NR_OPEN.read_text())
    except (OSError, ValueError):
        return None


def ensure_fd_limit(databases: int, workers: int) -> int:
    """Raise RLIMIT_NOFILE so the budget fits (soft up to hard, hard too when permitted); the new soft limit.

    Raises BakeliteError naming the fix when the budget cannot fit.
    """
    need = fd_budget(databases, workers)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        # Raising the hard limit needs privilege (root or CAP_SYS_RESOURCE) and is capped by the
        # kernel's fs.nr_open; try, and fall back to what the hard limit allows.
        ceiling = _kernel_max()
        if ceiling is None or need <= ceiling:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
                soft, hard = need, need
            except (ValueError, OSError):
                pass
    # Soft up to hard: the extra descriptors cost nothing until used, and a database that starts
    # later (or a retry) should not fail with EMFILE when the estimate is slightly off.
    target = hard if hard != resource.RLIM_INFINITY else max(soft, need)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            logger.warning("could not raise the open-file limit from %d to %d: %s", soft, target, e)
    if soft != resource.RLIM_INFINITY and soft < need:
        raise BakeliteError(
            f"{databases:,} databases need about {need:,} open files; the limit is {soft:,}",
            detail=f"{FDS_PER_DATABASE} per idle database, {FDS_PER_WORKER} per worker, {FDS_BASE} more",
            hint=f"raise it to at least {need:,}: LimitNOFILE={need} in the systemd unit, or "
            f"`ulimit -n {need}` before starting the daemon (or run fewer databases per daemon)",
        )
    if soft != resource.RLIM_INFINITY:
        logger.debug("open-file limit %d (budget %d for %d databases)", soft, need, databases)
    return int(soft)


def release_free_memory() -> bool:
    """Return freed heap memory to the system (glibc ``malloc_trim``); False where unavailable.

    The bootstrap of a fleet snapshots many databases on several threads; what their buffers leave
    free in the allocator's arenas is otherwise kept for the life of the process.
    """
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True
