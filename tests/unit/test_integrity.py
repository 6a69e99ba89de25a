"""The parallel integrity check finds what one PRAGMA integrity_check finds, and nothing else."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bakelite.sqlite import integrity
from bakelite.sqlite.integrity import (
    FULL_CHECK,
    QUICK_CHECK,
    WALK_CACHE_KIB,
    Check,
    TableShape,
    check_integrity,
    plan_checks,
    quote_identifier,
    share_caches,
)

ODD = 't "x'  # a table name that needs quoting


def _pragma(path: Path, pragma: str) -> list[str]:
    con = sqlite3.connect(path)
    try:
        return [r[0] for r in con.execute(f"PRAGMA {pragma}") if r[0] != "ok"]
    finally:
        con.close()


def _full(path: Path) -> list[str]:
    return _pragma(path, "integrity_check")


def _quick(path: Path) -> list[str]:
    return _pragma(path, "quick_check")


def _make(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None)
    q = quote_identifier(ODD)
    con.executescript(
        f"CREATE TABLE {q}(a INTEGER, b TEXT); CREATE INDEX i_b ON {q}(b);"
        "CREATE TABLE blobs(z BLOB); CREATE TABLE kv(k TEXT PRIMARY KEY, v) WITHOUT ROWID;"
    )
    con.execute("BEGIN")
    con.executemany(f"INSERT INTO {q} VALUES (?, ?)", ((k, str(k * 7)) for k in range(3000)))
    con.executemany("INSERT INTO blobs VALUES (randomblob(?))", ((3000,) for _ in range(40)))
    con.executemany("INSERT INTO kv VALUES (?, ?)", ((f"k{k}", k) for k in range(500)))
    con.execute("COMMIT")
    return con


def _make_index_disagree(path: Path) -> None:
    """A database whose index i_b holds column b's values while the schema says it indexes a."""
    con = _make(path)
    con.execute("PRAGMA writable_schema=ON")
    con.execute(
        "UPDATE sqlite_schema SET sql = ? WHERE name = 'i_b'",
        (f"CREATE INDEX i_b ON {quote_identifier(ODD)}(a)",),
    )
    con.close()


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_a_sound_database_passes(tmp_path: Path, workers: int) -> None:
    db = tmp_path / "ok.db"
    _make(db).close()
    assert check_integrity(db, workers=workers) == [] == _full(db)


@pytest.mark.parametrize("workers", [1, 3])
def test_an_index_that_disagrees_with_its_table_is_found(tmp_path: Path, workers: int) -> None:
    # The index holds column b's values but the schema now says it indexes a: structurally sound
    # (quick_check passes), wrong in content (only the index cross-check sees it).
    db = tmp_path / "idx.db"
    _make_index_disagree(db)
    assert _quick(db) == []
    full = _full(db)
    assert full
    assert check_integrity(db, workers=workers) == full


@pytest.mark.parametrize("workers", [1, 2])
def test_pages_no_table_owns_are_found(tmp_path: Path, workers: int) -> None:
    # A table's entry removed from the schema: its pages belong to nothing, which only the
    # whole-file page accounting (quick_check's part) sees.
    db = tmp_path / "orphan.db"
    con = _make(db)
    con.execute("PRAGMA writable_schema=ON")
    con.execute("DELETE FROM sqlite_schema WHERE name = 'blobs'")
    con.close()
    full = _full(db)
    assert full and "never used" in full[0]
    assert check_integrity(db, workers=workers) == full


def test_a_file_sqlite_cannot_read_raises(tmp_path: Path) -> None:
    db = tmp_path / "junk.db"
    db.write_bytes(b"not a database at all" * 500)
    with pytest.raises(sqlite3.DatabaseError):
        check_integrity(db, workers=2)


def _record_runs(monkeypatch: pytest.MonkeyPatch, refuse_per_table: bool = False) -> list[str]:
    """Record every statement check_integrity runs; optionally refuse the per-table form."""
    ran: list[str] = []
    real = integrity._run

    def spy(path: Path, check: Check) -> list[str]:
        ran.append(check.statement)
        if refuse_per_table and check.statement.startswith("PRAGMA integrity_check("):
            raise sqlite3.OperationalError("no such module: fts9")
        return real(path, check)

    monkeypatch.setattr(integrity, "_run", spy)
    return ran


def test_an_old_sqlite_runs_the_single_full_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "ok.db"
    _make(db).close()
    ran = _record_runs(monkeypatch)
    monkeypatch.setattr(integrity.sqlite3, "sqlite_version_info", (3, 32, 3))
    assert check_integrity(db, workers=4) == []
    assert ran == [FULL_CHECK]


def test_a_table_the_per_table_form_refuses_falls_back_to_the_full_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "ok.db"
    _make(db).close()
    ran = _record_runs(monkeypatch, refuse_per_table=True)
    assert check_integrity(db, workers=2) == []
    assert ran[-1] == FULL_CHECK


names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=12
).filter(lambda n: not n.lower().startswith("sqlite_"))  # SQLite reserves those names


shapes = st.dictionaries(
    names, st.tuples(st.integers(0, 5), st.one_of(st.none(), st.integers(0, 10**6))), min_size=1, max_size=8
).map(lambda d: [TableShape(n, k, None if k == 0 else kib) for n, (k, kib) in d.items()])


@given(shapes, st.integers(1, 8), st.integers(1, 10**6))
def test_the_plan_checks_every_table_once_and_quick_checks_once(
    tables: list[TableShape], workers: int, budget: int
) -> None:
    plan = [c.statement for c in plan_checks(tables, workers=workers, budget_kib=budget)]
    assert plan.count(QUICK_CHECK) == 1
    per_table = [s for s in plan if s != QUICK_CHECK]
    assert sorted(per_table) == sorted(f"PRAGMA integrity_check({quote_identifier(t.name)})" for t in tables)
    # Tables with indexes (the slow part) come before quick_check, the others after it.
    q = plan.index(QUICK_CHECK)
    for t in tables:
        before = plan.index(f"PRAGMA integrity_check({quote_identifier(t.name)})") < q
        assert before == (t.indexes > 0)


def test_the_biggest_indexes_go_first_and_get_the_most_cache() -> None:
    tables = [TableShape("small", 3, 5000), TableShape("blobs", 0), TableShape("big", 1, 70_000)]
    plan = plan_checks(tables, workers=4, budget_kib=64 * 1024)
    assert [c.statement for c in plan] == [
        'PRAGMA integrity_check("big")',
        'PRAGMA integrity_check("small")',
        QUICK_CHECK,
        'PRAGMA integrity_check("blobs")',
    ]
    big, small, quick, blobs = (c.cache_kib for c in plan)
    assert quick == blobs == WALK_CACHE_KIB  # a single walk gains nothing from more
    assert small == 5000 + 500 + 1024  # all it wants: its indexes and its table's pages
    assert big == 64 * 1024 - small - 2 * WALK_CACHE_KIB  # the rest of the budget


@given(st.lists(st.integers(1, 10**6), max_size=12), st.integers(1, 8), st.integers(1, 10**6))
def test_shared_caches_fit_the_budget_whichever_run_together(
    wanted: list[int], workers: int, budget: int
) -> None:
    caches = share_caches(wanted, workers=workers, budget_kib=budget)
    assert len(caches) == len(wanted)
    floor = max(1, min(WALK_CACHE_KIB, budget // workers))
    for want, got in zip(wanted, caches, strict=True):
        assert floor <= got <= max(floor, want)
    # A budget below 1 KiB per worker cannot be met: each connection gets that floor of 1 KiB.
    assert sum(sorted(caches, reverse=True)[:workers]) <= max(budget, workers * floor)
    # Nothing is left on the table: had the level been one higher, the worst set would not fit.
    top = sorted(zip(wanted, caches, strict=True), reverse=True)[:workers]
    capped = sum(1 for want, got in top if got < want)
    if capped:
        assert sum(got for _, got in top) + capped > budget


def test_an_empty_schema_gets_the_full_check() -> None:
    assert plan_checks([], workers=4, budget_kib=1024) == [Check(FULL_CHECK, 1024)]


def test_index_sizes_come_from_the_file(tmp_path: Path) -> None:
    db = tmp_path / "ok.db"
    _make(db).close()
    shapes = {t.name: t for t in integrity._tables(db)}
    assert shapes[ODD].indexes == 1 and shapes[ODD].index_kib
    assert shapes["blobs"] == TableShape("blobs", 0, 0)


@given(names)
def test_quoted_names_round_trip_through_sqlite(name: str) -> None:
    con = sqlite3.connect(":memory:")
    try:
        con.execute(f"CREATE TABLE {quote_identifier(name)}(x)")
        assert con.execute("SELECT name FROM sqlite_schema").fetchone()[0] == name
        assert con.execute(f"PRAGMA integrity_check({quote_identifier(name)})").fetchone()[0] == "ok"
    finally:
        con.close()


def test_without_index_sizes_the_check_still_finds_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A SQLite built without dbstat: the plan shares the budget blindly, the verdict is the same.
    db = tmp_path / "idx.db"
    _make_index_disagree(db)
    monkeypatch.setattr(integrity, "_index_kib", lambda conn, names: None)
    assert all(t.index_kib is None for t in integrity._tables(db))
    assert check_integrity(db, workers=3) == _full(db) != []
