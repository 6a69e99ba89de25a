"""The Prometheus endpoint: ``GET /metrics`` on ``metrics_addr``, one sample per series per database.

A custom collector builds every sample at scrape time from the daemon's per-database records (the
ones the status files are written from) and the verify markers, so a series that does not apply is
really absent rather than pinned at 0:

* ``bakelite_replica_lag_seconds`` appears once the database has a ``-wal`` and a first sync;
* ``bakelite_last_synced_seconds`` appears after the first sync;
* ``bakelite_backing_off_seconds`` appears only during a streak of failed attempts;
* ``bakelite_change_sets`` appears once there is a current backup;
* ``bakelite_last_verified_seconds`` appears after the first clean verify, ``bakelite_verify_ok``
  after the first verify.

The registry is private: no process or platform collectors, exactly the documented series.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer

from bakelite.daemon.statusfile import HEALTHY_STATES, MarkerCache, StatusRecord
from bakelite.errors import BakeliteError

logger = logging.getLogger(__name__)

LABELS = ["database"]


class BakeliteCollector:
    """Yields the documented series from ``records()`` at each scrape."""

    def __init__(
        self,
        records: Callable[[], Iterable[StatusRecord]],
        clock: Callable[[], float] = time.time,
        markers: MarkerCache | None = None,
    ) -> None:
        self.records = records
        self.clock = clock
        self.markers = markers or MarkerCache()
        # Scrapes may overlap (threaded server); the marker cache is not thread-safe.
        self._lock = threading.Lock()

    def describe(self) -> list[Metric]:
        """Nothing up front: the registry must not call ``collect`` at registration."""
        return []

    def collect(self) -> Iterator[Metric]:
        """One sample per applicable series per database."""
        up = GaugeMetricFamily("bakelite_up", "1 while actively replicating, 0 otherwise.", labels=LABELS)
        lag = GaugeMetricFamily(
            "bakelite_replica_lag_seconds",
            "Seconds the replica is behind the live database (0 when caught up).",
            labels=LABELS,
        )
        synced = GaugeMetricFamily(
            "bakelite_last_synced_seconds", "Seconds since the replica was last caught up.", labels=LABELS
        )
        backing = GaugeMetricFamily(
            "bakelite_backing_off_seconds",
            "Seconds the database has been in a streak of failed attempts (absent while healthy).",
            labels=LABELS,
        )
        changes = GaugeMetricFamily(
            "bakelite_change_sets", "Change-sets in the current backup.", labels=LABELS
        )
        shipped = CounterMetricFamily(
            "bakelite_bytes_shipped",
            "Bytes shipped to the backend by this daemon run.",
            labels=LABELS,
        )
        verified = GaugeMetricFamily(
            "bakelite_last_verified_seconds",
            "Seconds since the replica was last verified clean (absent until a clean verify).",
            labels=LABELS,
        )
        verify_ok = GaugeMetricFamily(
            "bakelite_verify_ok",
            "1 if the most recent verify was clean, 0 if it found problems.",
            labels=LABELS,
        )
        with self._lock:
            for r in self.records():
                now = self.clock()
                label = [r.database]
                up.add_metric(label, 1.0 if r.state in HEALTHY_STATES else 0.0)
                if r.last_sync is not None:
                    synced.add_metric(label, max(0.0, now - r.last_sync))
                    if os.path.exists(f"{r.path}-wal"):
                        behind = 0.0 if r.oldest_unshipped is None else now - r.oldest_unshipped
                        lag.add_metric(label, max(0.0, behind))
                if r.failing_since is not None:
                    backing.add_metric(label, max(0.0, now - r.failing_since))
                if r.backup is not None:
                    changes.add_metric(label, float(r.changesets))
                shipped.add_metric(label, float(r.bytes_shipped))
                marker = self.markers.get(r.path, r.database)
                if marker is not None:
                    verify_ok.add_metric(label, 1.0 if marker.clean else 0.0)
                    if marker.last_clean is not None:
                        verified.add_metric(label, max(0.0, now - marker.last_clean))
        for family in (up, lag, synced, backing, changes, shipped, verified, verify_ok):
            # An empty family would still print HELP/TYPE lines; leave it out entirely.
            if family.samples:
                yield family


def parse_addr(addr: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); ``:PORT`` listens on every IPv4 interface, ``[v6]:PORT`` on v6."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr for every scrape."""

    def log_message(self, format: str, *args: Any) -> None:
        """Drop the line."""


class MetricsServer:
    """Serves the collector at ``/metrics`` (404 elsewhere) from a background thread."""

    def __init__(self, addr: str, collector: BakeliteCollector) -> None:
        self.addr = addr
        registry = CollectorRegistry(auto_describe=True)
        registry.register(collector)
        metrics_app = make_wsgi_app(registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO", "") != "/metrics":
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"not found: the metrics are at /metrics\n"]
            result: Iterable[bytes] = metrics_app(environ, start_response)
            return result

        self._app = app
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        """Bind and serve; return the URL (a failure to bind is a BakeliteError: the daemon stops)."""
        host, port = parse_addr(self.addr)
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]

            class Server(ThreadingWSGIServer):
                address_family = family

            server: WSGIServer = make_server(host, port, self._app, Server, handler_class=_QuietHandler)
        except OSError as e:
            raise BakeliteError(
                f"cannot serve metrics on {self.addr}: {e.strerror or e}",
                hint="pick a free port with --metrics-addr or [daemon] metrics_addr",
            ) from e
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="bakelite-metrics", daemon=True)
        self._thread.start()
        bound = server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{bound}/metrics"
        logger.info("serving metrics at %s", url, extra={"url": url})
        return url

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
