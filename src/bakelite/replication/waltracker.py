"""Follows a live ``-wal`` file: finds each new commit, stamps its time, and reads its pages.

``observe()`` is cheap and incremental, so it runs on every change event: each commit gets the time
it was first seen (inotify fires before COMMIT returns, so this is within about a millisecond of
the real commit).  ``read_pages()`` later copies a commit's page images for shipping.  Frames are
validated (salts, checksum chain) when observed and their salts re-checked when read; a commit is
only ever formed at a commit frame, so torn or uncommitted tails are never shipped.

The tracker reads the ``-wal`` by path, which is safe: SQLite never takes POSIX locks on it.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, overload

from bakelite.errors import BakeliteError
from bakelite.sqlite import wal

_FIRST_CHUNK_FRAMES = 64
_MAX_CHUNK_BYTES = 32 * 1024 * 1024
_RESCAN_THROTTLE_BYTES = 16 * 1024 * 1024
# The page number, commit size and salts at the start of a frame header (big-endian).
_PGNO_SALTS = struct.Struct(">IIII")


class GapError(BakeliteError):
    """Frames that were never shipped may be gone: a new full backup is required."""


@dataclass(frozen=True)
class WalPosition:
    """A point in the WAL: generation salts, next frame index, running checksum before it."""

    salt1: int
    salt2: int
    next_frame: int
    ck1: int
    ck2: int

    @property
    def salts(self) -> tuple[int, int]:
        """The generation's salts."""
        return (self.salt1, self.salt2)

    def to_dict(self) -> dict[str, int]:
        """JSON form (object meta and the cursor)."""
        return {
            "salt1": self.salt1,
            "salt2": self.salt2,
            "next_frame": self.next_frame,
            "ck1": self.ck1,
            "ck2": self.ck2,
        }

    @classmethod
    def from_dict(cls, d: Any) -> WalPosition | None:
        """Parse the JSON form; None for null."""
        if d is None:
            return None
        return cls(int(d["salt1"]), int(d["salt2"]), int(d["next_frame"]), int(d["ck1"]), int(d["ck2"]))


@dataclass
class PendingCommit:
    """A commit seen in the WAL but not yet shipped."""

    last_frame: int
    db_pages: int
    time: float
    end_checksum: tuple[int, int]
    frames: dict[int, int] = field(default_factory=dict)  # pgno -> frame index (last image wins)
    salts: tuple[int, int] = (0, 0)

    @property
    def page_bytes(self) -> int:
        """Number of distinct pages this commit changed."""
        return len(self.frames)


class WalTracker:
    """Incremental reader of one database's WAL (not thread-safe: the owner serialises calls)."""

    def __init__(self, wal_path: Path, page_size: int, verify: str = "auto") -> None:
        self.wal_path = wal_path
        self.page_size = page_size
        self.verify = verify
        self.gen: tuple[int, int] | None = None
        # Position after the last commit frame observed (shipped or pending).
        self.commit_next = 0
        self.commit_ck: tuple[int, int] = (0, 0)
        self.pending: list[PendingCommit] = []
        self.header: wal.WalHeader | None = None
        self._last_scan = 0.0

    # ------------------------------------------------------------------ position
    def reset(self, position: WalPosition | None) -> None:
        """Continue from ``position`` (after a snapshot or a validated cursor); drop pending."""
        self.pending = []
        if position is None:
            self.gen = None
            self.commit_next = 0
            self.commit_ck = (0, 0)
        else:
            self.gen = position.salts
            self.commit_next = position.next_frame
            self.commit_ck = (position.ck1, position.ck2)

    def position_after(self, commits: Sequence[PendingCommit]) -> WalPosition | None:
        """The WAL position just after the last of ``commits`` (or the current base if none)."""
        if commits:
            c = commits[-1]
            return WalPosition(c.salts[0], c.salts[1], c.last_frame + 1, *c.end_checksum)
        return None

    def read_header(self) -> wal.WalHeader | None:
        """The WAL header as it is now, or None when the WAL is absent, empty or invalid."""
        try:
            with open(self.wal_path, "rb") as f:
                return wal.parse_wal_header(f.read(wal.WAL_HEADER_SIZE))
        except FileNotFoundError:
            return None

    def wal_size(self) -> int:
        """Current size of the ``-wal`` file in bytes (0 when absent)."""
        try:
            return os.stat(self.wal_path).st_size
        except FileNotFoundError:
            return 0

    def frames_used(self) -> int:
        """Bytes of committed frames in the current WAL generation (the file may be larger)."""
        return wal.frame_offset(self.commit_next, self.page_size)

    # ------------------------------------------------------------------ observing
    def observe(self, now: float, force: bool = True, max_frames: int | None = None) -> int:
        """Scan frames written since the last commit seen; stamp new commits with ``now``.

        Returns how many new commits were found.  With ``force=False`` (change events) a scan of a
        very large in-progress transaction is skipped if one ran in the last 250 ms.
        ``max_frames``: look at no more than this many frames (a quick probe; checked in Python
        while numpy is still being imported, so the probe never waits for that).
        """
        try:
            f = open(self.wal_path, "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            if self.pending:
                raise GapError("the WAL disappeared while commits were waiting to be shipped") from None
            return 0
        with f:
            hdr = wal.parse_wal_header(f.read(wal.WAL_HEADER_SIZE))
            if hdr is None:
                if self.pending:
                    raise GapError("the WAL was reset while commits were waiting to be shipped")
                return 0
            if hdr.page_size != self.page_size:
                raise GapError(f"page size changed from {self.page_size} to {hdr.page_size}")
            self.header = hdr
            if hdr.salts != self.gen:
                if self.pending:
                    raise GapError("the WAL restarted while commits were waiting to be shipped")
                # A new generation: everything of the previous one was shipped (protocol I1-I3).
                self.gen = hdr.salts
                self.commit_next = 0
                self.commit_ck = hdr.checksum
            # Always rescan from the last commit: a rolled-back transaction's frames are
            # overwritten from there by the next one, and any frame past the overwritten ones may
            # still look intact, so frames after the last commit are never trusted across calls.
            in_progress = self.wal_size() - wal.frame_offset(self.commit_next, self.page_size)
            if not force and in_progress > _RESCAN_THROTTLE_BYTES and now - self._last_scan < 0.25:
                return 0  # a huge transaction in progress: rescanning it on every event is quadratic
            self._last_scan = now
            return self._scan_from(f, hdr, self.commit_next, self.commit_ck, now, max_frames)

    def _scan_from(
        self,
        f: Any,
        hdr: wal.WalHeader,
        start: int,
        s: tuple[int, int],
        now: float,
        max_frames: int | None = None,
    ) -> int:
        fsz = hdr.frame_size
        chunk_frames = _FIRST_CHUNK_FRAMES if max_frames is None else max_frames
        verify = self.verify
        if max_frames is not None and verify == "auto" and not wal.numpy_ready():
            verify = "python"
        found = 0
        txn_pgnos: list[int] = []  # frames of the transaction in progress, across chunks
        while True:
            f.seek(wal.frame_offset(start, self.page_size))
            buf = f.read(chunk_frames * fsz)
            nframes = len(buf) // fsz
            if nframes == 0:
                break
            res = wal.scan_frames(buf, hdr, start, s, verify=verify)
            nvalid = res.valid_frames - start
            pgnos = res.pgnos
            consumed = 0
            for c in res.commits:
                k = c.last_frame - start
                # The transaction's frames: earlier chunks' ones, then this chunk's up to the commit.
                txn = txn_pgnos + pgnos[consumed : k + 1]
                frames = {pg: self.commit_next + i for i, pg in enumerate(txn)}
                end_ck = wal.parse_frame_header(buf, k * fsz).checksum
                self.pending.append(PendingCommit(c.last_frame, c.db_pages, now, end_ck, frames, hdr.salts))
                txn_pgnos = []
                consumed = k + 1
                self.commit_next, self.commit_ck = c.last_frame + 1, end_ck
                found += 1
            txn_pgnos += pgnos[consumed:]
            if nvalid < nframes or nframes < chunk_frames or max_frames is not None:
                break  # reached the live end (or a stale tail) of this generation, or the limit
            start, s = res.valid_frames, res.checksum_at_end
            chunk_frames = min(chunk_frames * 2, max(1, _MAX_CHUNK_BYTES // fsz))
        return found

    # ------------------------------------------------------------------ reading
    def read_pages(self, commit: PendingCommit, wal_file: BinaryIO | None = None) -> WalPages:
        """The page images of ``commit``, sorted by page number, read lazily from the WAL.

        ``wal_file``: an open ``-wal`` to read through (one open per batch instead of per commit).
        """
        return WalPages(self.wal_path, self.page_size, commit, wal_file)

    def take(self, limit_bytes: int | None = None) -> list[PendingCommit]:
        """The pending commits to ship next (all, or a prefix up to about ``limit_bytes`` of pages)."""
        if limit_bytes is None:
            return list(self.pending)
        out: list[PendingCommit] = []
        total = 0
        for c in self.pending:
            if out and total + c.page_bytes * self.page_size > limit_bytes:
                break
            out.append(c)
            total += c.page_bytes * self.page_size
        return out

    def shipped(self, commits: Sequence[PendingCommit]) -> None:
        """Drop ``commits`` (a prefix of pending) once they are durable on the backend."""
        n = len(commits)
        if self.pending[:n] != list(commits):
            raise AssertionError("shipped commits are not the pending prefix")
        del self.pending[:n]


class WalPages(Sequence[tuple[int, bytes]]):
    """A commit's page images, read from the WAL on access (bounded memory for huge commits)."""

    def __init__(
        self, wal_path: Path, page_size: int, commit: PendingCommit, wal_file: BinaryIO | None = None
    ) -> None:
        self.wal_path = wal_path
        self.page_size = page_size
        self.commit = commit
        self.wal_file = wal_file
        self.items = sorted(commit.frames.items())
        self.pgnos = [pg for pg, _ in self.items]

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, i: int) -> tuple[int, bytes]: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[tuple[int, bytes]]: ...

    def __getitem__(self, i: int | slice) -> tuple[int, bytes] | Sequence[tuple[int, bytes]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if self.wal_file is not None:
            return self._read(self.wal_file.fileno(), *self.items[i])
        with open(self.wal_path, "rb") as f:
            return self._read(f.fileno(), *self.items[i])

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        if self.wal_file is not None:
            fd = self.wal_file.fileno()
            for pg, fi in self.items:
                yield self._read(fd, pg, fi)
            return
        with open(self.wal_path, "rb") as f:
            for pg, fi in self.items:
                yield self._read(f.fileno(), pg, fi)

    def _read(self, fd: int, pg: int, fi: int) -> tuple[int, bytes]:
        fsz = wal.FRAME_HEADER_SIZE + self.page_size
        raw = os.pread(fd, fsz, wal.frame_offset(fi, self.page_size))
        if len(raw) != fsz:
            raise GapError(f"WAL frame {fi} vanished before it was shipped")
        fpgno, _, salt1, salt2 = _PGNO_SALTS.unpack_from(raw)
        # The frame was validated when observed; a changed salt or page number means it was
        # overwritten since, which the locking protocol forbids: fail loudly, never ship it.
        if (salt1, salt2) != self.commit.salts or fpgno != pg:
            raise GapError(f"WAL frame {fi} was overwritten before it was shipped")
        return pg, raw[wal.FRAME_HEADER_SIZE :]
