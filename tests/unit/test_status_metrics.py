"""The metrics collector: exactly the documented series, and absent series really absent."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bakelite.daemon.metrics import BakeliteCollector, MetricsServer, parse_addr
from bakelite.daemon.statusfile import StatusRecord, VerifyMarker, write_marker
from bakelite.errors import BakeliteError

NOW = 1_780_000_000.0
SERIES = {
    "bakelite_up",
    "bakelite_replica_lag_seconds",
    "bakelite_last_synced_seconds",
    "bakelite_backing_off_seconds",
    "bakelite_change_sets",
    "bakelite_bytes_shipped_total",
    "bakelite_last_verified_seconds",
    "bakelite_verify_ok",
}


def scrape(records: list[StatusRecord]) -> dict[str, dict[str, float]]:
    registry = CollectorRegistry()
    registry.register(BakeliteCollector(lambda: records, clock=lambda: NOW))
    text = generate_latest(registry).decode()
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[s.labels["database"]] = s.value
    return out


def rec(tmp_path: Path, name: str, **kw: object) -> StatusRecord:
    base = StatusRecord(
        database=name,
        path=str(tmp_path / f"{name}.db"),
        pid=1,
        started=NOW - 100,
        written=NOW,
        stale_after=40,
        state="replicating",
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_healthy_caught_up_database(tmp_path: Path) -> None:
    (tmp_path / "app.db-wal").write_bytes(b"")
    r = rec(tmp_path, "app", backup="b", last_sync=NOW - 3, changesets=5, bytes_shipped=999)
    m = scrape([r])
    assert m == {
        "bakelite_up": {"app": 1.0},
        "bakelite_replica_lag_seconds": {"app": 0.0},
        "bakelite_last_synced_seconds": {"app": 3.0},
        "bakelite_change_sets": {"app": 5.0},
        "bakelite_bytes_shipped_total": {"app": 999.0},
    }


def test_absence_rules(tmp_path: Path) -> None:
    (tmp_path / "behind.db-wal").write_bytes(b"")
    records = [
        # Starting: no sync yet, no backup, no WAL: only up and the counter.
        rec(tmp_path, "new", state="starting"),
        # Synced once but no -wal file: the lag is omitted, the sync age is not.
        rec(tmp_path, "nowal", last_sync=NOW - 10, backup="b"),
        # Behind, with a WAL.
        rec(tmp_path, "behind", last_sync=NOW - 50, oldest_unshipped=NOW - 42, backup="b"),
        # Failing: backing-off appears, up is 0.
        rec(tmp_path, "sick", state="backing off", failing_since=NOW - 77, attempts=3),
    ]
    m = scrape(records)
    assert set(m) <= SERIES
    assert m["bakelite_up"] == {"new": 0.0, "nowal": 1.0, "behind": 1.0, "sick": 0.0}
    assert m["bakelite_replica_lag_seconds"] == {"behind": 42.0}
    assert m["bakelite_last_synced_seconds"] == {"nowal": 10.0, "behind": 50.0}
    assert m["bakelite_backing_off_seconds"] == {"sick": 77.0}
    assert m["bakelite_change_sets"] == {"nowal": 0.0, "behind": 0.0}
    assert set(m["bakelite_bytes_shipped_total"]) == {"new", "nowal", "behind", "sick"}
    assert "bakelite_verify_ok" not in m and "bakelite_last_verified_seconds" not in m


def test_verify_series_from_the_marker(tmp_path: Path) -> None:
    clean, failed, never_clean = (rec(tmp_path, n) for n in ("clean", "failed", "never"))
    write_marker(tmp_path / "clean.db", VerifyMarker("clean", NOW - 60, "deep", True, (), NOW - 60, "deep"))
    write_marker(
        tmp_path / "failed.db", VerifyMarker("failed", NOW - 5, "shallow", False, ("x",), NOW - 9000, "deep")
    )
    write_marker(tmp_path / "never.db", VerifyMarker("never", NOW - 5, "shallow", False, ("x",), None, None))
    m = scrape([clean, failed, never_clean])
    assert m["bakelite_verify_ok"] == {"clean": 1.0, "failed": 0.0, "never": 0.0}
    # Seconds since the last *clean* verify: absent until there was one.
    assert m["bakelite_last_verified_seconds"] == {"clean": 60.0, "failed": 9000.0}


def test_server_serves_only_metrics_and_reports_a_taken_port(tmp_path: Path) -> None:
    collector = BakeliteCollector(lambda: [rec(tmp_path, "app")], clock=lambda: NOW)
    server = MetricsServer("127.0.0.1:0", collector)
    url = server.start()
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = resp.read().decode()
        assert 'bakelite_up{database="app"} 1.0' in body
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url.replace("/metrics", "/"), timeout=10)
        assert e.value.code == 404
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with pytest.raises(BakeliteError, match="cannot serve metrics"):
            MetricsServer(f"127.0.0.1:{port}", collector).start()
    finally:
        server.stop()


def test_parse_addr() -> None:
    assert parse_addr("127.0.0.1:9090") == ("127.0.0.1", 9090)
    assert parse_addr(":9090") == ("0.0.0.0", 9090)
    assert parse_addr("[::1]:9090") == ("::1", 9090)
