"""A consistent full image of a live database, read without blocking its writers.

Inside our read transaction, a checkpoint can only copy into the database file frames that are at
or before our read mark, and we overlay every committed frame up to the last commit ``E`` we saw,
so database file pages read through the long-lived descriptor plus the WAL overlay give exactly the
database at ``E`` (page-identical, so later WAL page images apply to it).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from bakelite.format.snapshot import frame_pages
from bakelite.replication.waltracker import GapError, WalPosition
from bakelite.sqlite import wal
from bakelite.sqlite.connections import LiveDatabase

_SCAN_CHUNK = 32 * 1024 * 1024


@dataclass
class SnapshotPlan:
    """What a snapshot will contain: its size, WAL overlay and the position it ends at."""

    page_size: int
    db_pages: int
    position: WalPosition | None
    overlay: dict[int, int] = field(default_factory=dict)  # pgno -> WAL frame index

    @property
    def size(self) -> int:
        """Bytes of the database image."""
        return self.db_pages * self.page_size


def plan_snapshot(live: LiveDatabase) -> SnapshotPlan:
    """Scan the whole WAL (call while holding a read transaction) and plan the image."""
    dbh = live.read_header()
    ps = dbh.page_size
    overlay: dict[int, int] = {}
    position: WalPosition | None = None
    db_pages: int | None = None
    try:
        f = open(live.wal_path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        f = None
    if f is not None:
        with f:
            hdr = wal.parse_wal_header(f.read(wal.WAL_HEADER_SIZE))
            if hdr is not None and hdr.page_size == ps:
                position = WalPosition(hdr.salt1, hdr.salt2, 0, *hdr.checksum)
                start, s = 0, hdr.checksum
                txn: dict[int, int] = {}
                per_chunk = max(1, _SCAN_CHUNK // hdr.frame_size)
                while True:
                    buf = f.read(per_chunk * hdr.frame_size)
                    nframes = len(buf) // hdr.frame_size
                    if nframes == 0:
                        break
                    res = wal.scan_frames(buf, hdr, start, s)
                    nvalid = res.valid_frames - start
                    pgnos = res.pgnos
                    commit_at = {c.last_frame: c.db_pages for c in res.commits}
                    for i, pg in enumerate(pgnos):
                        fi = start + i
                        txn[pg] = fi
                        if fi in commit_at:
                            overlay.update(txn)
                            txn.clear()
                            db_pages = commit_at[fi]
                            ck = wal.parse_frame_header(buf, i * hdr.frame_size).checksum
                            position = WalPosition(hdr.salt1, hdr.salt2, fi + 1, *ck)
                    if nvalid < nframes:
                        break
                    start, s = res.valid_frames, res.checksum_at_end
    if db_pages is None:
        db_pages = dbh.db_pages if dbh.in_header_size_valid else live.file_size() // ps
    # Pages past the final size may linger in the overlay from before a shrink: never copy them.
    overlay = {pg: fi for pg, fi in overlay.items() if pg <= db_pages}
    return SnapshotPlan(page_size=ps, db_pages=db_pages, position=position, overlay=overlay)


def snapshot_frames(live: LiveDatabase, plan: SnapshotPlan) -> Iterator[bytes]:
    """Yield the image in raw frames of whole pages (bounded memory); each is a fresh object."""
    ps = plan.page_size
    per = frame_pages(ps)
    # Overlay pages in order: each frame finds its own by bisection instead of a lookup per page.
    overlaid = sorted(plan.overlay)
    walfd = os.open(live.wal_path, os.O_RDONLY) if overlaid else None
    try:
        for first in range(0, plan.db_pages, per):
            n = min(per, plan.db_pages - first)
            data = os.pread(live.dbfd, n * ps, first * ps)
            if len(data) < n * ps:
                # Pages beyond the file's end exist only in the WAL (or are new and zero).
                data += bytes(n * ps - len(data))
            lo = bisect.bisect_left(overlaid, first + 1)
            hi = bisect.bisect_right(overlaid, first + n)
            if lo == hi:
                # Nothing to overlay (the usual case after a checkpoint): no copy at all.
                yield data
                continue
            assert walfd is not None
            view = memoryview(data)
            parts: list[bytes | memoryview] = []
            pos = 0
            for pg in overlaid[lo:hi]:
                off = (pg - 1 - first) * ps
                parts.append(view[pos:off])
                parts.append(_wal_page(walfd, plan, pg))
                pos = off + ps
            parts.append(view[pos:])
            # One copy assembles the frame from file runs and WAL pages.
            yield b"".join(parts)
    finally:
        if walfd is not None:
            os.close(walfd)


def _wal_page(walfd: int, plan: SnapshotPlan, pg: int) -> memoryview:
    """Page ``pg``'s image from its planned WAL frame; GapError if the frame is no longer there."""
    ps = plan.page_size
    fi = plan.overlay[pg]
    frame = os.pread(walfd, wal.FRAME_HEADER_SIZE + ps, wal.frame_offset(fi, ps))
    if len(frame) != wal.FRAME_HEADER_SIZE + ps:
        raise GapError(f"WAL frame {fi} vanished while the snapshot was read")
    fh = wal.parse_frame_header(frame)
    # A reader on read-mark 0 does not stop one WAL restart: the frames planned may have been
    # overwritten by a new generation.  Never copy such a frame.
    if plan.position is None or fh.salts != plan.position.salts or fh.pgno != pg:
        raise GapError("the WAL restarted while the snapshot was read")
    return memoryview(frame)[wal.FRAME_HEADER_SIZE :]
