"""Snapshot payload: the database image, pages in order, in independent frames.

Each raw frame holds ``FRAME_PAGES`` whole pages (the last may hold fewer); concatenated they are
the database file at the snapshot's commit, exactly ``db_pages * page_size`` bytes.  The header's
``meta`` records ``db_pages``, ``commit_time`` (when the snapshot's state was read) and the WAL
position it was taken at.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bakelite.errors import CorruptionError
from bakelite.format.envelope import ObjectHeader

FRAME_BYTES = 4 * 1024 * 1024


def frame_pages(page_size: int) -> int:
    """Pages per raw snapshot frame (about 4 MiB of raw data)."""
    return max(1, FRAME_BYTES // page_size)


def snapshot_header(
    *,
    db: str,
    backup: str,
    page_size: int,
    db_pages: int,
    commit_time: float,
    codec: str,
    encrypted: bool,
    created: float,
    position: dict[str, Any] | None = None,
) -> ObjectHeader:
    """The header of a backup's base snapshot (seq 0 of the backup)."""
    meta: dict[str, Any] = {"db_pages": db_pages, "commit_time": commit_time}
    if position is not None:
        meta["position"] = position
    return ObjectHeader(
        kind="snapshot",
        db=db,
        backup=backup,
        level=0,
        first=0,
        last=0,
        page_size=page_size,
        codec=codec,
        encrypted=encrypted,
        created=created,
        prev=None,
        meta=meta,
    )


def snapshot_db_pages(header: ObjectHeader) -> int:
    """The database size in pages recorded in a snapshot header."""
    try:
        return int(header.meta["db_pages"])
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptionError("snapshot header lacks db_pages") from e


def snapshot_commit_time(header: ObjectHeader) -> float:
    """When the snapshot's state was current."""
    try:
        return float(header.meta["commit_time"])
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptionError("snapshot header lacks commit_time") from e


def check_snapshot_frames(frames: Iterator[bytes], header: ObjectHeader) -> Iterator[bytes]:
    """Pass frames through, checking each holds whole pages and the total matches db_pages."""
    ps = header.page_size
    expected = snapshot_db_pages(header) * ps
    total = 0
    for raw in frames:
        if len(raw) % ps:
            raise CorruptionError(f"snapshot frame of {len(raw)} bytes is not whole pages of {ps}")
        total += len(raw)
        if total > expected:
            raise CorruptionError("snapshot holds more pages than its header records")
        yield raw
    if total != expected:
        raise CorruptionError(f"snapshot holds {total // ps} pages, header records {expected // ps}")
