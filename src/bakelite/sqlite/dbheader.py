"""The 100-byte header at the start of a SQLite database file (pure parsing, no I/O).

Format reference: https://www.sqlite.org/fileformat2.html#the_database_header (all big-endian).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Final

from bakelite.errors import DatabaseError

DB_HEADER_SIZE: Final = 100
SQLITE_MAGIC: Final = b"SQLite format 3\x00"
WAL_FILE_FORMAT: Final = 2  # bytes 18/19: 1 = rollback journal, 2 = WAL


@dataclass(frozen=True)
class DbHeader:
    """The fields of the database header that replication depends on."""

    page_size: int  # bytes; the on-disk value 1 means 65536
    write_version: int  # byte 18
    read_version: int  # byte 19
    change_counter: int  # bytes 24..27
    db_pages: int  # bytes 28..31, the "in-header database size"
    version_valid_for: int  # bytes 92..95

    @property
    def is_wal_mode(self) -> bool:
        """True if the file is marked as a WAL-mode database (bytes 18 and 19 are 2)."""
        return self.write_version == WAL_FILE_FORMAT and self.read_version == WAL_FILE_FORMAT

    @property
    def in_header_size_valid(self) -> bool:
        """True if ``db_pages`` can be trusted (SQLite's rule: written by a version that keeps it)."""
        return self.change_counter == self.version_valid_for and self.db_pages > 0


def parse_db_header(
    data: bytes | bytearray | memoryview, name: str | os.PathLike[str] | None = None
) -> DbHeader:
    """Parse the database header at the start of ``data``; ``name`` only labels errors."""
    label = os.fspath(name) if name is not None else "the file"
    head = bytes(data[:DB_HEADER_SIZE])
    if len(head) < DB_HEADER_SIZE or not head.startswith(SQLITE_MAGIC):
        detail = (
            f"it is {len(head)} bytes, shorter than the {DB_HEADER_SIZE}-byte header"
            if len(head) < DB_HEADER_SIZE
            else "the 'SQLite format 3' magic is missing"
        )
        raise DatabaseError(f"{label} is not a SQLite database", detail=detail)
    (raw_page_size,) = struct.unpack_from(">H", head, 16)
    page_size = 65536 if raw_page_size == 1 else raw_page_size
    if not 512 <= page_size <= 65536 or page_size & (page_size - 1):
        raise DatabaseError(
            f"{label} has a corrupt database header", detail=f"invalid page size field {raw_page_size}"
        )
    (change_counter, db_pages) = struct.unpack_from(">II", head, 24)
    (version_valid_for,) = struct.unpack_from(">I", head, 92)
    return DbHeader(
        page_size=page_size,
        write_version=head[18],
        read_version=head[19],
        change_counter=change_counter,
        db_pages=db_pages,
        version_valid_for=version_valid_for,
    )


__all__ = ["DB_HEADER_SIZE", "SQLITE_MAGIC", "DbHeader", "parse_db_header"]
