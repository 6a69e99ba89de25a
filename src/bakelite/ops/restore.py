"""Rebuild a database file from its replica: the latest state or the newest commit at or before T.

The restore is written to ``<output>.tmp-restore`` beside the output and only becomes ``output``
once every object on the path was verified, the file was fsynced and ``PRAGMA integrity_check``
said ok; any failure removes the temp file and leaves nothing at ``output``.

* The snapshot streams frame by frame (each frame checked before it is written; the whole-object
  checks finish before the first change-set is applied), so memory stays bounded whatever the
  database size.  Its frames are checked, decrypted and decompressed by ``FRAME_WORKERS`` threads
  (the codecs, CRC-32C and the cipher release the GIL) within a window of ``FRAME_WINDOW`` frames,
  and written in order; change-sets too big to fetch whole stream the same way.
* Each change-set's identity must match its key and its ``prev`` must equal its predecessor's link
  before any of its pages is written.  Objects up to ``WHOLE_OBJECT_MAX`` are fetched whole and fully
  verified first (by a few prefetch threads, within a byte budget); bigger ones stream, and their
  full check completes before the restore is committed.
* Commits apply as the daemon recorded them: truncate to ``truncate_to`` if set, write each page
  with pgno <= db_pages, truncate to db_pages.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import io
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from bakelite.config.model import Database
from bakelite.errors import (
    ChainBrokenError,
    CorruptionError,
    IntegrityCheckError,
    LockHeldError,
    NoReplicaError,
    ObjectNotFound,
    OutputExistsError,
)
from bakelite.format.changeset import ByteFeed, iter_commits
from bakelite.format.envelope import (
    FrameCipher,
    ObjectFooter,
    ObjectHeader,
    ObjectReader,
    chain_link,
)
from bakelite.format.snapshot import check_snapshot_frames, snapshot_commit_time, snapshot_db_pages
from bakelite.fsutil import fsync_dir
from bakelite.ops.catalog import (
    PAGE_SLICE,
    BackupInfo,
    CountingReader,
    StoredObject,
    check_identity,
    commit_times,
    iter_spans_needing_detail,
    land_inside,
    list_backups,
    resolve_target,
    restore_points,
    select_chain,
    skip_bytes,
    vanished,
)
from bakelite.ops.timeparse import parse_timestamp, to_datetime
from bakelite.sqlite.integrity import check_integrity
from bakelite.storage.base import Storage

logger = logging.getLogger(__name__)

# Fetched whole (and verified before applying) up to this size; bigger objects stream.
WHOLE_OBJECT_MAX = 64 * 1024 * 1024
# Bytes of fetched-ahead objects held at once (at least one object is always admitted).
PREFETCH_BUDGET = 64 * 1024 * 1024
PREFETCH_WORKERS = 4
# Decoded frames kept from the verification pass, per object; beyond it the frames are decoded
# again when applied (cheaper than holding a large object's pages twice).
KEEP_RAW_MAX = 8 * 1024 * 1024
# Threads decoding the frames of a streamed object.  Decompression is most of a restore's CPU
# outside integrity_check; beyond a few cores the reading and writing thread is the bottleneck.
FRAME_WORKERS = max(1, min(4, os.cpu_count() or 1))
# Frames read but not yet written: enough to keep every worker busy while the writer catches up,
# few enough that memory stays bounded (a snapshot frame is 4 MiB raw).
FRAME_WINDOW = 2 * FRAME_WORKERS
# ...and at most this many stored plus raw bytes of them (one frame is always admitted): about six
# snapshot frames, so four workers do not take peak memory far past a two-worker restore.
FRAME_WINDOW_BYTES = 40 * 1024 * 1024
# Connections running the restore's integrity_check side by side (bakelite.sqlite.integrity), and
# the page cache they share, in KiB: bounded, so restore memory stays flat at any size.
INTEGRITY_WORKERS = max(1, min(4, os.cpu_count() or 1))
INTEGRITY_CACHE_BUDGET_KIB = 64 * 1024
TMP_SUFFIX = ".tmp-restore"
# Files SQLite would read beside a database: a stale WAL or hot journal left from a deleted database
# would be replayed into the restored one on its first open.
SIDECAR_SUFFIXES = ("-wal", "-shm", "-journal")

ProgressFn = Callable[[int, int | None], None]


@dataclass(frozen=True)
class RestoreResult:
    """What ``restore_to_path`` rebuilt."""

    database: str
    output: Path
    backup: str
    seq: int
    time: float
    changesets_applied: int
    lineage_verified: int
    page_size: int
    db_pages: int
    bytes_downloaded: int
    integrity_check: str


@dataclass(frozen=True)
class RestoreReport:
    """Everything a restore summary shows; ``skipped`` is set when a guard made it a no-op.

    ``requested`` is the ``--timestamp`` text (``None`` for the latest state) and ``requested_at``
    what it resolved to; ``landed_at``/``landed_seq``/``backup`` name the commit restored.
    """

    database: str
    output: Path
    skipped: bool = False
    skip_reason: str | None = None
    requested: str | None = None
    requested_at: datetime | None = None
    landed_at: datetime | None = None
    landed_seq: int | None = None
    backup: str | None = None
    changesets_applied: int = 0
    lineage_verified: int = 0
    lineage_total: int = 0
    page_size: int = 0
    db_pages: int = 0
    db_bytes: int = 0
    bytes_downloaded: int = 0
    integrity_check: str | None = None
    elapsed_seconds: float = 0.0


def restore(
    database: Database,
    storage: Storage,
    *,
    output: Path | None = None,
    timestamp: str | None = None,
    if_db_not_exists: bool = False,
    if_replica_exists: bool = False,
    cipher: FrameCipher | None = None,
    require_encrypted: bool | None = None,
    progress: ProgressFn | None = None,
    now: float | None = None,
) -> RestoreReport:
    """Restore ``database`` from ``storage`` to ``output`` (default: its configured path)."""
    started = time.monotonic()
    name = database.name
    out = Path(os.path.abspath(output if output is not None else database.path))
    # A bad --timestamp is a usage error whatever the guards say.
    target = None if timestamp is None else parse_timestamp(timestamp, time.time() if now is None else now)
    if require_encrypted is None:
        require_encrypted = database.encryption.require_encrypted if database.encryption else False
    if os.path.lexists(out):
        if if_db_not_exists:
            return RestoreReport(name, out, skipped=True, skip_reason=f"{out} already exists")
        raise _exists(out)
    complete = [b for b in list_backups(storage, name) if b.complete]
    if not complete:
        if if_replica_exists:
            return RestoreReport(name, out, skipped=True, skip_reason=f"no backup on {storage.describe()}")
        raise NoReplicaError(
            f"no backup of {name!r} on {storage.describe()}",
            hint="is the daemon running for it? `bakelite status` shows; "
            "add --if-replica-exists to make this a no-op on a fresh deployment",
        )
    # Without a target only the newest backup matters: CURRENT is advisory, the listing decides.
    spans = restore_points(storage, name, complete if target is not None else complete[-1:], detail=False)
    downloaded = 0
    if target is not None:
        # Only a backup whose interior holds the target needs every header read.
        needed = {s.backup for s in iter_spans_needing_detail(spans, target)}
        if needed:
            detailed = restore_points(storage, name, [b for b in complete if b.backup in needed])
            by_backup = {s.backup: s for s in detailed}
            spans = [by_backup.get(s.backup, s) for s in spans]
    resolution = resolve_target(spans, target)
    if resolution.inside is not None:
        assert target is not None
        span = next(s for s in spans if s.backup == resolution.backup)
        commits, read = commit_times(
            storage,
            resolution.inside.key,
            span.page_size,
            cipher=cipher,
            require_encrypted=require_encrypted,
        )
        downloaded += read
        resolution = land_inside(resolution, commits, target)
    info = next(b for b in complete if b.backup == resolution.backup)
    result = restore_to_path(
        storage,
        name,
        resolution.backup,
        resolution.seq,
        out,
        cipher=cipher,
        require_encrypted=require_encrypted,
        progress=progress,
        listing=info,
    )
    return RestoreReport(
        database=name,
        output=out,
        requested=timestamp,
        requested_at=None if target is None else to_datetime(target),
        landed_at=to_datetime(result.time),
        landed_seq=result.seq,
        backup=result.backup,
        changesets_applied=result.changesets_applied,
        lineage_verified=result.lineage_verified,
        lineage_total=result.changesets_applied,
        page_size=result.page_size,
        db_pages=result.db_pages,
        db_bytes=result.db_pages * result.page_size,
        bytes_downloaded=downloaded + result.bytes_downloaded,
        integrity_check=result.integrity_check,
        elapsed_seconds=time.monotonic() - started,
    )


def restore_to_path(
    storage: Storage,
    db_name: str,
    backup: str,
    target_seq: int | None,
    output: Path,
    *,
    cipher: FrameCipher | None = None,
    require_encrypted: bool = False,
    progress: ProgressFn | None = None,
    listing: BackupInfo | None = None,
) -> RestoreResult:
    """Rebuild commit ``target_seq`` (``None``: the newest) of ``backup`` at ``output``, verified."""
    out = Path(os.path.abspath(output))
    if os.path.lexists(out):
        raise _exists(out)
    info = listing if listing is not None else _find_backup(storage, db_name, backup)
    if info.snapshot is None:
        raise ChainBrokenError(
            f"backup {backup} of {db_name!r} has no snapshot",
            hint="it is incomplete (interrupted while being created); restore another backup",
        )
    if target_seq is None:
        # The newest stored commit, so a hole anywhere before it fails loudly.
        target_seq = max((o.ref.last for o in info.changesets), default=0)
    path = select_chain(backup, info.changesets, target_seq)
    total = info.snapshot.size + sum(o.size for o in path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + TMP_SUFFIX)
    fd = _open_tmp(tmp)
    started = time.monotonic()
    try:
        applier = _Applier(fd, db_name, backup, target_seq, progress, total, cipher, require_encrypted)
        applier.snapshot(storage, info.snapshot)
        applier.changesets(storage, path)
        written = time.monotonic()
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    try:
        # The fsync runs while integrity_check reads the file (from the page cache); the file is
        # published only once both have succeeded.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bakelite-fsync") as ex:
            synced = ex.submit(_fsync_timed, fd)
            try:
                verdict = integrity_check(tmp)
                checked = time.monotonic()
            finally:
                fsync_done = synced.result()
        os.close(fd)
        fd = -1
        _publish(tmp, out)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        _unlink_quietly(tmp)
        raise
    # integrity_check is most of a big restore; timing it apart tells it from the data path.
    logger.debug(
        "restore of %s: data %.2f s, fsync done %.2f s later, integrity_check %.2f s",
        db_name,
        written - started,
        fsync_done - written,
        checked - written,
        extra={"db": db_name},
    )
    logger.info(
        "restored %s backup %s seq %d to %s",
        db_name,
        backup,
        applier.seq,
        out,
        extra={"db": db_name, "backup": backup, "seq": applier.seq, "path": str(out)},
    )
    return RestoreResult(
        database=db_name,
        output=out,
        backup=backup,
        seq=applier.seq,
        time=applier.time,
        changesets_applied=applier.applied,
        lineage_verified=applier.verified,
        page_size=applier.page_size,
        db_pages=applier.db_pages,
        bytes_downloaded=applier.downloaded,
        integrity_check=verdict,
    )


def _fsync_timed(fd: int) -> float:
    os.fsync(fd)
    return time.monotonic()


def integrity_check(path: Path) -> str:
    """Run ``PRAGMA integrity_check`` on a file read-only; IntegrityCheckError unless it says ok."""
    try:
        lines = check_integrity(path, workers=INTEGRITY_WORKERS, budget_kib=INTEGRITY_CACHE_BUDGET_KIB)
    except sqlite3.DatabaseError as e:
        raise IntegrityCheckError(f"the restored database fails integrity_check: {e}") from e
    if lines:
        raise IntegrityCheckError(
            "the restored database fails PRAGMA integrity_check",
            detail="; ".join(lines[:5]) + (f" (+{len(lines) - 5} more)" if len(lines) > 5 else ""),
            hint="restore an earlier point or another backup, and run `bakelite verify --deep`",
        )
    return "ok"


# -- applying ------------------------------------------------------------------------------------


@dataclass
class _Fetched:
    """A change-set fetched whole and fully verified by a prefetch thread."""

    obj: StoredObject
    data: bytes
    header: ObjectHeader
    footer: ObjectFooter
    frames: list[bytes] | None


class _Applier:
    """Writes the snapshot, then each change-set's commits up to the target, into one open file."""

    def __init__(
        self,
        fd: int,
        db: str,
        backup: str,
        target_seq: int,
        progress: ProgressFn | None,
        total: int,
        cipher: FrameCipher | None,
        require_encrypted: bool,
    ) -> None:
        self.fd = fd
        self.cipher = cipher
        self.require_encrypted = require_encrypted
        self.db = db
        self.backup = backup
        self.target_seq = target_seq
        self.progress = progress
        self.total = total
        self.page_size = 0
        self.db_pages = 0
        self.seq = 0
        self.time = 0.0
        self.link = ""
        self.downloaded = 0
        self.applied = 0
        self.verified = 0

    def _report(self, extra: int = 0) -> None:
        if self.progress is not None:
            self.progress(self.downloaded + extra, self.total)

    def snapshot(self, storage: Storage, obj: StoredObject) -> None:
        """Stream the snapshot into the file, frame by frame."""
        counted = CountingReader(_open(storage, obj))
        with contextlib.closing(counted):
            reader = ObjectReader(counted.as_binary(), obj.key, self.cipher, self.require_encrypted)
            header = reader.header
            check_identity(header, self.db, obj.ref)
            self.page_size = header.page_size
            if self.page_size < 512 or self.page_size & (self.page_size - 1):
                raise CorruptionError(f"{obj.key}: implausible page size {self.page_size}")
            with _decoded_frames(reader) as frames:
                for raw in check_snapshot_frames(frames, header):
                    _write_all(self.fd, raw)
                    self._report(counted.count)
            assert reader.footer is not None
            self.link = chain_link(header, reader.footer)
            self.db_pages = snapshot_db_pages(header)
            self.time = snapshot_commit_time(header)
            self.downloaded += counted.count
        self._report()

    def changesets(self, storage: Storage, path: Sequence[StoredObject]) -> None:
        """Apply every change-set of ``path`` in order, prefetching the small ones."""
        pool = ThreadPoolExecutor(max_workers=PREFETCH_WORKERS, thread_name_prefix="restore-fetch")
        try:
            fetches = _in_order(pool, storage, self.db, path, self.cipher, self.require_encrypted)
            for obj, future in fetches:
                if future is not None:
                    self._apply_fetched(future.result())
                else:
                    self._apply_streamed(storage, obj)
        finally:
            # On failure, do not wait for fetches nobody will use.
            pool.shutdown(wait=True, cancel_futures=True)

    def _check_prev(self, obj: StoredObject, header: ObjectHeader) -> None:
        if header.page_size != self.page_size:
            raise CorruptionError(
                f"{obj.key}: page size {header.page_size} differs from the snapshot's {self.page_size}"
            )
        if header.prev != self.link:
            raise ChainBrokenError(
                f"change-set {obj.key} does not follow its predecessor in the lineage chain",
                detail=f"it names prev {str(header.prev)[:16]}…, the chain is at {self.link[:16]}…",
                hint="the object was reordered or substituted; restore an earlier point or another backup",
            )

    def _apply_fetched(self, fetched: _Fetched) -> None:
        obj = fetched.obj
        self._check_prev(obj, fetched.header)
        if fetched.frames is not None:
            frames: Iterable[bytes] = fetched.frames
        else:
            # Decoded (and checked) again from the verified bytes in memory: nothing can change them.
            frames = ObjectReader(io.BytesIO(fetched.data), obj.key, self.cipher).frames()
        self._apply_commits(obj, frames)
        self.link = chain_link(fetched.header, fetched.footer)
        self.downloaded += len(fetched.data)
        self.applied += 1
        self.verified += 1
        self._report()

    def _apply_streamed(self, storage: Storage, obj: StoredObject) -> None:
        counted = CountingReader(_open(storage, obj))
        with contextlib.closing(counted):
            reader = ObjectReader(counted.as_binary(), obj.key, self.cipher, self.require_encrypted)
            check_identity(reader.header, self.db, obj.ref)
            self._check_prev(obj, reader.header)
            # The frames verify the whole object after the last one, before this returns: the
            # restore is committed only after that.
            with _decoded_frames(reader) as frames:
                self._apply_commits(obj, _reporting(frames, lambda: self._report(counted.count)))
            assert reader.footer is not None
            self.link = chain_link(reader.header, reader.footer)
            self.downloaded += counted.count
        self.applied += 1
        self.verified += 1
        self._report()

    def _apply_commits(self, obj: StoredObject, frames: Iterable[bytes]) -> None:
        ref = obj.ref
        ps = self.page_size
        seen = ref.first - 1
        for hdr, feed in iter_commits(frames, ps):
            # Commit seqs must rise within the key's range, one by one at L0 (every commit kept).
            if not seen < hdr.seq <= ref.last or (ref.level == 0 and hdr.seq != seen + 1):
                raise CorruptionError(f"{obj.key}: commit seq {hdr.seq} out of order after seq {seen}")
            seen = hdr.seq
            if hdr.seq > self.target_seq:
                # Past the target: consumed only so the whole object is still verified.
                skip_bytes(feed, len(hdr.pgnos) * ps)
                continue
            if hdr.truncate_to is not None:
                os.ftruncate(self.fd, hdr.truncate_to * ps)
            self._write_pages(obj, feed, hdr.pgnos, hdr.db_pages)
            os.ftruncate(self.fd, hdr.db_pages * ps)
            self.seq, self.time, self.db_pages = hdr.seq, hdr.time, hdr.db_pages
        if seen != ref.last:
            raise CorruptionError(f"{obj.key}: its commits end at seq {seen}, its key says {ref.last}")
        if ref.first <= self.target_seq <= ref.last and self.seq != self.target_seq:
            raise ChainBrokenError(f"{obj.key} has no commit boundary at seq {self.target_seq}")

    def _write_pages(self, obj: StoredObject, feed: ByteFeed, pgnos: Sequence[int], db_pages: int) -> None:
        """pwrite the pages with pgno <= db_pages, coalescing runs of consecutive pages."""
        ps = self.page_size
        run = bytearray()
        run_start = 0
        for pg in pgnos:
            image = feed.read(ps)
            if pg == 0:
                raise CorruptionError(f"{obj.key}: page number 0 in a commit")
            if pg > db_pages:
                continue  # freed by the same commit's truncation
            if run and (pg != run_start + len(run) // ps or len(run) >= PAGE_SLICE):
                _pwrite_all(self.fd, run, (run_start - 1) * ps)
                run.clear()
            if not run:
                run_start = pg
            run += image
        if run:
            _pwrite_all(self.fd, run, (run_start - 1) * ps)


@contextlib.contextmanager
def _decoded_frames(reader: ObjectReader) -> Iterator[Iterator[bytes]]:
    """``reader``'s verified frames in order, decoded by a pool of threads; stops the pool on exit."""
    with ThreadPoolExecutor(max_workers=FRAME_WORKERS, thread_name_prefix="restore-frame") as pool:
        frames = reader.frames_concurrent(pool, FRAME_WINDOW, FRAME_WINDOW_BYTES)
        # Closed on the way out (even on failure), so queued frames are cancelled before the pool
        # waits for its threads.
        with contextlib.closing(frames):
            yield frames


def _reporting(frames: Iterator[bytes], report: Callable[[], None]) -> Iterator[bytes]:
    for frame in frames:
        yield frame
        report()


def _fetch_whole(
    storage: Storage,
    db: str,
    obj: StoredObject,
    cipher: FrameCipher | None,
    require_encrypted: bool,
) -> _Fetched:
    """Fetch one change-set whole and verify all of it (runs in a prefetch thread)."""
    data = _get(storage, obj)
    reader = ObjectReader(io.BytesIO(data), obj.key, cipher, require_encrypted)
    check_identity(reader.header, db, obj.ref)
    kept: list[bytes] | None = []
    kept_bytes = 0
    for raw in reader.frames():
        if kept is not None:
            kept_bytes += len(raw)
            if kept_bytes <= KEEP_RAW_MAX:
                kept.append(raw)
            else:
                kept = None
    assert reader.footer is not None
    return _Fetched(obj, data, reader.header, reader.footer, kept)


def _in_order(
    pool: ThreadPoolExecutor,
    storage: Storage,
    db: str,
    path: Sequence[StoredObject],
    cipher: FrameCipher | None,
    require_encrypted: bool,
) -> Iterator[tuple[StoredObject, Future[_Fetched] | None]]:
    """Yield each object in order with its prefetch (``None``: stream it), within the byte budget."""
    pending: collections.deque[tuple[StoredObject, Future[_Fetched] | None, int]] = collections.deque()
    in_flight = 0
    i = 0
    while i < len(path) or pending:
        while i < len(path):
            obj = path[i]
            whole = obj.size <= WHOLE_OBJECT_MAX
            cost = obj.size + KEEP_RAW_MAX if whole else 0
            if pending and in_flight + cost > PREFETCH_BUDGET:
                break
            future = pool.submit(_fetch_whole, storage, db, obj, cipher, require_encrypted) if whole else None
            pending.append((obj, future, cost))
            in_flight += cost
            i += 1
        obj, future, cost = pending.popleft()
        yield obj, future
        # Resumed once the caller has applied it: its bytes may go.
        in_flight -= cost


# -- files ---------------------------------------------------------------------------------------


def _find_backup(storage: Storage, db: str, backup: str) -> BackupInfo:
    for info in list_backups(storage, db):
        if info.backup == backup:
            return info
    raise NoReplicaError(f"backup {backup} of {db!r} not found on {storage.describe()}")


def _open(storage: Storage, obj: StoredObject) -> BinaryIO:
    try:
        return storage.open(obj.key)
    except ObjectNotFound as e:
        raise vanished(obj.ref) from e


def _get(storage: Storage, obj: StoredObject) -> bytes:
    try:
        return storage.get(obj.key)
    except ObjectNotFound as e:
        raise vanished(obj.ref) from e


def _exists(out: Path) -> OutputExistsError:
    return OutputExistsError(
        f"{out} already exists; restore never overwrites a file",
        hint="restore to a new path with --output, or move the file away first "
        "(--if-db-not-exists makes this a no-op instead)",
    )


def _open_tmp(tmp: Path) -> int:
    """Open (and lock) the temp file; a stale one from a crashed restore is reused, a live one refused."""
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LockHeldError(
            f"another restore is writing {tmp}", hint="wait for it to finish, or restore to another --output"
        ) from None
    os.ftruncate(fd, 0)
    return fd


def _publish(tmp: Path, out: Path) -> None:
    """Remove stale sidecars, then move ``tmp`` to ``out`` without ever replacing a file there."""
    for suffix in SIDECAR_SUFFIXES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{out}{suffix}")
    try:
        # link() fails if out appeared meanwhile (an app created it): rename() would clobber it.
        os.link(tmp, out)
    except FileExistsError:
        raise _exists(out) from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
            raise
        # Filesystems without hard links: check, then rename (a narrow window, the best they allow).
        if os.path.lexists(out):
            raise _exists(out) from None
        os.replace(tmp, out)
    else:
        os.unlink(tmp)
    fsync_dir(out.parent)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _pwrite_all(fd: int, data: bytes | bytearray, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        logger.warning("could not remove %s", path, extra={"path": str(path)})
