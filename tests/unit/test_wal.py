"""WAL parsing and checksum verification against real WAL files written by SQLite."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import sqlite3
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bakelite.sqlite.wal as wal_module
from bakelite.sqlite.wal import (
    FRAME_HEADER_SIZE,
    WAL_FORMAT_VERSION,
    WAL_HEADER_SIZE,
    WAL_MAGIC_BE,
    WAL_MAGIC_LE,
    Commit,
    ScanResult,
    WalHeader,
    frame_checksums,
    frame_offset,
    frame_page,
    parse_frame_header,
    parse_wal_header,
    scan_frames,
    wal_checksum,
)

PAGE_SIZES = (512, 4096, 65536)
VERIFY = ("auto", "numpy", "python")
U32 = st.integers(min_value=0, max_value=0xFFFFFFFF)


# ---------------------------------------------------------------------------- WAL generation


@dataclass(frozen=True)
class Expected:
    """What SQLite reported right after one of our commits."""

    db_pages: int
    rows: int
    last_frame: int | None  # None once the WAL size no longer reveals the commit frame


@dataclass(frozen=True)
class Workload:
    """Copies of one database's -wal at interesting moments, taken with the writer still open."""

    page_size: int
    base: bytes  # the database file before any WAL frame was written
    committed: bytes  # after the standard commits; every frame is committed
    expected: tuple[Expected, ...]
    in_progress: bytes  # while a transaction too big for the cache is spilling frames
    rolled_back: bytes  # after that transaction rolled back
    after_rollback: bytes  # one more commit, written over the start of the rolled-back frames
    after_expected: Expected
    restarted: bytes  # after a full checkpoint and two commits: new salts, stale frames behind
    restart_expected: tuple[Expected, ...]


class _Writer:
    """A WAL-mode database written through one connection that stays open."""

    def __init__(self, path: Path, page_size: int) -> None:
        setup = sqlite3.connect(path, isolation_level=None)
        setup.execute(f"PRAGMA page_size={page_size}")
        setup.execute("PRAGMA journal_mode=WAL")
        setup.close()
        # Safe to read by path only now: no connection of this process holds a lock yet.
        self.base = path.read_bytes()
        self.page_size = page_size
        self.wal_path = path.with_name(path.name + "-wal")
        self.con = sqlite3.connect(path, isolation_level=None)
        self.con.execute("PRAGMA wal_autocheckpoint=0")

    def frames(self) -> int:
        return (self.wal_path.stat().st_size - WAL_HEADER_SIZE) // (FRAME_HEADER_SIZE + self.page_size)

    def txn(self, sql: str, repeat: int = 1, *, size_known: bool = True) -> Expected:
        self.con.execute("BEGIN")
        for _ in range(repeat):
            self.con.execute(sql)
        self.con.execute("COMMIT")
        (pages,) = self.con.execute("PRAGMA page_count").fetchone()
        (rows,) = self.con.execute("SELECT count(*) FROM t").fetchone()
        return Expected(pages, rows, self.frames() - 1 if size_known else None)

    def wal(self) -> bytes:
        return self.wal_path.read_bytes()


@functools.cache
def workload(page_size: int) -> Workload:
    """Run the standard workload once per page size (cached across tests)."""
    with tempfile.TemporaryDirectory() as tmp:
        w = _Writer(Path(tmp) / "app.db", page_size)
        blob = page_size // 3  # several rows per page, and overflow pages for the big ones
        steps = [
            ("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)", 1),
            *[("INSERT INTO t(v) VALUES (randomblob(100))", 1)] * 5,
            (f"INSERT INTO t(v) VALUES (randomblob({blob}))", 40),  # multi-frame transaction
            ("UPDATE t SET v = randomblob(length(v)) WHERE id % 3 = 0", 1),
            ("DELETE FROM t WHERE id % 5 = 0", 1),
            (f"INSERT INTO t(v) VALUES (randomblob({3 * page_size}))", 3),  # overflow chains
            *[("INSERT INTO t(v) VALUES (randomblob(10))", 1)] * 3,
        ]
        expected = tuple(w.txn(sql, n) for sql, n in steps)
        committed = w.wal()
        assert w.frames() - 1 == expected[-1].last_frame

        # A tiny cache forces the open transaction to spill uncommitted frames into the WAL.
        w.con.execute("PRAGMA cache_size=5")
        w.con.execute("BEGIN")
        for _ in range(60):
            w.con.execute(f"INSERT INTO t(v) VALUES (randomblob({page_size}))")
        in_progress = w.wal()
        w.con.execute("ROLLBACK")
        rolled_back = w.wal()
        w.con.execute("PRAGMA cache_size=-2000")
        after_expected = w.txn("INSERT INTO t(v) VALUES (randomblob(10))", size_known=False)
        after_rollback = w.wal()

        busy, log, done = w.con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and log == done  # fully backfilled, so the next write restarts the WAL
        restart_expected = (
            w.txn("INSERT INTO t(v) VALUES (randomblob(10))", size_known=False),
            w.txn("UPDATE t SET v = randomblob(20) WHERE id = 1", size_known=False),
        )
        restarted = w.wal()
        w.con.close()
    return Workload(
        page_size,
        w.base,
        committed,
        expected,
        in_progress,
        rolled_back,
        after_rollback,
        after_expected,
        restarted,
        restart_expected,
    )


@pytest.fixture(scope="module", params=PAGE_SIZES, ids=[f"ps{p}" for p in PAGE_SIZES])
def wl(request: pytest.FixtureRequest) -> Workload:
    page_size: int = request.param
    return workload(page_size)


# ---------------------------------------------------------------------------- helpers


def header_of(wal: bytes) -> WalHeader:
    header = parse_wal_header(wal)
    assert header is not None
    return header


def scan(wal: bytes, verify: str = "numpy", start: int = 0, s: tuple[int, int] | None = None) -> ScanResult:
    """Scan a whole WAL file image from frame ``start``."""
    header = header_of(wal)
    if s is None:
        s = (
            header.checksum
            if start == 0
            else parse_frame_header(wal, frame_offset(start - 1, header.page_size)).checksum
        )
    return scan_frames(
        memoryview(wal)[frame_offset(start, header.page_size) :], header, start, s, verify=verify
    )


def assert_same(a: ScanResult, b: ScanResult) -> None:
    assert a == b
    assert a.pgnos == b.pgnos and all(type(pg) is int for pg in a.pgnos)


def flip(wal: bytes, offset: int, xor: int = 0x01) -> bytes:
    out = bytearray(wal)
    out[offset] ^= xor
    return bytes(out)


def total_frames(wal: bytes) -> int:
    return (len(wal) - WAL_HEADER_SIZE) // header_of(wal).frame_size


def apply_frames(base: bytes, wal: bytes, commit: Commit) -> bytes:
    """The database image at ``commit``: ``base`` overlaid with frames 0..commit, cut to size."""
    header = header_of(wal)
    ps = header.page_size
    result = scan(wal, "python")
    body = memoryview(wal)[WAL_HEADER_SIZE:]
    image = bytearray(base)
    for i in range(commit.last_frame + 1):
        pgno = int(result.pgnos[i])
        if len(image) < pgno * ps:
            image.extend(bytes(pgno * ps - len(image)))
        image[(pgno - 1) * ps : pgno * ps] = frame_page(body, header, i)
    del image[commit.db_pages * ps :]
    return bytes(image)


def open_image(image: bytes, tmp_path: Path, wal: bytes | None = None) -> tuple[int, int, str]:
    """Open a database image (and optional -wal) with SQLite: (rows, page_count, integrity)."""
    db = tmp_path / f"img{len(list(tmp_path.iterdir()))}.db"
    db.write_bytes(image)
    if wal is not None:
        db.with_name(db.name + "-wal").write_bytes(wal)
    con = sqlite3.connect(db)
    try:
        (rows,) = con.execute("SELECT count(*) FROM t").fetchone()
        (pages,) = con.execute("PRAGMA page_count").fetchone()
        (integrity,) = con.execute("PRAGMA integrity_check").fetchone()
    finally:
        con.close()
    return rows, pages, integrity


def rechecksum(wal: bytes, *, big_endian: bool, frames: int) -> bytes:
    """Rewrite the magic and recompute the header and the first ``frames`` frame checksums."""
    header = header_of(wal)
    out = bytearray(wal)
    struct.pack_into(">I", out, 0, WAL_MAGIC_BE if big_endian else WAL_MAGIC_LE)
    s = wal_checksum(out[:24], big_endian=big_endian)
    struct.pack_into(">2I", out, 24, *s)
    for i in range(frames):
        off = frame_offset(i, header.page_size)
        s = wal_checksum(out[off : off + 8], *s, big_endian=big_endian)
        s = wal_checksum(out[off + FRAME_HEADER_SIZE : off + header.frame_size], *s, big_endian=big_endian)
        struct.pack_into(">2I", out, off + 16, *s)
    return bytes(out)


def rewrite_big_endian(wal: bytes) -> bytes:
    """The same WAL with big-endian checksum words on its valid frames (reference code)."""
    return rechecksum(wal, big_endian=True, frames=scan(wal, "python").valid_frames)


# ---------------------------------------------------------------------------- checksum basics


def test_wal_checksum_small_known_values() -> None:
    le = struct.pack("<4I", 1, 2, 3, 4)
    # (1, 2): s1 = 1, s2 = 2 + 1 = 3; (3, 4): s1 = 1 + 3 + 3 = 7, s2 = 3 + 4 + 7 = 14
    assert wal_checksum(le) == (7, 14)
    assert wal_checksum(struct.pack(">4I", 1, 2, 3, 4), big_endian=True) == (7, 14)
    assert wal_checksum(b"") == (0, 0)
    assert wal_checksum(b"", 5, 6) == (5, 6)
    assert wal_checksum(b"\xff" * 8, 0xFFFFFFFF, 0xFFFFFFFF) == (0xFFFFFFFD, 0xFFFFFFFB)


def test_wal_checksum_rejects_odd_lengths() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        wal_checksum(b"\x00" * 12)


# ---------------------------------------------------------------------------- header


def test_header_parses(wl: Workload) -> None:
    header = header_of(wl.committed)
    native = WAL_MAGIC_LE if sys.byteorder == "little" else WAL_MAGIC_BE
    assert header.magic == native
    assert header.big_endian == (sys.byteorder == "big")
    assert header.version == WAL_FORMAT_VERSION
    assert header.page_size == wl.page_size  # 65536 is stored literally in the WAL header
    assert header.frame_size == wl.page_size + 24
    assert header.salts == (header.salt1, header.salt2)
    assert header.checksum == (header.cksum1, header.cksum2)
    assert header.checksum == wal_checksum(wl.committed[:24], big_endian=header.big_endian)


def test_header_accepts_longer_input_and_memoryview(wl: Workload) -> None:
    assert parse_wal_header(memoryview(wl.committed)) == parse_wal_header(wl.committed[:32])


@pytest.mark.parametrize("offset", range(WAL_HEADER_SIZE))
@pytest.mark.parametrize("xor", [0x01, 0x80])
def test_corrupted_header_is_rejected(offset: int, xor: int) -> None:
    wal = workload(512).committed
    assert parse_wal_header(flip(wal, offset, xor)) is None


def test_short_or_empty_header_is_rejected() -> None:
    wal = workload(512).committed
    assert parse_wal_header(b"") is None
    assert parse_wal_header(wal[:31]) is None
    assert parse_wal_header(wal[:32]) is not None


def _reheader(wal: bytes, **fields: int) -> bytes:
    """Rewrite header fields and re-checksum the header, so only the named change is wrong."""
    names = ["magic", "version", "page_size", "checkpoint_seq", "salt1", "salt2"]
    values = list(struct.unpack(">6I", wal[:24]))
    for name, value in fields.items():
        values[names.index(name)] = value
    head = struct.pack(">6I", *values)
    ck = wal_checksum(head, big_endian=bool(values[0] & 1))
    return head + struct.pack(">2I", *ck) + wal[32:]


@pytest.mark.parametrize(
    "fields",
    [
        {"magic": 0x377F0680},
        {"version": 3007001},
        {"page_size": 1},  # the db header's encoding of 65536; SQLite rejects it in a WAL header
        {"page_size": 256},
        {"page_size": 131072},
        {"page_size": 4095},
        {"page_size": 0},
    ],
)
def test_header_with_valid_checksum_but_bad_field_is_rejected(fields: dict[str, int]) -> None:
    assert parse_wal_header(_reheader(workload(512).committed, **fields)) is None


def test_header_with_only_checksum_recomputed_is_accepted() -> None:
    wal = workload(512).committed
    assert parse_wal_header(_reheader(wal)) == parse_wal_header(wal)


# ---------------------------------------------------------------------------- scanning


@pytest.mark.parametrize("verify", VERIFY)
def test_commits_match_what_sqlite_reported(wl: Workload, verify: str) -> None:
    result = scan(wl.committed, verify)
    assert [(c.last_frame, c.db_pages) for c in result.commits] == [
        (e.last_frame, e.db_pages) for e in wl.expected
    ]
    assert result.valid_frames == total_frames(wl.committed)
    assert result.last_commit_frame == result.valid_frames - 1
    last = parse_frame_header(wl.committed, frame_offset(result.last_commit_frame, wl.page_size))
    assert result.checksum_at_commit == result.checksum_at_end == last.checksum
    assert len(result.pgnos) == result.valid_frames
    # The workload really has multi-frame transactions.
    ends = [c.last_frame for c in result.commits]
    assert max(b - a for a, b in itertools.pairwise(ends)) > 10


def test_each_commit_rebuilds_the_database_sqlite_saw(wl: Workload, tmp_path: Path) -> None:
    result = scan(wl.committed)
    for commit, exp in zip(result.commits, wl.expected, strict=True):
        rows, pages, integrity = open_image(apply_frames(wl.base, wl.committed, commit), tmp_path)
        assert (rows, pages, integrity) == (exp.rows, exp.db_pages, "ok")


@pytest.mark.parametrize("verify", VERIFY)
@pytest.mark.parametrize("moment", ["in_progress", "rolled_back"])
def test_spilled_frames_are_never_committed(wl: Workload, verify: str, moment: str) -> None:
    wal: bytes = getattr(wl, moment)
    result = scan(wal, verify)
    committed = scan(wl.committed, verify)
    assert len(wal) > len(wl.committed)
    # The spilled frames carry the current salts and chain correctly: only the commit flag
    # tells them apart, so they are valid frames that must never be shipped.
    assert result.valid_frames > committed.valid_frames
    assert result.commits == committed.commits
    assert result.last_commit_frame == committed.last_commit_frame
    assert result.checksum_at_commit == committed.checksum_at_commit
    assert result.checksum_at_end != result.checksum_at_commit


@pytest.mark.parametrize("verify", VERIFY)
def test_commit_after_rollback_overwrites_spilled_frames(wl: Workload, verify: str, tmp_path: Path) -> None:
    result = scan(wl.after_rollback, verify)
    committed = scan(wl.committed, verify)
    assert result.commits[:-1] == committed.commits
    new = result.commits[-1]
    assert new.last_frame > committed.last_commit_frame
    assert new.db_pages == wl.after_expected.db_pages
    assert result.last_commit_frame == new.last_frame
    # The leftover rolled-back frames behind it chain from the old checksums, so they are invalid.
    assert result.valid_frames == new.last_frame + 1 < total_frames(wl.after_rollback)
    rows, pages, integrity = open_image(apply_frames(wl.base, wl.after_rollback, new), tmp_path)
    assert (rows, pages, integrity) == (wl.after_expected.rows, wl.after_expected.db_pages, "ok")


@pytest.mark.parametrize("verify", VERIFY)
def test_restart_leaves_stale_frames_past_the_live_end(wl: Workload, verify: str, tmp_path: Path) -> None:
    old = header_of(wl.after_rollback)
    new = header_of(wl.restarted)
    assert new.salts != old.salts
    assert new.salt1 == (old.salt1 + 1) & 0xFFFFFFFF
    assert new.checkpoint_seq == old.checkpoint_seq + 1
    result = scan(wl.restarted, verify)
    assert [c.db_pages for c in result.commits] == [e.db_pages for e in wl.restart_expected]
    assert result.valid_frames == result.last_commit_frame + 1
    # The file keeps its high-water size; the next frame is a stale one from the old generation.
    assert total_frames(wl.restarted) > result.valid_frames
    stale = parse_frame_header(wl.restarted, frame_offset(result.valid_frames, wl.page_size))
    assert stale.salts == old.salts
    # The restarted generation applies on top of the checkpointed database.
    before = scan(wl.after_rollback)
    checkpointed = apply_frames(wl.base, wl.after_rollback, before.commits[-1])
    for commit, exp in zip(result.commits, wl.restart_expected, strict=True):
        rows, pages, integrity = open_image(apply_frames(checkpointed, wl.restarted, commit), tmp_path)
        assert (rows, pages, integrity) == (exp.rows, exp.db_pages, "ok")


@pytest.mark.parametrize("moment", ["committed", "in_progress", "rolled_back", "after_rollback", "restarted"])
def test_numpy_and_python_agree(wl: Workload, moment: str) -> None:
    wal: bytes = getattr(wl, moment)
    assert_same(scan(wal, "numpy"), scan(wal, "python"))
    be = rewrite_big_endian(wal)
    assert_same(scan(be, "numpy"), scan(be, "python"))


# Byte offsets inside a frame, one per region of the frame.
REGIONS = {
    "pgno": 3,
    "db_pages": 5,
    "salt1": 8,
    "salt2": 15,
    "cksum1": 16,
    "cksum2": 23,
    "page_first": 24,
    "page_middle": -2000,  # from the end of the frame; inside the page for every page size
    "page_last": -1,
}


@pytest.mark.parametrize("verify", VERIFY)
@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_flipped_byte_stops_at_its_frame(wl: Workload, verify: str, region: str, where: str) -> None:
    n = total_frames(wl.committed)
    k = {"first": 0, "middle": n // 2, "last": n - 1}[where]
    rel = REGIONS[region]
    fsz = wl.page_size + FRAME_HEADER_SIZE
    offset = frame_offset(k, wl.page_size) + (rel if rel >= 0 else fsz + rel)
    if region == "page_middle" and wl.page_size < 4096:
        offset = frame_offset(k, wl.page_size) + FRAME_HEADER_SIZE + wl.page_size // 2
    result = scan(flip(wl.committed, offset), verify)
    assert result.valid_frames == k
    assert all(c.last_frame < k for c in result.commits)
    assert result.last_commit_frame < k
    assert len(result.pgnos) == k


@pytest.mark.parametrize("verify", VERIFY)
def test_zero_pgno_ends_the_valid_prefix(verify: str) -> None:
    wal = bytearray(workload(512).committed)
    k = 7
    struct.pack_into(">I", wal, frame_offset(k, 512), 0)
    assert scan(bytes(wal), verify).valid_frames == k


@pytest.mark.parametrize("verify", VERIFY)
def test_zero_pgno_with_a_correct_checksum_still_ends_the_prefix(verify: str) -> None:
    """pgno 0 is invalid by itself, not only because it breaks the checksum."""
    wal = bytearray(workload(512).committed)
    k = 7
    struct.pack_into(">I", wal, frame_offset(k, 512), 0)
    rechained = rechecksum(bytes(wal), big_endian=False, frames=total_frames(bytes(wal)))
    assert scan(rechained, verify).valid_frames == k


@pytest.mark.parametrize("verify", VERIFY)
def test_foreign_salt_with_a_correct_checksum_still_ends_the_prefix(verify: str) -> None:
    wal = bytearray(workload(512).committed)
    k = 9
    struct.pack_into(">I", wal, frame_offset(k, 512) + 12, 12345)
    rechained = rechecksum(bytes(wal), big_endian=False, frames=total_frames(bytes(wal)))
    assert scan(rechained, verify).valid_frames == k


@pytest.mark.parametrize("batch_bytes", [1, 3 * (512 + 24), 7 * (512 + 24) + 5])
@pytest.mark.parametrize("corrupt", [None, 0, 2, 3, 6, 7, 20])
def test_batch_boundaries_do_not_change_the_result(
    monkeypatch: pytest.MonkeyPatch, batch_bytes: int, corrupt: int | None
) -> None:
    wal = workload(512).committed
    if corrupt is not None:
        wal = flip(wal, frame_offset(corrupt, 512) + 100)
    expected = scan(wal, "python")
    monkeypatch.setattr(wal_module, "_BATCH_BYTES", batch_bytes)
    assert_same(scan(wal, "numpy"), expected)
    assert_same(scan(wal, "numpy", start=5), scan(wal, "python", start=5))


@pytest.mark.parametrize("verify", VERIFY)
def test_trailing_partial_frame_is_ignored(wl: Workload, verify: str) -> None:
    fsz = wl.page_size + FRAME_HEADER_SIZE
    whole = scan(wl.committed, verify)
    for cut in (1, 24, fsz // 2, fsz - 1):
        partial = scan(wl.committed[:-cut], verify)
        # The last frame (a commit) is incomplete, so everything up to the previous one counts.
        assert partial.valid_frames == whole.valid_frames - 1
        assert partial.commits == whole.commits[:-1]
        exact = scan(wl.committed[: len(wl.committed) - fsz], verify)
        assert_same(partial, exact)


@pytest.mark.parametrize("verify", VERIFY)
def test_scan_from_a_midpoint_matches_the_whole_scan(wl: Workload, verify: str) -> None:
    whole = scan(wl.committed, verify)
    starts = {0, 1, whole.valid_frames // 3, whole.valid_frames - 1, whole.valid_frames}
    starts |= {c.last_frame + 1 for c in whole.commits}
    for start in sorted(starts):
        part = scan(wl.committed, verify, start=start)
        assert part.valid_frames == whole.valid_frames
        assert part.commits == tuple(c for c in whole.commits if c.last_frame >= start)
        assert part.last_commit_frame == max(whole.last_commit_frame, start - 1)
        assert part.checksum_at_end == whole.checksum_at_end
        assert part.pgnos == whole.pgnos[start:]
        if part.commits:
            assert part.checksum_at_commit == whole.checksum_at_commit


@pytest.mark.parametrize("verify", VERIFY)
def test_chunked_scan_chained_by_checksum_at_end(wl: Workload, verify: str) -> None:
    """Scanning in chunks, each seeded by the previous chunk's end, finds the same commits."""
    header = header_of(wl.committed)
    whole = scan(wl.committed, verify)
    commits: list[Commit] = []
    frame, s = 0, header.checksum
    while True:
        chunk = memoryview(wl.committed)[frame_offset(frame, header.page_size) :][: 5 * header.frame_size]
        part = scan_frames(chunk, header, frame, s, verify=verify)
        commits.extend(part.commits)
        if part.valid_frames == frame:
            break
        frame, s = part.valid_frames, part.checksum_at_end
    assert tuple(commits) == whole.commits
    assert frame == whole.valid_frames


@pytest.mark.parametrize("verify", VERIFY)
def test_wrong_seed_checksum_rejects_the_first_frame(verify: str) -> None:
    wal = workload(512).committed
    ck1, ck2 = header_of(wal).checksum
    result = scan(wal, verify, start=0, s=(ck1, (ck2 + 1) & 0xFFFFFFFF))
    assert result.valid_frames == 0
    assert result.commits == ()
    assert result.last_commit_frame == -1
    assert result.checksum_at_commit == result.checksum_at_end == (ck1, (ck2 + 1) & 0xFFFFFFFF)


@pytest.mark.parametrize("verify", VERIFY)
def test_empty_buffer(verify: str) -> None:
    header = header_of(workload(512).committed)
    result = scan_frames(b"", header, 42, (1, 2), verify=verify)
    assert result == ScanResult(42, (), 41, (1, 2), [], (1, 2))


def test_scan_rejects_bad_arguments() -> None:
    header = header_of(workload(512).committed)
    with pytest.raises(ValueError, match="verify"):
        scan_frames(b"", header, 0, (0, 0), verify="numba")
    with pytest.raises(ValueError, match="start_frame"):
        scan_frames(b"", header, -1, (0, 0))


def test_scan_accepts_bytes_bytearray_and_memoryview(wl: Workload) -> None:
    header = header_of(wl.committed)
    body = wl.committed[WAL_HEADER_SIZE:]
    expected = scan_frames(body, header, 0, header.checksum)
    for buf in (bytearray(body), memoryview(body), memoryview(bytearray(body))):
        assert_same(scan_frames(buf, header, 0, header.checksum), expected)


def test_pgnos_do_not_alias_the_buffer() -> None:
    header = header_of(workload(512).committed)
    body = bytearray(workload(512).committed[WAL_HEADER_SIZE:])
    result = scan_frames(body, header, 0, header.checksum)
    before = list(result.pgnos)
    body[:] = bytes(len(body))
    assert result.pgnos == before


# ---------------------------------------------------------------------------- frames


def test_frame_page_is_a_view_of_the_page(wl: Workload) -> None:
    header = header_of(wl.committed)
    body = wl.committed[WAL_HEADER_SIZE:]
    n = total_frames(wl.committed)
    for i in (0, n - 1):
        page = frame_page(body, header, i)
        start = i * header.frame_size + FRAME_HEADER_SIZE
        assert isinstance(page, memoryview)
        assert page.obj is body
        assert bytes(page) == body[start : start + wl.page_size]
    with pytest.raises(IndexError):
        frame_page(body, header, n)
    with pytest.raises(IndexError):
        frame_page(body[:-1], header, n - 1)
    with pytest.raises(IndexError):
        frame_page(body, header, -1)


def test_frame_header_fields(wl: Workload) -> None:
    result = scan(wl.committed)
    first = parse_frame_header(wl.committed, frame_offset(0, wl.page_size))
    assert first.pgno == int(result.pgnos[0])
    assert first.salts == header_of(wl.committed).salts
    last = parse_frame_header(wl.committed, frame_offset(result.last_commit_frame, wl.page_size))
    assert last.is_commit and last.db_pages == wl.expected[-1].db_pages
    with pytest.raises(ValueError):
        parse_frame_header(b"\x00" * 23)


def test_frame_offset() -> None:
    assert frame_offset(0, 4096) == 32
    assert frame_offset(3, 4096) == 32 + 3 * 4120


# ---------------------------------------------------------------------------- big-endian


def test_big_endian_wal_scans_like_the_original(wl: Workload, tmp_path: Path) -> None:
    be = rewrite_big_endian(wl.committed)
    header = header_of(be)
    assert header.magic == WAL_MAGIC_BE and header.big_endian
    assert header.salts == header_of(wl.committed).salts
    ours, original = scan(be), scan(wl.committed)
    assert ours.commits == original.commits
    assert ours.valid_frames == original.valid_frames
    assert ours.pgnos == original.pgnos
    assert ours.checksum_at_commit != original.checksum_at_commit
    # SQLite itself recovers the rewritten WAL, so our byte-order reading matches its own.
    rows, pages, integrity = open_image(wl.base, tmp_path, wal=be)
    assert (rows, pages, integrity) == (wl.expected[-1].rows, wl.expected[-1].db_pages, "ok")


@pytest.mark.parametrize("verify", VERIFY)
def test_big_endian_flipped_byte_stops_at_its_frame(verify: str) -> None:
    be = rewrite_big_endian(workload(512).committed)
    k = total_frames(be) // 2
    for rel in (3, 9, 17, 24, 300):
        assert scan(flip(be, frame_offset(k, 512) + rel), verify).valid_frames == k


# ---------------------------------------------------------------------------- properties


def _header(page_size: int, big_endian: bool) -> WalHeader:
    return WalHeader(
        magic=WAL_MAGIC_BE if big_endian else WAL_MAGIC_LE,
        version=WAL_FORMAT_VERSION,
        page_size=page_size,
        checkpoint_seq=0,
        salt1=1,
        salt2=2,
        cksum1=0,
        cksum2=0,
        big_endian=big_endian,
    )


def _reference_frame_checksum(frame: bytes, s: tuple[int, int], big_endian: bool) -> tuple[int, int]:
    s = wal_checksum(frame[:8], *s, big_endian=big_endian)
    return wal_checksum(frame[FRAME_HEADER_SIZE:], *s, big_endian=big_endian)


@given(
    words=st.lists(U32, min_size=(512 + 24) // 4, max_size=(512 + 24) // 4),
    s1=U32,
    s2=U32,
    big_endian=st.booleans(),
)
def test_closed_form_equals_reference_on_drawn_words(
    words: list[int], s1: int, s2: int, big_endian: bool
) -> None:
    frame = struct.pack(f"<{len(words)}I", *words)
    got = frame_checksums(frame, _header(512, big_endian), (s1, s2))
    assert got.shape == (1, 2)
    assert tuple(int(v) for v in got[0]) == _reference_frame_checksum(frame, (s1, s2), big_endian)


@given(
    page_size=st.sampled_from([512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]),
    frames=st.integers(min_value=1, max_value=3),
    fill=st.sampled_from(["random", "zeros", "ones"]),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    s1=U32,
    s2=U32,
    big_endian=st.booleans(),
)
@settings(max_examples=60, deadline=None)
def test_closed_form_equals_reference_for_every_page_size(
    page_size: int, frames: int, fill: str, seed: int, s1: int, s2: int, big_endian: bool
) -> None:
    fsz = page_size + FRAME_HEADER_SIZE
    if fill == "random":
        buf = (
            np.random.default_rng(seed).integers(0, 2**32, size=frames * fsz // 4, dtype=np.uint32).tobytes()
        )
    else:
        buf = (b"\x00" if fill == "zeros" else b"\xff") * (frames * fsz)
    got = frame_checksums(buf, _header(page_size, big_endian), (s1, s2))
    prev = (s1, s2)
    for i in range(frames):
        frame = buf[i * fsz : (i + 1) * fsz]
        assert tuple(int(v) for v in got[i]) == _reference_frame_checksum(frame, prev, big_endian)
        prev = struct.unpack_from(">2I", frame, 16)  # the next frame chains from the stored value


@given(data=st.data(), big_endian=st.booleans())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_corruption_never_extends_the_valid_prefix(data: st.DataObject, big_endian: bool) -> None:
    wal = workload(512).committed
    if big_endian:
        wal = rewrite_big_endian(wal)
    original = scan(wal, "python")
    offsets = st.integers(WAL_HEADER_SIZE, len(wal) - 1)
    # Distinct offsets: two flips of the same byte could cancel out.
    corruptions = data.draw(
        st.lists(st.tuples(offsets, st.integers(1, 255)), min_size=1, max_size=4, unique_by=lambda c: c[0])
    )
    damaged = bytearray(wal)
    for offset, xor in corruptions:
        damaged[offset] ^= xor
    first_bad = min((offset - WAL_HEADER_SIZE) // (512 + FRAME_HEADER_SIZE) for offset, _ in corruptions)
    results = [scan(bytes(damaged), verify) for verify in VERIFY]
    for other in results[1:]:
        assert_same(results[0], other)
    result = results[0]
    assert result.valid_frames <= first_bad
    assert set(result.commits) <= set(original.commits)
    if len(corruptions) == 1:
        # One changed word always changes the checksum: its two coefficients are consecutive
        # Fibonacci numbers, so one of them is odd and cannot vanish mod 2**32.
        assert result.valid_frames == first_bad


def test_scan_result_is_frozen() -> None:
    result = scan(workload(512).committed)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.valid_frames = 0  # type: ignore[misc]


LAZY_NUMPY = """
import sqlite3, sys, tempfile, os
import bakelite.daemon.supervisor  # everything the daemon imports
from bakelite.sqlite import wal
assert "numpy" not in sys.modules, "numpy imported at start-up"
d = tempfile.mkdtemp()
db = os.path.join(d, "a.db")
con = sqlite3.connect(db, isolation_level=None)
con.execute("PRAGMA journal_mode=WAL")
con.execute("PRAGMA wal_autocheckpoint=0")
con.execute("CREATE TABLE t(x)")
for _ in range(40):
    con.execute("INSERT INTO t VALUES (randomblob(3000))")
image = open(db + "-wal", "rb").read()
hdr = wal.parse_wal_header(image)
small, big = image[32 : 32 + 3 * hdr.frame_size], image[32:]
assert len(big) > wal._PYTHON_SCAN_BYTES
first = wal.scan_frames(small, hdr, 0, hdr.checksum)
assert "numpy" not in sys.modules, "a small scan imported numpy"
assert first == wal.scan_frames(small, hdr, 0, hdr.checksum, verify="python")
whole = wal.scan_frames(big, hdr, 0, hdr.checksum)
assert "numpy" in sys.modules, "a big scan did not use numpy"
assert whole == wal.scan_frames(big, hdr, 0, hdr.checksum, verify="python")
assert len(whole.commits) == 41
assert wal.scan_frames(small, hdr, 0, hdr.checksum) == first
# Many small scans also end up in numpy, once they cost about what importing it does.
wal._numpy_loaded = False
wal._python_scanned = 0
for _ in range(wal._PYTHON_BUDGET_BYTES // len(small) + 1):
    wal.scan_frames(small, hdr, 0, hdr.checksum)
assert wal._python_scanned >= wal._PYTHON_BUDGET_BYTES
wal.scan_frames(small, hdr, 0, hdr.checksum)
assert wal._numpy_loaded
# The daemon preloads it once every database has started: small scans use it from then on.
wal._numpy_loaded = False
wal._python_scanned = 0
wal.preload_numpy()
assert wal._numpy_loaded
print("ok")
"""


def test_daemon_imports_numpy_only_for_a_scan_that_needs_it() -> None:
    # numpy is a third of the daemon's start-up; small scans are checked in Python until then.
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", LAZY_NUMPY], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
