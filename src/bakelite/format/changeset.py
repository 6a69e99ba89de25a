"""Change-set payload: the commits of one sync, each with its pages, as a record stream.

The raw (uncompressed) payload is a byte stream of commit records, cut into frames of at most
``FRAME_RAW`` bytes at arbitrary points, so a huge commit (a VACUUM) streams in bounded memory::

    commit := "C" | seq:u64 | time:f64 | db_pages:u32 | truncate_to:u32 | npages:u32
              | pgno:u32 * npages | page images (npages * page_size)

Applying a commit: if ``truncate_to`` is set (compacted windows that shrank), truncate to it; then
write each page with pgno <= db_pages; then truncate the file to ``db_pages`` pages.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bakelite.errors import CorruptionError
from bakelite.format.envelope import ObjectHeader

FRAME_RAW = 4 * 1024 * 1024
NO_TRUNCATE = 0xFFFFFFFF
_COMMIT = struct.Struct(">cQdIII")


@dataclass(frozen=True)
class CommitRecord:
    """One commit to be written: its position, time, size and page images (sorted by pgno)."""

    seq: int
    time: float
    db_pages: int
    pages: Sequence[tuple[int, bytes | memoryview]]
    truncate_to: int | None = None
    # When set, the page numbers in order, so a lazy ``pages`` is read only once, for its images.
    pgnos: Sequence[int] | None = None


def changeset_frames(commits: Iterable[CommitRecord], page_size: int) -> Iterator[bytes]:
    """Encode commits into raw frames of at most FRAME_RAW bytes."""
    buf = bytearray()
    for c in commits:
        trunc = NO_TRUNCATE if c.truncate_to is None else c.truncate_to
        buf += _COMMIT.pack(b"C", c.seq, c.time, c.db_pages, trunc, len(c.pages))
        pgnos = c.pgnos if c.pgnos is not None else [pg for pg, _ in c.pages]
        buf += struct.pack(f">{len(pgnos)}I", *pgnos)
        for pg, img in c.pages:
            if len(img) != page_size:
                raise ValueError(f"page {pg} image is {len(img)} bytes, page size is {page_size}")
            buf += img
            if len(buf) >= FRAME_RAW:
                yield bytes(buf[:FRAME_RAW])
                del buf[:FRAME_RAW]
    while len(buf) > FRAME_RAW:
        yield bytes(buf[:FRAME_RAW])
        del buf[:FRAME_RAW]
    if buf:
        yield bytes(buf)


class ByteFeed:
    """Reads exact byte counts across a sequence of frames."""

    def __init__(self, frames: Iterable[bytes]) -> None:
        self._it = iter(frames)
        self._buf = b""
        self._pos = 0

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or CorruptionError if the frames end first."""
        avail = len(self._buf) - self._pos
        if avail >= n:
            out = self._buf[self._pos : self._pos + n]
            self._pos += n
            return out
        parts = [self._buf[self._pos :]]
        need = n - avail
        while need > 0:
            try:
                frame = next(self._it)
            except StopIteration:
                raise CorruptionError("change-set payload ends in the middle of a record") from None
            if len(frame) > need:
                parts.append(frame[:need])
                self._buf, self._pos = frame, need
                need = 0
            else:
                parts.append(frame)
                need -= len(frame)
                self._buf, self._pos = b"", 0
        return b"".join(parts)

    def at_end(self) -> bool:
        """True when every frame is consumed (drains empty frames)."""
        while self._pos >= len(self._buf):
            try:
                self._buf, self._pos = next(self._it), 0
            except StopIteration:
                return True
        return False


@dataclass(frozen=True)
class CommitHeader:
    """A decoded commit record header; its pages follow in the feed."""

    seq: int
    time: float
    db_pages: int
    truncate_to: int | None
    pgnos: tuple[int, ...]


def iter_commits(frames: Iterable[bytes], page_size: int) -> Iterator[tuple[CommitHeader, ByteFeed]]:
    """Yield each commit header with the feed positioned at its pages.

    The caller must read exactly ``len(header.pgnos) * page_size`` bytes (or call
    ``skip_pages``) before advancing the iterator.
    """
    feed = ByteFeed(frames)
    while not feed.at_end():
        tag, seq, t, db_pages, trunc, npages = _COMMIT.unpack(feed.read(_COMMIT.size))
        if tag != b"C":
            raise CorruptionError(f"change-set record has bad tag {tag!r}")
        pgnos = struct.unpack(f">{npages}I", feed.read(4 * npages)) if npages else ()
        yield (
            CommitHeader(seq, t, db_pages, None if trunc == NO_TRUNCATE else trunc, tuple(pgnos)),
            feed,
        )


def read_commits(frames: Iterable[bytes], page_size: int) -> list[CommitRecord]:
    """Decode every commit with its pages into memory (tests and compaction of small objects)."""
    out: list[CommitRecord] = []
    for hdr, feed in iter_commits(frames, page_size):
        data = feed.read(len(hdr.pgnos) * page_size)
        pages = [(pg, data[i * page_size : (i + 1) * page_size]) for i, pg in enumerate(hdr.pgnos)]
        out.append(CommitRecord(hdr.seq, hdr.time, hdr.db_pages, pages, hdr.truncate_to))
    return out


def changeset_header(
    *,
    db: str,
    backup: str,
    first: int,
    last: int,
    page_size: int,
    codec: str,
    encrypted: bool,
    created: float,
    prev: str,
    t_first: float,
    t_last: float,
    db_pages: int,
    level: int = 0,
    position: dict[str, Any] | None = None,
    link: str | None = None,
) -> ObjectHeader:
    """The header of a change-set covering seqs ``first..last``.

    ``meta`` carries the commit-time range and final size so a catalog can place restore points
    by reading headers only; ``position`` is the WAL position after ``last`` (for resume).
    """
    meta: dict[str, Any] = {"t_first": t_first, "t_last": t_last, "db_pages": db_pages}
    if position is not None:
        meta["position"] = position
    return ObjectHeader(
        kind="changeset",
        db=db,
        backup=backup,
        level=level,
        first=first,
        last=last,
        page_size=page_size,
        codec=codec,
        encrypted=encrypted,
        created=created,
        prev=prev,
        link=link,
        meta=meta,
    )


def changeset_time_range(header: ObjectHeader) -> tuple[float, float]:
    """The commit times of the first and last commit in a change-set."""
    try:
        return float(header.meta["t_first"]), float(header.meta["t_last"])
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptionError("change-set header lacks its time range") from e
