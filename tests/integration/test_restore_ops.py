"""Restore end to end over replicas built from a real SQLite database's successive states.

No daemon: ``tests/replica_builder.py`` diffs the pages of each committed state into commit records
and writes snapshots and change-sets exactly as the daemon lays them out.  Every restore is checked
against the recorded state it should reproduce (page-identical bytes and a hash of every row), and
every failure must leave nothing at the output and no temp file behind.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bakelite.config.model import Config, Database, Encryption
from bakelite.errors import (
    BakeliteError,
    ChainBrokenError,
    CorruptionError,
    EncryptionError,
    FormatVersionError,
    IntegrityCheckError,
    NoReplicaError,
    OutputExistsError,
    RestoreTargetError,
)
from bakelite.format import layout
from bakelite.ops import restore as restore_mod
from bakelite.ops.catalog import list_backups, restore_points
from bakelite.ops.listing import list_databases, list_restore_points, render_fleet_text, render_listing_text
from bakelite.ops.restore import RestoreReport, restore, restore_to_path
from bakelite.ops.restore_text import render_restore_text
from bakelite.ops.timeparse import format_time
from bakelite.storage.file import FileStorage
from bakelite.storage.memory import MemoryStorage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from replica_builder import ReplicaBuilder, Workload, content_hash, state_hash

T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z
# Commit after which each change-set is cut: sizes 2, 1, 4, 3, 1, 4, 3, 6 (single-commit ones too).
FLUSH_AFTER = {2, 3, 7, 10, 11, 15, 18, 24}


def build_history(
    storage: FileStorage | MemoryStorage, tmp: Path, db: str = "app", t0: float = T0
) -> ReplicaBuilder:
    """A backup of 24 commits: overflow blobs, growth, a mass delete and VACUUM (shrink), schema changes."""
    rng = random.Random(f"{db}-{t0}")
    work = Workload(tmp / f"{db}-{int(t0)}-src.db")
    rb = ReplicaBuilder(storage, db)
    t = t0
    rb.new_backup(
        work.run(
            "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, body BLOB)",
            "CREATE INDEX items_name ON items(name)",
        ),
        t,
    )
    for i in range(1, 25):
        t += rng.choice([0.5, 1.0, 2.25, 7.0])
        if i <= 8 or 12 <= i <= 18:
            rows = [(f"n{i}-{k}", rng.randbytes(rng.choice([100, 3000, 9000, 20000]))) for k in range(3)]
            if i == 15:
                rows.append(("big", rng.randbytes(300_000)))  # a long overflow chain in one commit
            state = work.run(*[("INSERT INTO items(name, body) VALUES (?, ?)", r) for r in rows])
        elif i == 9:
            state = work.run(("UPDATE items SET body = ? WHERE id % 3 = 0", (rng.randbytes(30_000),)))
        elif i == 10:
            state = work.run("DELETE FROM items WHERE id % 5 != 0")
        elif i == 11:
            state = work.vacuum()
        elif i == 19:
            state = work.run(
                "CREATE TABLE notes(k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID", "DROP INDEX items_name"
            )
        else:
            state = work.run(
                ("UPDATE items SET name = ? WHERE id = (SELECT max(id) FROM items)", (f"u{i}",)),
                ("INSERT INTO notes VALUES (?, ?)", (f"k{i}", "x" * rng.randint(1, 5000))),
            )
        rb.commit(state, t)
        if i in FLUSH_AFTER:
            rb.flush()
    work.close()
    return rb


@pytest.fixture
def store(tmp_path: Path) -> FileStorage:
    return FileStorage(tmp_path / "store")


@pytest.fixture
def rb(store: FileStorage, tmp_path: Path) -> ReplicaBuilder:
    return build_history(store, tmp_path)


@pytest.fixture
def database(tmp_path: Path) -> Database:
    (tmp_path / "live").mkdir()
    return Database(name="app", path=tmp_path / "live" / "app.db")


def do_restore(
    database: Database, storage: FileStorage | MemoryStorage, out: Path, ts: str | None = None
) -> RestoreReport:
    return restore(
        database, storage, output=out, timestamp=ts, if_db_not_exists=False, if_replica_exists=False
    )


def assert_nothing_left(out: Path) -> None:
    assert not out.exists()
    assert not Path(f"{out}{restore_mod.TMP_SUFFIX}").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == []


# -- correct restores ---------------------------------------------------------------------------


def test_history_shape(rb: ReplicaBuilder) -> None:
    sizes = [len(rb.history[i].state) for i in range(len(rb.history))]
    assert sizes[11] < sizes[10], "VACUUM must shrink the file"
    assert max(sizes) > sizes[0] * 20, "the database must grow"
    assert len([k for k in rb.keys if "/L0/" in k]) == len(FLUSH_AFTER)


def test_latest_is_page_identical(
    rb: ReplicaBuilder, store: FileStorage, database: Database, tmp_path: Path
) -> None:
    out = tmp_path / "out" / "latest.db"
    report = do_restore(database, store, out)
    assert out.read_bytes() == rb.history[-1].state
    assert report.integrity_check == "ok"
    assert report.landed_seq == 24
    assert report.backup == rb.backup
    assert report.changesets_applied == report.lineage_verified == report.lineage_total == len(FLUSH_AFTER)
    assert report.db_pages * report.page_size == len(rb.history[-1].state) == report.db_bytes
    assert report.landed_at is not None and report.landed_at.timestamp() == rb.history[-1].time
    on_store = sum(p.stat().st_size for p in store.root.rglob("*") if p.is_file())
    assert report.bytes_downloaded == on_store
    assert not Path(f"{out}{restore_mod.TMP_SUFFIX}").exists()


def test_summary_text(rb: ReplicaBuilder, store: FileStorage, database: Database, tmp_path: Path) -> None:
    out = tmp_path / "dr.db"
    text = render_restore_text(do_restore(database, store, out))
    lines = text.splitlines()
    assert lines[0] == f'Restored "app" -> {out}'
    assert lines[1] == f"  target: latest -> {format_time(rb.history[-1].time)}"
    assert lines[2] == f"  applied: full backup + {len(FLUSH_AFTER)} incremental change-set(s)"
    assert (
        lines[3] == f"  ✓ lineage verified: {len(FLUSH_AFTER)}/{len(FLUSH_AFTER)} change-set(s), hashes match"
    )
    assert re.fullmatch(r"  size: \d+ pages x 4096 bytes \(\d+(\.\d+)? (B|KiB|MiB)\)", lines[4])
    assert re.fullmatch(r"  downloaded: \d+(\.\d)? (B|KiB|MiB)", lines[5])
    assert lines[6] == "  ✓ integrity_check: ok"
    ts = format_time(rb.history[5].time)
    text = render_restore_text(do_restore(database, store, tmp_path / "pit.db", ts))
    assert text.splitlines()[1] == f"  target: {ts} -> {ts}"


def test_summary_text_matches_the_operations_guide() -> None:
    at = datetime(2026, 5, 30, 11, 55, 3, tzinfo=UTC)
    report = RestoreReport(
        database="app",
        output=Path("/tmp/dr.db"),
        requested="2026-05-30T11:55:03Z",
        requested_at=at,
        landed_at=at,
        landed_seq=1234,
        backup="20260530T000000000Z-00000000",
        changesets_applied=14,
        lineage_verified=14,
        lineage_total=14,
        page_size=4096,
        db_pages=280000,
        db_bytes=280000 * 4096,
        bytes_downloaded=int(412.5 * 1024 * 1024),
        integrity_check="ok",
    )
    assert render_restore_text(report) == textwrap.dedent(
        """\
        Restored "app" -> /tmp/dr.db
          target: 2026-05-30T11:55:03Z -> 2026-05-30T11:55:03Z
          applied: full backup + 14 incremental change-set(s)
          ✓ lineage verified: 14/14 change-set(s), hashes match
          size: 280000 pages x 4096 bytes (1.07 GiB)
          downloaded: 412.5 MiB
          ✓ integrity_check: ok"""
    )


def test_awkward_output_path(
    rb: ReplicaBuilder, store: FileStorage, database: Database, tmp_path: Path
) -> None:
    out = tmp_path / "with space #1?" / "new dir" / "a%20b.db"
    do_restore(database, store, out)
    assert out.read_bytes() == rb.history[-1].state


def test_every_commit_time_restores_that_state(
    rb: ReplicaBuilder, store: FileStorage, database: Database, tmp_path: Path
) -> None:
    for commit in rb.history:
        out = tmp_path / f"at-{commit.seq}.db"
        report = do_restore(database, store, out, format_time(commit.time))
        assert report.landed_seq == commit.seq
        assert out.read_bytes() == commit.state, f"seq {commit.seq}"
        assert content_hash(out) == state_hash(commit.state, tmp_path / "scratch.db")
        out.unlink()


def test_between_two_commits_lands_on_the_earlier(
    rb: ReplicaBuilder, store: FileStorage, database: Database, tmp_path: Path
) -> None:
    for a, b in [
        (rb.history[3], rb.history[4]),
        (rb.history[10], rb.history[11]),
        (rb.history[0], rb.history[1]),
    ]:
        mid = (a.time + b.time) / 2
        ts = f"{format_time(mid)[:-1]}Z"
        out = tmp_path / f"mid-{a.seq}.db"
        report = do_restore(database, store, out, ts)
        assert report.landed_seq == a.seq
        assert out.read_bytes() == a.state


def test_relative_timestamp(
    rb: ReplicaBuilder, store: FileStorage, database: Database, tmp_path: Path
) -> None:
    now = rb.history[-1].time + 3600
    report = restore(
        database,
        store,
        output=tmp_path / "rel.db",
        timestamp="1 hour ago",
        if_db_not_exists=False,
        if_replica_exists=False,
        now=now,
    )
    assert report.landed_seq == 24
    report = restore(
        database,
        store,
        output=tmp_path / "rel2.db",
        timestamp="2 days ago",
        if_db_not_exists=False,
        if_replica_exists=False,
        now=now + 2 * 86400 - 3600 + (rb.history[7].time - rb.history[-1].time),
    )
    assert report.landed_seq == 7


def test_after_the_newest_gives_the_newest(
    rb: ReplicaBuilder, store: FileStorage, database: Database, tmp_path: Path
) -> None:
    report = do_restore(database, store, tmp_path / "future.db", "2099-01-01T00:00:00Z")
    assert report.landed_seq == 24


def test_before_the_oldest_names_it(
    rb: ReplicaBuilder, store: FileStorage, database: Database, tmp_path: Path
) -> None:
    out = tmp_path / "out" / "early.db"
    out.parent.mkdir()
    with pytest.raises(RestoreTargetError) as e:
        do_restore(database, store, out, "2020-01-01T00:00:00Z")
    assert format_time(T0) in e.value.message
    assert_nothing_left(out)


def test_output_defaults_to_the_database_path_and_is_never_overwritten(
    rb: ReplicaBuilder, store: FileStorage, database: Database
) -> None:
    report = restore(database, store, timestamp=None, if_db_not_exists=False, if_replica_exists=False)
    assert report.output == database.path
    assert database.path.read_bytes() == rb.history[-1].state
    database.path.write_bytes(b"the live database")
    with pytest.raises(OutputExistsError) as e:
        restore(database, store, timestamp=None, if_db_not_exists=False, if_replica_exists=False)
    assert str(database.path) in e.value.message
    assert database.path.read_bytes() == b"the live database"


def test_stale_sidecars_and_temp_file_are_cleared(
    rb: ReplicaBuilder, store: FileStorage, database: Database, tmp_path: Path
) -> None:
    out = tmp_path / "side" / "app.db"
    out.parent.mkdir()
    for suffix in ("-wal", "-shm", "-journal", ".tmp-restore"):
        Path(f"{out}{suffix}").write_bytes(b"stale" * 1000)
    do_restore(database, store, out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["app.db"]
    assert out.read_bytes() == rb.history[-1].state


def test_streamed_change_sets_and_a_tiny_prefetch_budget(
    rb: ReplicaBuilder,
    store: FileStorage,
    database: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(restore_mod, "WHOLE_OBJECT_MAX", 20_000)  # some whole, some streamed
    monkeypatch.setattr(restore_mod, "PREFETCH_BUDGET", 1)
    monkeypatch.setattr(restore_mod, "KEEP_RAW_MAX", 10_000)  # big ones decode twice
    for commit in (rb.history[-1], rb.history[13]):
        out = tmp_path / f"s{commit.seq}.db"
        report = do_restore(database, store, out, format_time(commit.time))
        assert out.read_bytes() == commit.state
        assert report.landed_seq == commit.seq


def test_restore_to_path_for_verify(rb: ReplicaBuilder, store: FileStorage, tmp_path: Path) -> None:
    result = restore_to_path(store, "app", rb.backup, None, tmp_path / "v.db")
    assert result.seq == 24 and (tmp_path / "v.db").read_bytes() == rb.history[-1].state
    result = restore_to_path(store, "app", rb.backup, 11, tmp_path / "v11.db")
    assert result.seq == 11 and (tmp_path / "v11.db").read_bytes() == rb.history[11].state
    assert result.time == rb.history[11].time


def test_progress_reports_bytes(
    rb: ReplicaBuilder, store: FileStorage, database: Database, tmp_path: Path
) -> None:
    seen: list[tuple[int, int | None]] = []
    report = restore(
        database,
        store,
        output=tmp_path / "p.db",
        timestamp=None,
        if_db_not_exists=False,
        if_replica_exists=False,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen and seen[-1][0] == seen[-1][1] == report.bytes_downloaded
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


# -- guards -------------------------------------------------------------------------------------


def test_if_db_not_exists(rb: ReplicaBuilder, store: FileStorage, database: Database) -> None:
    database.path.write_bytes(b"live")
    report = restore(database, store, timestamp=None, if_db_not_exists=True, if_replica_exists=False)
    assert report.skipped and report.skip_reason is not None and "exists" in report.skip_reason
    assert database.path.read_bytes() == b"live"
    assert render_restore_text(report).startswith('Skipped restore of "app"')


def test_if_replica_exists(database: Database, tmp_path: Path) -> None:
    empty = FileStorage(tmp_path / "empty")
    with pytest.raises(NoReplicaError):
        restore(database, empty, timestamp=None, if_db_not_exists=False, if_replica_exists=False)
    report = restore(database, empty, timestamp=None, if_db_not_exists=True, if_replica_exists=True)
    assert report.skipped and not database.path.exists()
    # An incomplete backup (no snapshot: a crash mid-bootstrap) is not a replica.
    rb = build_history(empty, tmp_path)
    empty.delete([layout.snapshot_key("app", rb.backup)])
    report = restore(database, empty, timestamp=None, if_db_not_exists=False, if_replica_exists=True)
    assert report.skipped and not database.path.exists()
    assert_nothing_left(database.path)


def test_bad_timestamp_is_a_usage_error_before_anything_else(database: Database, tmp_path: Path) -> None:
    from bakelite.errors import UsageError

    with pytest.raises(UsageError):
        restore(
            database,
            MemoryStorage(),
            timestamp="last tuesday",
            if_db_not_exists=True,
            if_replica_exists=True,
        )


# -- several backups ----------------------------------------------------------------------------


def test_multi_backup_replica_picks_the_right_backup(
    store: FileStorage, database: Database, tmp_path: Path
) -> None:
    first = build_history(store, tmp_path, t0=T0)
    t1 = first.history[-1].time + 100
    second = build_history(store, tmp_path, t0=t1)
    # A newer incomplete backup must be skipped, and CURRENT is only advisory.
    third = build_history(store, tmp_path, t0=t1 + 1000)
    store.delete([layout.snapshot_key("app", third.backup)])
    store.put(layout.current_key("app"), first.backup.encode())
    assert len({first.backup, second.backup, third.backup}) == 3

    cases = [
        (None, second.history[-1]),
        (format_time(first.history[6].time), first.history[6]),
        (format_time(first.history[-1].time + 50), first.history[-1]),  # in the gap between backups
        (format_time(t1), second.history[0]),
        (format_time(second.history[17].time), second.history[17]),
        (format_time(t1 + 5000), second.history[-1]),
    ]
    for i, (ts, expected) in enumerate(cases):
        out = tmp_path / f"m{i}.db"
        report = do_restore(database, store, out, ts)
        assert (report.backup, report.landed_seq) == (expected.backup, expected.seq), ts
        assert out.read_bytes() == expected.state

    listing = list_restore_points(database, store, verbose=True)
    assert [b.backup for b in listing.backups] == [first.backup, second.backup, third.backup]
    assert [b.complete for b in listing.backups] == [True, True, False]
    assert listing.current == first.backup
    text = render_listing_text(listing)
    assert format_time(T0) in text and "incomplete" in text and "change-set" in text
    fleet = list_databases(Config(databases=(database,)), {"app": store})
    row = fleet.databases[0]
    assert (row.backups, row.incomplete, row.exit_code) == (2, 1, 0)
    assert row.oldest is not None and row.oldest.timestamp() == T0
    assert row.newest is not None and row.newest.timestamp() == second.history[-1].time
    assert "app" in render_fleet_text(fleet)


# -- compaction-shaped replicas -----------------------------------------------------------------


def test_compacted_objects_restore_with_or_without_l0(tmp_path: Path, database: Database) -> None:
    store = MemoryStorage()
    rb = build_history(store, tmp_path)
    l0 = [k for k in rb.keys if "/L0/" in k]
    # Merge the change-sets covering seqs 4..11 (through the delete and VACUUM) into one L1 object.
    merged = [k for k in l0 if 4 <= layout.parse_key("app", k).first <= 11]  # type: ignore[union-attr]
    rb.compact(merged, delete=False)
    # With both present, L0 keeps every boundary: every commit is still reachable exactly.
    for commit in (rb.history[6], rb.history[-1]):
        out = tmp_path / f"both-{commit.seq}.db"
        report = do_restore(database, store, out, format_time(commit.time))
        assert out.read_bytes() == commit.state and report.landed_seq == commit.seq
    store.delete(merged)
    out = tmp_path / "l1-latest.db"
    report = do_restore(database, store, out)
    assert out.read_bytes() == rb.history[-1].state
    assert report.changesets_applied == len(l0) - len(merged) + 1
    # Inside the compacted window only its last boundary is left: the target lands before it.
    out = tmp_path / "l1-inside.db"
    report = do_restore(database, store, out, format_time(rb.history[6].time))
    assert report.landed_seq == 3 and out.read_bytes() == rb.history[3].state
    out = tmp_path / "l1-end.db"
    report = do_restore(database, store, out, format_time(rb.history[11].time))
    assert report.landed_seq == 11 and out.read_bytes() == rb.history[11].state


# -- damaged replicas ---------------------------------------------------------------------------


def _path(store: FileStorage, key: str) -> Path:
    return store.root / key


def _changesets(rb: ReplicaBuilder) -> list[str]:
    return [k for k in rb.keys if "/L0/" in k]


def flip_payload_bit(store: FileStorage, rb: ReplicaBuilder) -> tuple[type[BakeliteError], str]:
    key = _changesets(rb)[3]
    p = _path(store, key)
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x10
    p.write_bytes(bytes(data))
    return CorruptionError, key


def flip_snapshot_bit(store: FileStorage, rb: ReplicaBuilder) -> tuple[type[BakeliteError], str]:
    key = layout.snapshot_key("app", rb.backup)
    p = _path(store, key)
    data = bytearray(p.read_bytes())
    data[-100] ^= 0x01
    p.write_bytes(bytes(data))
    return CorruptionError, key


def truncate_object(store: FileStorage, rb: ReplicaBuilder) -> tuple[type[BakeliteError], str]:
    key = _changesets(rb)[-1]
    p = _path(store, key)
    p.write_bytes(p.read_bytes()[:-30])
    return CorruptionError, key


def delete_middle(store: FileStorage, rb: ReplicaBuilder) -> tuple[type[BakeliteError], str]:
    key = _changesets(rb)[2]  # seqs 4..7
    store.delete([key])
    return ChainBrokenError, "seqs 4..7"


def swap_two(store: FileStorage, rb: ReplicaBuilder) -> tuple[type[BakeliteError], str]:
    a, b = _changesets(rb)[1], _changesets(rb)[2]
    da, db_ = _path(store, a).read_bytes(), _path(store, b).read_bytes()
    _path(store, a).write_bytes(db_)
    _path(store, b).write_bytes(da)
    return ChainBrokenError, a


def newer_format(store: FileStorage, rb: ReplicaBuilder) -> tuple[type[BakeliteError], str]:
    key = _changesets(rb)[4]
    p = _path(store, key)
    data = bytearray(p.read_bytes())
    data[4:6] = (99).to_bytes(2, "big")
    p.write_bytes(bytes(data))
    return FormatVersionError, "99"


DAMAGES: dict[str, Callable[[FileStorage, ReplicaBuilder], tuple[type[BakeliteError], str]]] = {
    "bit-flip": flip_payload_bit,
    "snapshot-bit-flip": flip_snapshot_bit,
    "truncated": truncate_object,
    "missing": delete_middle,
    "reordered": swap_two,
    "newer-format": newer_format,
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_replica_fails_cleanly(
    damage: str, rb: ReplicaBuilder, store: FileStorage, database: Database, tmp_path: Path
) -> None:
    error, needle = DAMAGES[damage](store, rb)
    out = tmp_path / "out" / "app.db"
    out.parent.mkdir()
    with pytest.raises(error) as e:
        do_restore(database, store, out)
    assert needle in e.value.one_line()
    assert_nothing_left(out)


def test_damage_past_the_target_does_not_block_an_earlier_point(
    rb: ReplicaBuilder, store: FileStorage, database: Database, tmp_path: Path
) -> None:
    delete_middle(store, rb)
    out = tmp_path / "early.db"
    report = do_restore(database, store, out, format_time(rb.history[3].time))
    assert report.landed_seq == 3 and out.read_bytes() == rb.history[3].state
    with pytest.raises(ChainBrokenError):
        do_restore(database, store, tmp_path / "late.db", format_time(rb.history[9].time))


def test_object_copied_from_another_database(store: FileStorage, database: Database, tmp_path: Path) -> None:
    ours = build_history(store, tmp_path, db="app")
    other = build_history(store, tmp_path, db="other", t0=T0 + 1)
    victim = _changesets(ours)[2]
    _path(store, victim).write_bytes(_path(store, _changesets(other)[2]).read_bytes())
    out = tmp_path / "o" / "x.db"
    out.parent.mkdir()
    with pytest.raises(CorruptionError) as e:
        do_restore(database, store, out)
    assert victim in e.value.message and "'other'" in e.value.message
    assert_nothing_left(out)


def test_object_copied_from_another_backup(store: FileStorage, database: Database, tmp_path: Path) -> None:
    first = build_history(store, tmp_path, t0=T0)
    second = build_history(store, tmp_path, t0=T0 + 500)
    victim = _changesets(second)[1]
    _path(store, victim).write_bytes(_path(store, _changesets(first)[1]).read_bytes())
    out = tmp_path / "o" / "x.db"
    out.parent.mkdir()
    with pytest.raises(CorruptionError) as e:
        do_restore(database, store, out)
    assert victim in e.value.message and first.backup in e.value.message
    assert_nothing_left(out)


def test_substitute_with_the_right_identity_breaks_the_lineage(database: Database, tmp_path: Path) -> None:
    # Two different histories written under the same backup id: every key and header identity
    # matches, only the prev links tell the objects apart.
    a_store, b_store = FileStorage(tmp_path / "a"), FileStorage(tmp_path / "b")
    a = build_history(a_store, tmp_path, t0=T0)
    (tmp_path / "b-src").mkdir()
    b = ReplicaBuilder(b_store, "app")
    work = Workload(tmp_path / "b-src" / "src.db")
    b.new_backup(work.run("CREATE TABLE z(x)"), T0, backup=a.backup)
    for i in range(1, 25):
        b.commit(work.run(("INSERT INTO z VALUES (?)", (i,))), T0 + i)
        if i in FLUSH_AFTER:
            b.flush()
    work.close()
    victim = _changesets(a)[3]
    assert victim == _changesets(b)[3]
    _path(a_store, victim).write_bytes(_path(b_store, victim).read_bytes())
    out = tmp_path / "o" / "x.db"
    out.parent.mkdir()
    with pytest.raises(ChainBrokenError) as e:
        do_restore(database, a_store, out)
    assert victim in e.value.message and "predecessor" in e.value.message
    assert_nothing_left(out)


def test_integrity_check_failure_leaves_nothing(database: Database, tmp_path: Path) -> None:
    # A well-formed replica of a file that is not a database: every object verifies, SQLite refuses.
    store = MemoryStorage()
    rb = ReplicaBuilder(store, "app")
    junk = bytearray(os.urandom(4096 * 4))
    junk[16:18] = (4096).to_bytes(2, "big")
    rb.new_backup(bytes(junk), T0)
    out = tmp_path / "o" / "x.db"
    out.parent.mkdir()
    with pytest.raises(IntegrityCheckError):
        do_restore(database, store, out)
    assert_nothing_left(out)


def test_encrypted_object_without_a_key(
    store: FileStorage, rb: ReplicaBuilder, database: Database, tmp_path: Path
) -> None:
    # require_encrypted from the config refuses a plaintext replica (a substitution guard).
    enc_db = Database(name="app", path=database.path, encryption=Encryption(key="x"))
    out = tmp_path / "o" / "x.db"
    out.parent.mkdir()
    with pytest.raises(EncryptionError):
        do_restore(enc_db, store, out)
    assert_nothing_left(out)


def test_catalog_reads_headers_not_objects(rb: ReplicaBuilder, store: FileStorage) -> None:
    reads: list[tuple[str, int]] = []

    class Spy:
        def __getattr__(self, name: str) -> object:
            return getattr(store, name)

        def get_range(self, key: str, start: int, length: int) -> bytes:
            reads.append((key, length))
            return store.get_range(key, start, length)

        def get(self, key: str) -> bytes:
            raise AssertionError(f"whole-object read of {key}")

        def open(self, key: str) -> object:
            raise AssertionError(f"whole-object read of {key}")

    spy = Spy()
    spans = restore_points(spy, "app", list_backups(spy, "app"))  # type: ignore[arg-type]
    assert len(reads) == 1 + len(FLUSH_AFTER)
    assert spans[0].last_seq == 24 and spans[0].first_time == T0


# -- bounded memory -----------------------------------------------------------------------------

_MEMORY_PROBE = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    from bakelite.config.model import Database
    from bakelite.ops.restore import restore
    from bakelite.storage.file import FileStorage

    def peak_kib():
        # ru_maxrss survives fork+exec on Linux (it would report pytest's own peak), so prefer
        # the per-address-space high-water mark; getrusage is the fallback elsewhere.
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    store = FileStorage(sys.argv[1])
    db = Database(name="big", path=Path(sys.argv[2]))
    before = peak_kib()
    report = restore(db, store, timestamp=None, if_db_not_exists=False, if_replica_exists=False)
    after = peak_kib()
    print(before, after, report.db_bytes, report.changesets_applied)
    """
)


@pytest.mark.slow
def test_restore_memory_is_bounded(tmp_path: Path) -> None:
    """Restoring a ~200 MiB database grows peak RSS by well under its size (a memory bound)."""
    store = FileStorage(tmp_path / "store")
    src = tmp_path / "src.db"
    work = Workload(src)
    work.run("CREATE TABLE blobs(id INTEGER PRIMARY KEY, b BLOB)")
    rng = random.Random(7)
    for _ in range(20):
        work.run(*[("INSERT INTO blobs(b) VALUES (?)", (rng.randbytes(1 << 20),)) for _ in range(10)])
    rb = ReplicaBuilder(store, "big")
    rb.new_backup_from_file(src, T0)
    ps = 4096
    t = T0
    # Change-sets on top: one carrying ~30 MiB of pages (fetched whole), and a few small ones.
    for n in (30 * 256, 50, 50, 50):
        t += 1
        before = src.read_bytes()
        work.run(("UPDATE blobs SET b = ? WHERE id = ?", (rng.randbytes(n * ps - 100), rng.randint(1, 200))))
        after = src.read_bytes()
        changed = [
            (i + 1, after[i * ps : (i + 1) * ps])
            for i in range(len(after) // ps)
            if before[i * ps : (i + 1) * ps] != after[i * ps : (i + 1) * ps]
        ]
        del before
        rb.commit_raw(t, changed, len(after) // ps)
        rb.flush()
        final = after
    work.close()
    assert len(final) > 200 * (1 << 20)
    out = tmp_path / "restored.db"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(store.root), str(out)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    before_kib, after_kib, size, applied = (int(x) for x in proc.stdout.split())
    assert size == len(final) and applied == 4
    assert out.read_bytes() == final
    growth_mib = (after_kib - before_kib) / 1024
    assert growth_mib < 100, f"peak RSS grew {growth_mib:.0f} MiB restoring {size >> 20} MiB"
