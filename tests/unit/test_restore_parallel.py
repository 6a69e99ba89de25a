"""Restore decodes frames on a thread pool: the same bytes, the same failures, a bounded window.

``ObjectReader.frames_concurrent`` must be indistinguishable from ``ObjectReader.frames`` except
for speed: every frame yielded before a failure is the same, the failure raised is the first one in
stream order (same class, same message), and the whole-object checks still run after the last
frame.  The restore built on it must produce the same file and leave nothing behind on a failure.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

import crc32c
import pytest

from bakelite.crypto.aead import XChaCha20Poly1305
from bakelite.errors import BakeliteError, CorruptionError
from bakelite.format import changeset as changeset_fmt
from bakelite.format import layout
from bakelite.format import snapshot as snapshot_fmt
from bakelite.format.envelope import FrameCipher, ObjectReader, encode_object
from bakelite.format.snapshot import snapshot_header
from bakelite.ops import restore as restore_mod
from bakelite.ops.restore import restore_to_path
from bakelite.storage.memory import MemoryStorage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from replica_builder import ReplicaBuilder, Workload

P = ParamSpec("P")
T = TypeVar("T")

PS = 512
BACKUP = "20261122T010203004Z-0123abcd"
T0 = 1_780_000_000.0
KEY = bytes(range(32))
_PREFIX = 10  # "BKLT" | version:u16 | header_len:u32
_FRAME = struct.Struct(">III")


# -- helpers -------------------------------------------------------------------------------------


def make_frames(count: int, seed: int = 1) -> list[bytes]:
    """Whole-page raw frames of varied sizes, alternately incompressible and repetitive."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        n = PS * rng.randint(1, 8)
        out.append(rng.randbytes(n) if i % 2 else bytes([i % 251]) * n)
    return out


def make_object(frames: list[bytes], codec: str = "zstd", cipher: FrameCipher | None = None) -> bytes:
    """An encoded snapshot object holding ``frames``."""
    header = snapshot_header(
        db="app",
        backup=BACKUP,
        page_size=PS,
        db_pages=sum(len(f) for f in frames) // PS,
        commit_time=T0,
        codec=codec,
        encrypted=cipher is not None,
        created=T0,
    )
    data, _ = encode_object(header, frames, cipher)
    return data


def frame_spans(data: bytes) -> list[tuple[int, int]]:
    """``(offset of the frame header, stored length)`` of every frame of an encoded object."""
    (hlen,) = struct.unpack_from(">I", data, 6)
    pos = _PREFIX + hlen
    spans = []
    while True:
        stored_len, raw_len, crc = _FRAME.unpack_from(data, pos)
        if stored_len == raw_len == crc == 0:
            return spans
        spans.append((pos, stored_len))
        pos += _FRAME.size + stored_len


def flip_in_frame(data: bytes, index: int, *, fix_crc: bool = False) -> bytes:
    """Flip one byte in the middle of frame ``index``'s stored bytes (optionally re-CRC the frame)."""
    pos, stored_len = frame_spans(data)[index]
    body = pos + _FRAME.size
    bad = bytearray(data)
    bad[body + stored_len // 2] ^= 0x5A
    if fix_crc:
        struct.pack_into(">I", bad, pos + 8, crc32c.crc32c(bytes(bad[body : body + stored_len])))
    return bytes(bad)


def drop_frame(data: bytes, index: int) -> bytes:
    """Remove frame ``index`` whole (the rest stays well formed)."""
    pos, stored_len = frame_spans(data)[index]
    return data[:pos] + data[pos + _FRAME.size + stored_len :]


def resign_header(data: bytes, **changes: object) -> bytes:
    """Rewrite header fields and recompute the object CRC: only the content hash can notice."""
    (hlen,) = struct.unpack_from(">I", data, 6)
    header = json.loads(data[_PREFIX : _PREFIX + hlen])
    header.update(changes)
    hbytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    body = data[:6] + struct.pack(">I", len(hbytes)) + hbytes + data[_PREFIX + hlen : -4]
    return body + struct.pack(">I", crc32c.crc32c(body))


def decode(
    data: bytes,
    cipher: FrameCipher | None = None,
    *,
    window: int | None = None,
    window_bytes: int = 1 << 30,
    executor: Executor | None = None,
) -> tuple[list[bytes], BaseException | None]:
    """The frames yielded and the error raised: sequentially (``window=None``) or concurrently."""
    got: list[bytes] = []
    try:
        reader = ObjectReader(io.BytesIO(data), "obj", cipher)
        if window is None:
            got.extend(reader.frames())
        else:
            with ThreadPoolExecutor(max_workers=3) as pool:
                got.extend(reader.frames_concurrent(executor or pool, window, window_bytes))
        assert reader.footer is not None
    except BakeliteError as e:
        return got, e
    return got, None


def same_error(a: BaseException | None, b: BaseException | None) -> bool:
    return type(a) is type(b) and str(a) == str(b)


class CountingExecutor(Executor):
    """Delegates to a pool and counts submissions."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.submitted = 0

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        self.submitted += 1
        return self.inner.submit(fn, *args, **kwargs)


def frame_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("restore-frame")]


# -- the reader ----------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["zstd", "lz4", "none"])
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "sealed"])
@pytest.mark.parametrize(("window", "window_bytes"), [(1, 1 << 30), (3, 1 << 30), (8, 1 << 30), (8, 3000)])
def test_concurrent_frames_equal_sequential(
    codec: str, encrypted: bool, window: int, window_bytes: int
) -> None:
    cipher = XChaCha20Poly1305(KEY) if encrypted else None
    frames = make_frames(25)
    data = make_object(frames, codec, cipher)
    seq, seq_err = decode(data, cipher)
    par, par_err = decode(data, cipher, window=window, window_bytes=window_bytes)
    assert seq_err is None and par_err is None
    assert par == seq == frames


DAMAGES: dict[str, Callable[[bytes], bytes]] = {
    "crc-middle": lambda d: flip_in_frame(d, 12),
    "crc-first": lambda d: flip_in_frame(d, 0),
    "crc-last": lambda d: flip_in_frame(d, 24),
    "payload-middle-crc-fixed": lambda d: flip_in_frame(d, 12, fix_crc=True),
    "crc-middle-then-truncated": lambda d: flip_in_frame(d, 5)[: frame_spans(d)[9][0] + 20],
    "truncated-in-a-frame": lambda d: d[: frame_spans(d)[9][0] + 20],
    "truncated-in-a-frame-header": lambda d: d[: frame_spans(d)[9][0] + 5],
    "implausible-length": lambda d: (
        d[: frame_spans(d)[7][0]] + struct.pack(">I", 0xFFFFFFFF) + d[frame_spans(d)[7][0] + 4 :]
    ),
    "frame-dropped": lambda d: drop_frame(d, 12),
    "header-rewritten": lambda d: resign_header(d, created=T0 + 1),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "sealed"])
@pytest.mark.parametrize("window", [1, 2, 8])
def test_damage_fails_the_same_way(damage: str, encrypted: bool, window: int) -> None:
    cipher = XChaCha20Poly1305(KEY) if encrypted else None
    bad = DAMAGES[damage](make_object(make_frames(25), "zstd", cipher))
    seq, seq_err = decode(bad, cipher)
    par, par_err = decode(bad, cipher, window=window)
    assert isinstance(seq_err, CorruptionError), seq_err
    assert same_error(par_err, seq_err), (par_err, seq_err)
    # Nothing more and nothing less is handed to the writer before the failure.
    assert par == seq


@pytest.mark.parametrize("window", [1, 2, 3, 8])
def test_window_bounds_frames_in_flight(window: int) -> None:
    data = make_object(make_frames(30))
    with ThreadPoolExecutor(max_workers=4) as pool:
        counting = CountingExecutor(pool)
        reader = ObjectReader(io.BytesIO(data), "obj")
        ahead = [
            counting.submitted - k for k, _ in enumerate(reader.frames_concurrent(counting, window, 1 << 30))
        ]
    assert reader.footer is not None and len(ahead) == 30
    # Frame k is in flight when it is yielded, so at most window - 1 frames follow it.
    assert max(ahead) == window


@pytest.mark.parametrize(("budget_frames", "expected"), [(0.5, 1), (1.0, 1), (2.5, 2), (4.0, 4)])
def test_window_bytes_bound_frames_in_flight(budget_frames: float, expected: int) -> None:
    rng = random.Random(3)
    size = 4 * PS
    # codec none: each frame costs exactly 2 * size (stored plus raw).
    data = make_object([rng.randbytes(size) for _ in range(20)], codec="none")
    with ThreadPoolExecutor(max_workers=4) as pool:
        counting = CountingExecutor(pool)
        reader = ObjectReader(io.BytesIO(data), "obj")
        frames = reader.frames_concurrent(counting, 16, int(budget_frames * 2 * size))
        ahead = [counting.submitted - k for k, _ in enumerate(frames)]
    assert reader.footer is not None
    assert max(ahead) == expected


class StallingExecutor(Executor):
    """Runs the first ``run`` tasks at once and never starts the others."""

    def __init__(self, run: int) -> None:
        self.run = run
        self.futures: list[Future[object]] = []

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        if len(self.futures) < self.run:
            future.set_result(fn(*args, **kwargs))
        self.futures.append(future)  # type: ignore[arg-type]
        return future


def test_closing_early_cancels_queued_frames() -> None:
    stalling = StallingExecutor(run=2)
    reader = ObjectReader(io.BytesIO(make_object(make_frames(30))), "obj")
    frames = reader.frames_concurrent(stalling, 6, 1 << 30)
    with contextlib.closing(frames):
        next(frames)
        next(frames)
    # Frames 0 and 1 were used; the window was refilled to 6 and the 5 queued ones are dropped.
    assert len(stalling.futures) == 7
    assert all(f.cancelled() for f in stalling.futures[2:])
    assert reader.footer is None  # never declared good


# -- the restore ---------------------------------------------------------------------------------


@pytest.fixture
def replica(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ReplicaBuilder:
    """A real database as a snapshot of many small frames plus multi-frame change-sets."""
    monkeypatch.setattr(snapshot_fmt, "FRAME_BYTES", 16 * 1024)
    monkeypatch.setattr(changeset_fmt, "FRAME_RAW", 8 * 1024)
    rng = random.Random(11)
    work = Workload(tmp_path / "src.db")
    rb = ReplicaBuilder(MemoryStorage(), "app")
    rows = [
        ("INSERT INTO t(b) VALUES (?)", (rng.randbytes(rng.choice([100, 3000, 20000])),)) for _ in range(80)
    ]
    rb.new_backup(work.run("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)", *rows), T0)
    t = T0
    for i in range(3):
        t += 1
        rb.commit(work.run(("UPDATE t SET b = ? WHERE id % 4 = ?", (rng.randbytes(5000), i))), t)
        rb.flush()
    work.close()
    return rb


def snapshot_key(rb: ReplicaBuilder) -> str:
    return layout.snapshot_key("app", rb.backup)


def sequential(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the restore decode one frame at a time, as before the pool existed."""

    @contextlib.contextmanager
    def one_at_a_time(reader: ObjectReader) -> Iterator[Iterator[bytes]]:
        yield reader.frames()

    monkeypatch.setattr(restore_mod, "_decoded_frames", one_at_a_time)


def assert_nothing_left(out: Path) -> None:
    assert not out.exists()
    assert not Path(f"{out}{restore_mod.TMP_SUFFIX}").exists()
    assert frame_threads() == []


@pytest.mark.parametrize(
    ("workers", "window", "window_bytes"),
    [(1, 1, 1), (2, 4, 64 << 20), (4, 8, 64 << 20), (3, 2, 20_000)],
)
def test_restore_is_byte_identical_to_the_sequential_path(
    replica: ReplicaBuilder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: int,
    window: int,
    window_bytes: int,
) -> None:
    store = replica.storage
    reader = ObjectReader(io.BytesIO(store.get(snapshot_key(replica))), "snap")
    assert sum(1 for _ in reader.frames()) > 20  # the snapshot really is many frames
    # Small enough that the change-sets stream through the pool too.
    monkeypatch.setattr(restore_mod, "WHOLE_OBJECT_MAX", 1)
    monkeypatch.setattr(restore_mod, "FRAME_WORKERS", workers)
    monkeypatch.setattr(restore_mod, "FRAME_WINDOW", window)
    monkeypatch.setattr(restore_mod, "FRAME_WINDOW_BYTES", window_bytes)
    with monkeypatch.context() as m:
        # The pool path must be the one taken, for the snapshot and the streamed change-sets.
        m.setattr(ObjectReader, "frames", lambda self: pytest.fail("decoded one frame at a time"))
        par = restore_to_path(store, "app", replica.backup, None, tmp_path / "par.db")
    with monkeypatch.context() as m:
        sequential(m)
        seq = restore_to_path(store, "app", replica.backup, None, tmp_path / "seq.db")
    assert (
        (tmp_path / "par.db").read_bytes() == (tmp_path / "seq.db").read_bytes() == replica.history[-1].state
    )
    assert (par.seq, par.changesets_applied, par.bytes_downloaded) == (3, 3, seq.bytes_downloaded)
    assert frame_threads() == []


def test_encrypted_snapshot_restores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot_fmt, "FRAME_BYTES", 8 * 1024)
    work = Workload(tmp_path / "src.db")
    rng = random.Random(2)
    state = work.run(
        "CREATE TABLE t(b BLOB)", *[("INSERT INTO t VALUES (?)", (rng.randbytes(3000),)) for _ in range(40)]
    )
    work.close()
    cipher = XChaCha20Poly1305(KEY)
    ps = 4096
    step = snapshot_fmt.frame_pages(ps) * ps
    header = snapshot_header(
        db="app",
        backup=BACKUP,
        page_size=ps,
        db_pages=len(state) // ps,
        commit_time=T0,
        codec="zstd",
        encrypted=True,
        created=T0,
    )
    data, _ = encode_object(header, [state[i : i + step] for i in range(0, len(state), step)], cipher)
    assert len(frame_spans(data)) > 10
    store = MemoryStorage()
    store.put(layout.snapshot_key("app", BACKUP), data)
    out = tmp_path / "enc.db"
    restore_to_path(store, "app", BACKUP, None, out, cipher=cipher, require_encrypted=True)
    assert out.read_bytes() == state

    # A sealed middle frame altered (its CRC made to match): authentication fails, nothing is left.
    store.put(layout.snapshot_key("app", BACKUP), flip_in_frame(data, 6, fix_crc=True))
    bad = tmp_path / "bad" / "enc.db"
    with pytest.raises(CorruptionError, match="frame 6 fails decryption"):
        restore_to_path(store, "app", BACKUP, None, bad, cipher=cipher, require_encrypted=True)
    assert_nothing_left(bad)


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        ("crc-middle", "fails its CRC-32C"),
        ("crc-middle-then-truncated", "frame 5 fails its CRC-32C"),
        ("frame-dropped", "object fails its CRC-32C"),
        ("header-rewritten", "content hash mismatch"),
    ],
)
def test_damaged_snapshot_fails_loudly_and_leaves_nothing(
    replica: ReplicaBuilder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str, needle: str
) -> None:
    store = replica.storage
    key = snapshot_key(replica)
    store.put(key, DAMAGES[damage](store.get(key)))
    out = tmp_path / "out" / "app.db"
    with pytest.raises(CorruptionError) as par:
        restore_to_path(store, "app", replica.backup, None, out)
    assert_nothing_left(out)
    with monkeypatch.context() as m:
        sequential(m)
        with pytest.raises(CorruptionError) as seq:
            restore_to_path(store, "app", replica.backup, None, out)
    assert_nothing_left(out)
    assert same_error(par.value, seq.value)
    assert needle in str(par.value)


def test_a_failing_write_stops_the_pool(
    replica: ReplicaBuilder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = 0

    def failing_write(fd: int, data: bytes) -> None:
        nonlocal writes
        writes += 1
        if writes == 5:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(restore_mod, "_write_all", failing_write)
    out = tmp_path / "out" / "app.db"
    with pytest.raises(OSError, match="No space"):
        restore_to_path(replica.storage, "app", replica.backup, None, out)
    assert_nothing_left(out)
