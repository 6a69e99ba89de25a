"""Running the daemon in the foreground: signals, storages, and the exit status."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from bakelite.config.model import DaemonSettings, Database
from bakelite.daemon.limits import ensure_fd_limit
from bakelite.daemon.supervisor import Supervisor
from bakelite.storage.base import Storage
from bakelite.storage.registry import open_storage
from bakelite.storage.retry import RetryingStorage

logger = logging.getLogger(__name__)


def open_sync_storages(db: Database) -> list[Storage]:
    """The database's sync destinations, each with retries of transient errors."""
    return [RetryingStorage(open_storage(b)) for b in db.sync_backends]


def run_daemon(databases: tuple[Database, ...], settings: DaemonSettings) -> int:
    """Replicate ``databases`` until SIGTERM/SIGINT; 0 after a clean drain."""
    sup = Supervisor(
        databases,
        open_sync_storages,
        snapshot_workers=settings.effective_snapshot_workers,
        # 0 (automatic): one big snapshot at a time, small databases alongside.
        max_concurrent_snapshots=settings.max_concurrent_snapshots,
    )
    # Before anything opens: a fleet needs more descriptors than the usual soft limit of 1,024.
    ensure_fd_limit(len(databases), sup.workers)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("received %s: shipping what is committed, then stopping", signal.Signals(signum).name)
        sup.stop()

    metrics = None
    if settings.metrics_addr:
        from bakelite.daemon.metrics import BakeliteCollector, MetricsServer

        # Bound before replication starts, so a taken port fails the start loudly.
        metrics = MetricsServer(settings.metrics_addr, BakeliteCollector(sup.status_records))
        metrics.start()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    logger.info("bakelite daemon starting for %d database(s)", len(databases))
    try:
        sup.run()
    finally:
        if metrics is not None:
            metrics.stop()
    fatal = sup.fatal_errors()
    if fatal and len(fatal) == len(databases):
        raise fatal[0]
    logger.info("bakelite daemon stopped")
    return 0
