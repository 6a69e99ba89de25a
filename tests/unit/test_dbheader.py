"""Parsing the 100-byte SQLite database header of real database files."""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path

import pytest

from bakelite.errors import DatabaseError
from bakelite.sqlite.dbheader import DB_HEADER_SIZE, SQLITE_MAGIC, DbHeader, parse_db_header


def make_db(path: Path, page_size: int, journal_mode: str, rows: int = 20) -> bytes:
    """Create a closed database file and return its bytes."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute(f"PRAGMA page_size={page_size}")
    con.execute(f"PRAGMA journal_mode={journal_mode}")
    con.execute("CREATE TABLE t(v BLOB)")
    for _ in range(rows):
        con.execute("INSERT INTO t VALUES (randomblob(700))")
    con.close()  # checkpoints a WAL-mode database into the file
    return path.read_bytes()


@pytest.mark.parametrize("page_size", [512, 4096, 32768, 65536])
@pytest.mark.parametrize("journal_mode", ["WAL", "DELETE"])
def test_real_database_headers(tmp_path: Path, page_size: int, journal_mode: str) -> None:
    data = make_db(tmp_path / "x.db", page_size, journal_mode)
    header = parse_db_header(data)
    assert header.page_size == page_size  # 65536 is stored as 1 in the database header
    assert header.db_pages == len(data) // page_size
    assert header.in_header_size_valid
    version = 2 if journal_mode == "WAL" else 1
    assert (header.write_version, header.read_version) == (version, version)
    assert header.is_wal_mode == (journal_mode == "WAL")
    assert header.change_counter == header.version_valid_for > 0


def test_page_size_65536_is_stored_as_one(tmp_path: Path) -> None:
    data = make_db(tmp_path / "x.db", 65536, "WAL", rows=1)
    assert struct.unpack_from(">H", data, 16) == (1,)
    assert parse_db_header(data).page_size == 65536


def test_fields_from_hand_built_header() -> None:
    raw = bytearray(DB_HEADER_SIZE)
    raw[:16] = SQLITE_MAGIC
    struct.pack_into(">H", raw, 16, 4096)
    raw[18], raw[19] = 2, 2
    struct.pack_into(">II", raw, 24, 7, 33)
    struct.pack_into(">I", raw, 92, 7)
    assert parse_db_header(bytes(raw)) == DbHeader(4096, 2, 2, 7, 33, 7)
    assert parse_db_header(bytearray(raw)) == parse_db_header(memoryview(raw))
    # Only the first 100 bytes matter.
    assert parse_db_header(bytes(raw) + b"\xff" * 4000) == parse_db_header(bytes(raw))


def test_in_header_size_rules() -> None:
    base = DbHeader(4096, 2, 2, change_counter=5, db_pages=10, version_valid_for=5)
    assert base.in_header_size_valid
    # Written by a pre-3.7.0 SQLite (or a tool) that did not keep the size up to date.
    assert not DbHeader(4096, 2, 2, change_counter=6, db_pages=10, version_valid_for=5).in_header_size_valid
    assert not DbHeader(4096, 2, 2, change_counter=5, db_pages=0, version_valid_for=5).in_header_size_valid


def test_wal_mode_needs_both_version_bytes() -> None:
    assert DbHeader(4096, 2, 2, 1, 1, 1).is_wal_mode
    assert not DbHeader(4096, 2, 1, 1, 1, 1).is_wal_mode
    assert not DbHeader(4096, 1, 2, 1, 1, 1).is_wal_mode
    assert not DbHeader(4096, 1, 1, 1, 1, 1).is_wal_mode


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"SQLite format 3\x00",
        SQLITE_MAGIC + bytes(83),  # 99 bytes
        b"SQLite format 2\x00" + bytes(84),
        b"\x00" * 4096,
        b"hello, world\n" * 100,
    ],
    ids=["empty", "magic-only", "99-bytes", "wrong-magic", "zeros", "text"],
)
def test_not_a_sqlite_database(data: bytes) -> None:
    with pytest.raises(DatabaseError, match="is not a SQLite database") as info:
        parse_db_header(data, name="/srv/app.db")
    assert info.value.message == "/srv/app.db is not a SQLite database"
    assert info.value.detail


def test_error_without_a_name_still_reads_well() -> None:
    with pytest.raises(DatabaseError) as info:
        parse_db_header(b"nope")
    assert info.value.message == "the file is not a SQLite database"


def test_error_names_a_path_object(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError) as info:
        parse_db_header(b"", tmp_path / "x.db")
    assert info.value.message == f"{tmp_path / 'x.db'} is not a SQLite database"


@pytest.mark.parametrize("raw_page_size", [0, 2, 256, 1000, 4095])
def test_invalid_page_size_is_reported(raw_page_size: int) -> None:
    raw = bytearray(SQLITE_MAGIC + bytes(DB_HEADER_SIZE - len(SQLITE_MAGIC)))
    struct.pack_into(">H", raw, 16, raw_page_size)
    with pytest.raises(DatabaseError, match="corrupt database header") as info:
        parse_db_header(bytes(raw), name="app.db")
    assert str(raw_page_size) in (info.value.detail or "")
