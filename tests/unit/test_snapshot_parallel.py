"""Snapshot frames encoded on several threads: same bytes as one thread, bounded, failures propagate."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Generator, Iterator
from pathlib import Path

import blake3
import pytest

from bakelite.errors import EncryptionError
from bakelite.format import snapshot as snapshot_format
from bakelite.format.envelope import ObjectHeader, ObjectWriter, decode_object
from bakelite.format.snapshot import check_snapshot_frames, snapshot_header
from bakelite.replication.snapshotter import SnapshotPlan, plan_snapshot, snapshot_frames
from bakelite.sqlite.connections import LiveDatabase
from bakelite.storage.file import FileStorage

BACKUP = "20261122T010203004Z-0123abcd"
PS = 1024
KEY = "app/snapshot-test"


class XorCipher:
    """A deterministic stand-in cipher: the tag names the AD, so a frame sealed out of place fails."""

    key_id = "test-key"

    def seal(self, plaintext: bytes, ad: bytes) -> bytes:
        """Prefix a digest of ``ad`` and the plaintext."""
        return blake3.blake3(ad + plaintext).digest() + bytes(plaintext)

    def open(self, ciphertext: bytes, ad: bytes) -> bytes:
        """Check the prefix against ``ad`` and the body."""
        tag, body = ciphertext[:32], ciphertext[32:]
        if blake3.blake3(ad + body).digest() != tag:
            raise EncryptionError("authentication failed")
        return body


def _header(plan: SnapshotPlan, encrypted: bool = False) -> ObjectHeader:
    return snapshot_header(
        db="app",
        backup=BACKUP,
        page_size=plan.page_size,
        db_pages=plan.db_pages,
        commit_time=1.0,
        codec="zstd",
        encrypted=encrypted,
        created=1.0,
        position=None if plan.position is None else plan.position.to_dict(),
    )


@pytest.fixture
def small_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    # 32 pages a frame, so a database of a few hundred KiB spans many frames.
    monkeypatch.setattr(snapshot_format, "FRAME_BYTES", 32 * PS)


@pytest.fixture
def live(tmp_path: Path, small_frames: None) -> Iterator[LiveDatabase]:
    """A WAL database with a checkpointed part and committed pages still only in the WAL."""
    db = tmp_path / "app.db"
    app = sqlite3.connect(db, isolation_level=None)
    app.execute(f"PRAGMA page_size={PS}")
    app.execute("PRAGMA journal_mode=WAL")
    app.execute("PRAGMA wal_autocheckpoint=0")
    app.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    for i in range(400):
        # Half compressible, half random: frames of very different compressed sizes.
        v = f"zeroblob({i * 3 % 900})" if i % 2 else "randomblob(700)"
        app.execute(f"INSERT INTO t(v) VALUES ({v})")
    app.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for _ in range(150):
        app.execute("INSERT INTO t(v) VALUES (randomblob(800))")  # pages past the file's end
    app.execute("UPDATE t SET v = randomblob(300) WHERE id % 11 = 0")
    ld = LiveDatabase(db, busy_timeout=1.0)
    try:
        with ld.freeze():
            ld.acquire_initial()
        yield ld
    finally:
        ld.close()
        app.close()  # the app stays connected so its WAL (the overlay) is not checkpointed away


def _encode(
    live: LiveDatabase, workers: int, window: int | None = None, cipher: XorCipher | None = None
) -> bytes:
    plan = plan_snapshot(live)
    w = ObjectWriter(_header(plan, cipher is not None), cipher, workers=workers, window=window)
    return b"".join(w.chunks(snapshot_frames(live, plan)))


def _image_rows(image: bytes, tmp_path: Path) -> list[tuple[object, ...]]:
    out = tmp_path / "image.db"
    out.write_bytes(image)
    con = sqlite3.connect(f"file:{out}?immutable=1", uri=True)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return con.execute("SELECT * FROM t ORDER BY id").fetchall()
    finally:
        con.close()


def test_parallel_object_is_byte_identical_to_single_threaded(live: LiveDatabase, tmp_path: Path) -> None:
    plan = plan_snapshot(live)
    assert plan.overlay and plan.db_pages > 10 * snapshot_format.frame_pages(PS)
    one = _encode(live, workers=1)
    for workers, window in [(2, None), (3, None), (4, 1), (2, 7)]:
        assert _encode(live, workers, window) == one, (workers, window)
    header, frames, footer = decode_object(one)
    assert footer.frames > 10
    image = b"".join(check_snapshot_frames(iter(frames), header))
    expected = sqlite3.connect(live.path).execute("SELECT * FROM t ORDER BY id").fetchall()
    assert _image_rows(image, tmp_path) == expected


def test_parallel_sealing_binds_each_frame_to_its_own_index(live: LiveDatabase) -> None:
    cipher = XorCipher()
    one = _encode(live, workers=1, cipher=cipher)
    assert _encode(live, workers=3, cipher=cipher) == one
    header, frames, _ = decode_object(one, cipher=cipher)
    assert header.encrypted and len(frames) > 10


def test_frames_are_encoded_concurrently() -> None:
    # Frame 0 cannot finish sealing until frame 1 has started: one thread would never get there.
    both_started = threading.Barrier(2, timeout=30)

    class Rendezvous(XorCipher):
        def seal(self, plaintext: bytes, ad: bytes) -> bytes:
            if ad.endswith(b"\0\0\0\0") or ad.endswith(b"\0\0\0\1"):
                both_started.wait()
            return super().seal(plaintext, ad)

    header = ObjectHeader(kind="snapshot", db="app", backup=BACKUP, page_size=PS, encrypted=True)
    frames = [bytes([i]) * PS for i in range(6)]
    data = b"".join(ObjectWriter(header, Rendezvous(), workers=2).chunks(frames))
    assert decode_object(data, cipher=XorCipher())[1] == frames


def test_in_flight_window_is_bounded() -> None:
    header = ObjectHeader(kind="snapshot", db="app", backup=BACKUP, page_size=PS)
    pulled = 0

    def source() -> Iterator[bytes]:
        nonlocal pulled
        for i in range(40):
            pulled += 1
            yield bytes([i]) * PS * 4

    window = 3
    writer = ObjectWriter(header, workers=2, window=window)
    ahead: list[int] = []
    chunks = writer.chunks(source())
    next(chunks)  # the object header
    for received in range(1, 41):
        next(chunks)
        # Frames read from the input but not yet handed out, besides the one just handed out.
        ahead.append(pulled - received)
    assert max(ahead) == window - 1
    assert pulled == 40
    tail = list(chunks)
    assert len(tail) == 1 and writer.footer is not None and writer.footer.frames == 40


def _encode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("bakelite-encode")]


def test_worker_failure_propagates_and_nothing_is_published(tmp_path: Path) -> None:
    class Failing(XorCipher):
        def seal(self, plaintext: bytes, ad: bytes) -> bytes:
            if ad.endswith(b"\0\0\0\5"):
                raise RuntimeError("seal failed on frame 5")
            return super().seal(plaintext, ad)

    header = ObjectHeader(kind="snapshot", db="app", backup=BACKUP, page_size=PS, encrypted=True)
    storage = FileStorage(tmp_path / "backups")
    pulled = 0

    def source() -> Iterator[bytes]:
        nonlocal pulled
        for i in range(100):
            pulled += 1
            yield bytes([i]) * PS

    with pytest.raises(RuntimeError, match="frame 5"):
        storage.put_stream(KEY, ObjectWriter(header, Failing(), workers=3).chunks(source()))
    assert storage.stat(KEY) is None
    assert [p for p in (tmp_path / "backups").rglob("*") if p.is_file()] == []
    assert pulled < 100  # stopped reading once the failure surfaced
    assert _encode_threads() == []


def test_input_failure_propagates_and_nothing_is_published(tmp_path: Path) -> None:
    header = ObjectHeader(kind="snapshot", db="app", backup=BACKUP, page_size=PS)
    storage = FileStorage(tmp_path / "backups")

    def source() -> Iterator[bytes]:
        for i in range(10):
            yield bytes([i]) * PS
        raise OSError("the database went away")

    with pytest.raises(OSError, match="went away"):
        storage.put_stream(KEY, ObjectWriter(header, workers=2).chunks(source()))
    assert storage.stat(KEY) is None
    assert _encode_threads() == []


def test_abandoned_writer_stops_its_threads() -> None:
    header = ObjectHeader(kind="snapshot", db="app", backup=BACKUP, page_size=PS)
    chunks = ObjectWriter(header, workers=2).chunks(bytes([i]) * PS for i in range(50))
    assert isinstance(chunks, Generator)
    next(chunks)
    next(chunks)
    chunks.close()
    assert _encode_threads() == []


@pytest.mark.parametrize(("workers", "window"), [(0, None), (2, 0)])
def test_bad_worker_counts_are_refused(workers: int, window: int | None) -> None:
    header = ObjectHeader(kind="snapshot", db="app", backup=BACKUP, page_size=PS)
    with pytest.raises(ValueError, match="at least 1"):
        ObjectWriter(header, workers=workers, window=window)
