"""Build replicas without the daemon: from successive states of a real SQLite database file.

A test makes commits on a database in rollback-journal mode (so the file alone holds each committed
state), reads the file after each commit, and hands the states to a ``ReplicaBuilder``: it diffs
pages between consecutive states into commit records and writes a snapshot plus change-sets, with
correct ``prev`` links, exactly as the daemon lays them out.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import blake3

from bakelite.format import layout
from bakelite.format.changeset import CommitRecord, changeset_frames, changeset_header
from bakelite.format.envelope import ObjectHeader, ObjectWriter, chain_link
from bakelite.format.snapshot import frame_pages, snapshot_header
from bakelite.storage.base import Storage


def page_size_of(state: bytes) -> int:
    """The page size recorded in a database image's header."""
    size = int.from_bytes(state[16:18], "big")
    return 65536 if size == 1 else size


def diff_pages(old: bytes, new: bytes, page_size: int) -> list[tuple[int, bytes]]:
    """The pages of ``new`` that differ from ``old`` (or are beyond its end), by pgno."""
    out = []
    for i in range(len(new) // page_size):
        page = new[i * page_size : (i + 1) * page_size]
        if old[i * page_size : (i + 1) * page_size] != page:
            out.append((i + 1, page))
    return out


@dataclass
class Commit:
    """One commit of the recorded history: where it landed and what the database was."""

    backup: str
    seq: int
    time: float
    state: bytes


@dataclass
class ReplicaBuilder:
    """Writes one database's backups into ``storage``; ``history`` records every commit shipped."""

    storage: Storage
    db: str
    codec: str = "zstd"
    history: list[Commit] = field(default_factory=list)
    backup: str = ""
    page_size: int = 0
    seq: int = 0
    link: str = ""
    state: bytes = b""
    pending: list[CommitRecord] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    # Per change-set key: its commits, and the prev / chain link it was written with (for compact).
    records: dict[str, tuple[list[CommitRecord], str, str]] = field(default_factory=dict)

    def new_backup(self, state: bytes, t: float, backup: str | None = None) -> str:
        """Start a backup whose snapshot is ``state`` at time ``t``; returns its id."""
        self.flush()
        self.backup = backup or layout.new_backup_id(t)
        self.page_size = page_size_of(state)
        self.seq = 0
        header = snapshot_header(
            db=self.db,
            backup=self.backup,
            page_size=self.page_size,
            db_pages=len(state) // self.page_size,
            commit_time=t,
            codec=self.codec,
            encrypted=False,
            created=t,
        )
        step = frame_pages(self.page_size) * self.page_size
        frames = (state[i : i + step] for i in range(0, len(state), step))
        self.link = self._put(layout.snapshot_key(self.db, self.backup), header, frames)
        self.state = state
        self.history.append(Commit(self.backup, 0, t, state))
        return self.backup

    def new_backup_from_file(self, path: Path, t: float, backup: str | None = None) -> str:
        """Like ``new_backup`` but streams the snapshot from a file (for big databases)."""
        self.flush()
        self.backup = backup or layout.new_backup_id(t)
        with open(path, "rb") as f:
            self.page_size = page_size_of(f.read(100))
        size = os.path.getsize(path)
        header = snapshot_header(
            db=self.db,
            backup=self.backup,
            page_size=self.page_size,
            db_pages=size // self.page_size,
            commit_time=t,
            codec=self.codec,
            encrypted=False,
            created=t,
        )
        step = frame_pages(self.page_size) * self.page_size

        def frames() -> Iterator[bytes]:
            with open(path, "rb") as f:
                while chunk := f.read(step):
                    yield chunk

        self.link = self._put(layout.snapshot_key(self.db, self.backup), header, frames())
        self.seq = 0
        self.state = b""  # not kept in memory: commits after this are not supported
        return self.backup

    def commit(self, state: bytes, t: float) -> int:
        """Record a commit that turned the previous state into ``state``; returns its seq."""
        assert self.backup, "new_backup first"
        self.seq += 1
        pages = diff_pages(self.state, state, self.page_size)
        self.pending.append(CommitRecord(self.seq, t, len(state) // self.page_size, pages))
        self.state = state
        self.history.append(Commit(self.backup, self.seq, t, state))
        return self.seq

    def flush(self, level: int = 0) -> str | None:
        """Write the pending commits as one change-set; returns its key."""
        if not self.pending:
            return None
        commits, self.pending = self.pending, []
        first, last = commits[0].seq, commits[-1].seq
        header = changeset_header(
            db=self.db,
            backup=self.backup,
            first=first,
            last=last,
            page_size=self.page_size,
            codec=self.codec,
            encrypted=False,
            created=commits[-1].time,
            prev=self.link,
            t_first=commits[0].time,
            t_last=commits[-1].time,
            db_pages=commits[-1].db_pages,
            level=level,
        )
        key = layout.changeset_key(self.db, self.backup, level, first, last)
        prev = self.link
        self.link = self._put(key, header, changeset_frames(commits, self.page_size))
        self.records[key] = (commits, prev, self.link)
        return key

    def commit_raw(self, t: float, pages: list[tuple[int, bytes]], db_pages: int) -> int:
        """Record a commit from its changed pages directly (when states are too big to keep)."""
        self.seq += 1
        self.pending.append(CommitRecord(self.seq, t, db_pages, pages))
        return self.seq

    def compact(self, keys: Sequence[str], level: int = 1, delete: bool = True) -> str:
        """Merge consecutive change-sets of the current backup into one commit at ``level``.

        The merged object links like the daemon's compactor will write it: ``prev`` is the first
        replaced object's, ``link`` the last replaced object's, so successors still chain.
        """
        merged: dict[int, bytes] = {}
        commits: list[CommitRecord] = []
        for key in keys:
            commits += self.records[key][0]
        for c in commits:
            for pg, img in c.pages:
                merged[pg] = bytes(img)
        final = commits[-1]
        low = min(c.db_pages for c in commits)
        record = CommitRecord(
            final.seq,
            final.time,
            final.db_pages,
            sorted((pg, img) for pg, img in merged.items() if pg <= final.db_pages),
            truncate_to=low if low < final.db_pages else None,
        )
        prev, link = self.records[keys[0]][1], self.records[keys[-1]][2]
        header = changeset_header(
            db=self.db,
            backup=self.backup,
            first=commits[0].seq,
            last=final.seq,
            page_size=self.page_size,
            codec=self.codec,
            encrypted=False,
            created=final.time,
            prev=prev,
            t_first=commits[0].time,
            t_last=final.time,
            db_pages=final.db_pages,
            level=level,
            link=link,
        )
        key = layout.changeset_key(self.db, self.backup, level, commits[0].seq, final.seq)
        self._put(key, header, changeset_frames([record], self.page_size))
        self.records[key] = ([record], prev, link)
        if delete:
            self.storage.delete(keys)
        return key

    def _put(self, key: str, header: ObjectHeader, frames: Iterator[bytes]) -> str:
        writer = ObjectWriter(header)
        self.storage.put_stream(key, writer.chunks(frames))
        assert writer.footer is not None
        self.keys.append(key)
        return chain_link(header, writer.footer)


def read_state(path: Path) -> bytes:
    """The database file's bytes (in rollback-journal mode: the last committed state)."""
    return path.read_bytes()


def content_hash(path: Path) -> str:
    """BLAKE3 over every row of every table, rows sorted (a restore-equivalence oracle)."""
    h = blake3.blake3()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        ]
        for table in tables:
            h.update(table.encode() + b"\0")
            # Sorted in Python: WITHOUT ROWID tables have no rowid to order by.
            for row in sorted(repr(r) for r in conn.execute(f'SELECT * FROM "{table}"')):
                h.update(row.encode() + b"\n")
    finally:
        conn.close()
    return h.hexdigest()


def state_hash(state: bytes, scratch: Path) -> str:
    """``content_hash`` of a database image (written to ``scratch`` first)."""
    scratch.write_bytes(state)
    try:
        return content_hash(scratch)
    finally:
        scratch.unlink()


class Workload:
    """A real SQLite database in DELETE journal mode whose committed states a test can read."""

    def __init__(self, path: Path, page_size: int = 4096) -> None:
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute(f"PRAGMA page_size={page_size}")
        self.conn.execute("PRAGMA journal_mode=DELETE")
        self.conn.execute(
            "PRAGMA synchronous=OFF"
        )  # speed: these files are only read back, never crash-tested

    def run(self, *statements: str | tuple[str, Sequence[object]]) -> bytes:
        """Run ``statements`` as one transaction; return the database file after the commit."""
        self.conn.execute("BEGIN")
        for st in statements:
            if isinstance(st, tuple):
                self.conn.execute(st[0], st[1])
            else:
                self.conn.execute(st)
        self.conn.execute("COMMIT")
        return self.path.read_bytes()

    def vacuum(self) -> bytes:
        """VACUUM (its own transaction) and return the file after it."""
        self.conn.execute("VACUUM")
        return self.path.read_bytes()

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()
