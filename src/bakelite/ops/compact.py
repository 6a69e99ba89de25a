"""Compaction: merge older change-sets into coarser time windows, crash-safely.

Planning is pure (``plan_compaction``); executing (``compact_database``) reads, writes and deletes.

Windows.  ``levels`` holds one window width per level (``[30s, 5m, 1h]``: level 1 is 30 s, level 2
5 min, level 3 1 h).  Windows are aligned to the Unix epoch (a 30 s window starts at :00 or :30 UTC).
A change-set belongs to the window holding its *last* commit time.  Once a window has closed
(``now`` is past its end) the change-sets in it may merge into one object at that level; an object
whose coarser window has also closed moves straight to the coarsest closed level.  The newest
``keep_recent`` change-sets of the database (and the one the daemon's cursor names) are never merged.

What a merged object keeps.  It holds one commit record: the state after its last commit (every page
image written in the window, the newest image of each, and the truncations in between).  So after
compaction the restorable points of a compacted stretch are exactly the last commit of each merged
object, one per closed window at that level that saw commits, plus every commit inside the change-sets
that are still level 0.  A point-in-time target inside a merged window lands on the end of the
previous object, which is at most one window width (plus the time one change-set spans) earlier.

Lineage.  A merged object names as ``prev`` its first source's ``prev``, and as ``link`` its last
source's chain link, so the successors that name the last source as predecessor still chain.

Crash safety.  A merged object is written (idempotent by key: the same sources give the same key
and content hash), read back and verified, and only then are its sources deleted, newest first and
one at a time, so every prefix of them still chains from the snapshot.  A crash at any point leaves
either the sources, or the merged object with some or all sources; a later run sees the sources are
covered by the merged object (``Cleanup``), verifies it again and deletes them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, overload

from bakelite.config.model import Database
from bakelite.errors import BackendError, BakeliteError, ChainBrokenError, CorruptionError, DeleteRefusedError
from bakelite.format import layout
from bakelite.format.changeset import CommitRecord, changeset_frames, changeset_header, iter_commits
from bakelite.format.envelope import FrameCipher, ObjectHeader, ObjectReader, ObjectWriter, chain_link
from bakelite.ops.catalog import StoredObject, check_identity, list_backups, read_header, skip_bytes
from bakelite.storage.base import Storage
from bakelite.storage.retry import Restartable

logger = logging.getLogger(__name__)

HEADER_WORKERS = 8


# -- planning (pure) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangesetInfo:
    """What the planner needs to know about one stored change-set."""

    key: str
    backup: str
    level: int
    first: int
    last: int
    t_last: float


@dataclass(frozen=True)
class Merge:
    """Merge ``sources`` (abutting, in seq order) of ``backup`` into one object at ``level``."""

    backup: str
    level: int
    first: int
    last: int
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Cleanup:
    """Objects made redundant by ``cover`` (left by a crash between a merge and its deletes)."""

    backup: str
    cover: str
    redundant: tuple[str, ...]


@dataclass(frozen=True)
class CompactionPlan:
    """What one compaction run would do; ``skipped`` names backups left alone and why."""

    merges: tuple[Merge, ...] = ()
    cleanups: tuple[Cleanup, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """Whether there is nothing to do."""
        return not self.merges and not self.cleanups


def window_of(t: float, width: float) -> int:
    """The index of the epoch-aligned window of ``width`` seconds holding time ``t``."""
    return math.floor(t / width)


def target_level(t_last: float, levels: Sequence[float], now: float) -> int:
    """The coarsest level whose window holding ``t_last`` has closed by ``now`` (0: none)."""
    best = 0
    for i, width in enumerate(levels, start=1):
        if (window_of(t_last, width) + 1) * width <= now:
            best = i
    return best


def _cover(objs: Sequence[ChangesetInfo]) -> tuple[list[ChangesetInfo], dict[str, list[str]], bool]:
    """The maximal objects of one backup (in seq order), what each makes redundant, and overlap."""
    # First seq ascending, then widest range, then highest level: any object an earlier one
    # reaches past is inside it (identical ranges: the higher level comes first and wins).
    ordered = sorted(objs, key=lambda o: (o.first, -o.last, -o.level))
    cover: list[ChangesetInfo] = []
    redundant: dict[str, list[str]] = {}
    overlap = False
    for o in ordered:
        if cover and cover[-1].last >= o.last:
            redundant.setdefault(cover[-1].key, []).append(o.key)
        elif cover and o.first <= cover[-1].last:
            overlap = True  # ranges cross without one containing the other: not ours to fix
            cover.append(o)
        else:
            cover.append(o)
    return cover, redundant, overlap


def plan_compaction(
    objects: Iterable[ChangesetInfo],
    levels: Sequence[float],
    keep_recent: int,
    now: float,
    *,
    protect: Iterable[str] = (),
) -> CompactionPlan:
    """Pure: which change-sets to merge into which windows, and which leftovers to clean up.

    ``objects`` are the change-sets of the database's complete backups.  The newest
    ``max(keep_recent, 1)`` of them (by backup, then seq), and any in ``protect``, stay as they are.
    """
    by_backup: dict[str, list[ChangesetInfo]] = {}
    for o in objects:
        by_backup.setdefault(o.backup, []).append(o)
    merges: list[Merge] = []
    cleanups: list[Cleanup] = []
    skipped: list[str] = []
    covers: dict[str, list[ChangesetInfo]] = {}
    pinned = set(protect)
    for backup in sorted(by_backup):
        cover, redundant, overlap = _cover(by_backup[backup])
        if overlap:
            skipped.append(f"backup {backup}: change-sets overlap without one containing the other")
            continue
        covers[backup] = cover
        for key, keys in redundant.items():
            doomed = tuple(k for k in keys if k not in pinned)
            if doomed:
                cleanups.append(Cleanup(backup, key, doomed))
    if not levels:
        return CompactionPlan((), tuple(cleanups), tuple(skipped))
    chain = [o for backup in sorted(covers) for o in covers[backup]]
    keep = max(keep_recent, 1)
    protected = {o.key for o in chain[-keep:]} | pinned
    for backup in sorted(covers):
        merges += _runs(backup, covers[backup], levels, now, protected)
    return CompactionPlan(tuple(merges), tuple(cleanups), tuple(skipped))


def _runs(
    backup: str, cover: Sequence[ChangesetInfo], levels: Sequence[float], now: float, protected: set[str]
) -> list[Merge]:
    """Runs of two or more abutting, unprotected objects of one backup sharing a closed window."""
    groups: list[tuple[tuple[int, int] | None, list[ChangesetInfo]]] = []
    for o in cover:
        if o.key in protected:
            # A protected object splits runs: the chain keeps going through it untouched.
            groups.append((None, [o]))
            continue
        level = max(target_level(o.t_last, levels, now), o.level)
        window = None if level == 0 else (level, window_of(o.t_last, levels[level - 1]))
        if (
            groups
            and window is not None
            and groups[-1][0] == window
            and groups[-1][1][-1].last + 1 == o.first
        ):
            groups[-1][1].append(o)
        else:
            groups.append((window, [o]))
    return [
        Merge(backup, window[0], run[0].first, run[-1].last, tuple(o.key for o in run))
        for window, run in groups
        if window is not None and len(run) > 1
    ]


# -- executing ------------------------------------------------------------------------------------


@dataclass
class CompactionReport:
    """What one compaction run of one database on one destination did."""

    database: str
    backend: str
    merged: int = 0  # merged objects written and verified
    sources_deleted: int = 0
    leftovers_deleted: int = 0
    objects_before: int = 0
    objects_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    delete_refused: bool = False
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    planned_merges: int = 0
    dry_run: bool = False


@dataclass
class CompactReport:
    """``bakelite compact`` over several databases (``--json`` schema)."""

    databases: list[CompactionReport] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """3 when a run hit an error (a refused delete is reported, not an error)."""
        return 3 if any(r.errors and not r.delete_refused for r in self.databases) else 0


def compact_databases(
    databases: Sequence[Database], open_storage: Callable[[Database], Storage], *, dry_run: bool = False
) -> CompactReport:
    """Compact each database on its primary destination, sparing the daemon's last change-set."""
    from bakelite.crypto.keys import lazy_cipher_for
    from bakelite.replication.cursor import load_cursor

    report = CompactReport()
    for db in databases:
        storage = open_storage(db)
        try:
            # The daemon's last shipped change-set must survive: its restart resumes from it.
            cursor = load_cursor(Path(db.path), db.name)
            report.databases.append(
                compact_database(
                    storage,
                    db.name,
                    db.compaction_levels,
                    db.compaction_keep_recent,
                    time.time(),
                    cipher=lazy_cipher_for(db, [storage]),
                    require_encrypted=db.encryption.require_encrypted if db.encryption else False,
                    protect=[cursor.last_key] if cursor is not None else [],
                    dry_run=dry_run,
                )
            )
        finally:
            storage.close()
    return report


class _PageStore:
    """The newest image of each page of a window, spilled to a temp file (bounded memory)."""

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        # Closed by close(): it lives across the reads of every source of one merge.
        self.file: BinaryIO = tempfile.TemporaryFile(prefix="bakelite-compact-")  # noqa: SIM115
        self.slots: dict[int, int] = {}  # pgno -> slot in the file
        self.free: list[int] = []
        self.next_slot = 0

    def put(self, pgno: int, image: bytes) -> None:
        """Keep ``image`` as the newest image of ``pgno``."""
        slot = self.slots.get(pgno)
        if slot is None:
            slot = self.free.pop() if self.free else self._grow()
            self.slots[pgno] = slot
        self.file.seek(slot * self.page_size)
        self.file.write(image)

    def _grow(self) -> int:
        self.next_slot += 1
        return self.next_slot - 1

    def truncate(self, db_pages: int) -> None:
        """Forget every page beyond ``db_pages`` (a commit truncated the file)."""
        for pg in [pg for pg in self.slots if pg > db_pages]:
            self.free.append(self.slots.pop(pg))

    def get(self, pgno: int) -> bytes:
        """The image kept for ``pgno``."""
        self.file.seek(self.slots[pgno] * self.page_size)
        return self.file.read(self.page_size)

    def close(self) -> None:
        """Drop the temp file."""
        self.file.close()


class _LazyPages(Sequence[tuple[int, bytes]]):
    """The kept pages in pgno order, read from the page store as they are encoded."""

    def __init__(self, store: _PageStore) -> None:
        self.store = store
        self.pgnos = sorted(store.slots)

    def __len__(self) -> int:
        return len(self.pgnos)

    @overload
    def __getitem__(self, i: int) -> tuple[int, bytes]: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[tuple[int, bytes]]: ...
    def __getitem__(self, i: int | slice) -> tuple[int, bytes] | Sequence[tuple[int, bytes]]:
        if isinstance(i, slice):
            return [(pg, self.store.get(pg)) for pg in self.pgnos[i]]
        pg = self.pgnos[i]
        return pg, self.store.get(pg)

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        for pg in self.pgnos:
            yield pg, self.store.get(pg)


@dataclass(frozen=True)
class _Source:
    header: ObjectHeader
    link: str
    hash: str


def compact_database(
    storage: Storage,
    db: str,
    levels: Sequence[float],
    keep_recent: int,
    now: float,
    *,
    cipher: FrameCipher | None = None,
    require_encrypted: bool = False,
    protect: Iterable[str] = (),
    header_cache: MutableMapping[str, ObjectHeader] | None = None,
    dry_run: bool = False,
) -> CompactionReport:
    """Plan and run one compaction of ``db`` on ``storage``; stops at a refused delete (WORM)."""
    report = CompactionReport(db, storage.describe(), dry_run=dry_run)
    backups = [b for b in list_backups(storage, db) if b.complete]
    infos: list[ChangesetInfo] = []
    changesets = [o for b in backups for o in b.changesets]
    headers = _headers(storage, db, changesets, header_cache)
    for o in changesets:
        h = headers[o.key]
        infos.append(
            ChangesetInfo(o.key, o.ref.backup, o.ref.level, o.ref.first, o.ref.last, _t_last(h, o.key))
        )
    report.objects_before = sum(len(b.changesets) + 1 for b in backups)
    report.bytes_before = sum(b.total_bytes for b in backups)
    plan = plan_compaction(infos, levels, keep_recent, now, protect=protect)
    report.skipped = list(plan.skipped)
    report.planned_merges = len(plan.merges)
    if dry_run:
        report.objects_after, report.bytes_after = report.objects_before, report.bytes_before
        return report
    try:
        for cleanup in plan.cleanups:
            _cleanup(storage, db, cleanup, headers, cipher, require_encrypted, report)
        for merge in plan.merges:
            _merge(storage, db, merge, headers, cipher, require_encrypted, report, header_cache)
    except DeleteRefusedError as e:
        report.delete_refused = True
        report.errors.append(e.one_line())
        logger.warning(
            "%s: the backend refused a delete; compaction stops (WORM / Object Lock?): %s",
            db,
            e.one_line(),
            extra={"db": db},
        )
    after = [b for b in list_backups(storage, db) if b.complete]
    report.objects_after = sum(len(b.changesets) + 1 for b in after)
    report.bytes_after = sum(b.total_bytes for b in after)
    return report


def _t_last(header: ObjectHeader, key: str) -> float:
    try:
        return float(header.meta["t_last"])
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptionError(f"{key}: change-set header lacks its time range") from e


def _headers(
    storage: Storage, db: str, objs: Sequence[StoredObject], cache: MutableMapping[str, ObjectHeader] | None
) -> dict[str, ObjectHeader]:
    out: dict[str, ObjectHeader] = {}
    missing = []
    for o in objs:
        if cache is not None and o.key in cache:
            out[o.key] = cache[o.key]
        else:
            missing.append(o)
    if missing:
        # Range reads are latency-bound on object stores: a few in parallel.
        with ThreadPoolExecutor(max_workers=min(HEADER_WORKERS, len(missing))) as pool:
            for o, h in zip(
                missing, pool.map(lambda o: read_header(storage, db, o.ref), missing), strict=True
            ):
                out[o.key] = h
    if cache is not None:
        # Keys are immutable in meaning (same key, same range and times): cache what is listed now.
        cache.clear()
        cache.update(out)
    return out


def _read_source(
    storage: Storage,
    db: str,
    key: str,
    cipher: FrameCipher | None,
    require_encrypted: bool,
    sink: _PageStore | None,
    low: list[int],
) -> _Source:
    """Stream one change-set, fully verified; feed its commits into ``sink`` (None: verify only)."""
    ref = layout.parse_key(db, key)
    if ref is None:
        raise CorruptionError(f"{key} is not a change-set key of {db!r}")
    with contextlib.closing(storage.open(key)) as stream:
        reader = ObjectReader(stream, key, cipher, require_encrypted)
        check_identity(reader.header, db, ref)
        ps = reader.header.page_size
        last_seq = ref.first - 1
        for hdr, feed in iter_commits(reader.frames(), ps):
            if not last_seq < hdr.seq <= ref.last:
                raise CorruptionError(f"{key}: commit seq {hdr.seq} out of order after {last_seq}")
            last_seq = hdr.seq
            if sink is None:
                skip_bytes(feed, len(hdr.pgnos) * ps)
                continue
            # Replay the commit's effect on the window's page set exactly as restore applies it.
            if hdr.truncate_to is not None:
                sink.truncate(hdr.truncate_to)
                low[0] = min(low[0], hdr.truncate_to)
            for pg in hdr.pgnos:
                image = feed.read(ps)
                if pg <= hdr.db_pages:
                    sink.put(pg, image)
            sink.truncate(hdr.db_pages)
            low[0] = min(low[0], hdr.db_pages)
        if last_seq != ref.last:
            raise CorruptionError(f"{key}: its commits end at seq {last_seq}, its key says {ref.last}")
        assert reader.footer is not None
        return _Source(reader.header, chain_link(reader.header, reader.footer), reader.footer.hash)


def _merge(
    storage: Storage,
    db: str,
    merge: Merge,
    headers: Mapping[str, ObjectHeader],
    cipher: FrameCipher | None,
    require_encrypted: bool,
    report: CompactionReport,
    header_cache: MutableMapping[str, ObjectHeader] | None,
) -> None:
    first_h = headers[merge.sources[0]]
    store = _PageStore(first_h.page_size)
    try:
        low = [2**32]
        sources: list[_Source] = []
        for key in merge.sources:
            src = _read_source(storage, db, key, cipher, require_encrypted, store, low)
            if sources and src.header.prev != sources[-1].link:
                raise ChainBrokenError(f"{key} does not chain on from {merge.sources[len(sources) - 1]}")
            sources.append(src)
        last_h = sources[-1].header
        db_pages = int(last_h.meta["db_pages"])
        pages = _LazyPages(store)
        record = CommitRecord(
            seq=merge.last,
            time=float(last_h.meta["t_last"]),
            db_pages=db_pages,
            pages=pages,
            truncate_to=low[0] if low[0] < db_pages else None,
            pgnos=pages.pgnos,
        )
        header = changeset_header(
            db=db,
            backup=merge.backup,
            first=merge.first,
            last=merge.last,
            page_size=first_h.page_size,
            codec=first_h.codec,
            encrypted=cipher is not None and first_h.encrypted,
            # Deterministic, so a rerun (or a concurrent compactor) writes the same content hash.
            created=record.time,
            prev=str(sources[0].header.prev),
            t_first=float(sources[0].header.meta["t_first"]),
            t_last=record.time,
            db_pages=db_pages,
            level=merge.level,
            link=sources[-1].link,
        )
        key = layout.changeset_key(db, merge.backup, merge.level, merge.first, merge.last)
        writers: list[ObjectWriter] = []
        enc = cipher if header.encrypted else None

        def chunks() -> Iterator[bytes]:
            w = ObjectWriter(header, enc)
            writers.append(w)
            yield from w.chunks(changeset_frames([record], header.page_size))

        # Cold: compacted objects are rarely read (storage_class applies to them).
        storage.put_stream(key, Restartable(chunks), cold=True)
        footer = writers[-1].footer
        if footer is None:
            raise BackendError(f"compacted object {key} was not written completely")
    finally:
        store.close()
    _verify_merged(storage, db, key, header, footer.hash, enc, require_encrypted)
    report.merged += 1
    logger.info(
        "%s: compacted %d change-set(s) of backup %s into %s",
        db,
        len(merge.sources),
        merge.backup,
        key,
        extra={"db": db, "backup": merge.backup, "key": key},
    )
    # Newest first, one at a time: whatever a crash leaves still chains from the snapshot.
    for src_key in reversed(merge.sources):
        if src_key != key:
            storage.delete([src_key])
            report.sources_deleted += 1
            if header_cache is not None:
                header_cache.pop(src_key, None)


def _verify_merged(
    storage: Storage,
    db: str,
    key: str,
    expected: ObjectHeader,
    expected_hash: str,
    cipher: FrameCipher | None,
    require_encrypted: bool,
) -> None:
    """Read ``key`` back whole and check it is the object meant (before anything is deleted)."""
    src = _read_source(storage, db, key, cipher, require_encrypted, None, [0])
    h = src.header
    if h.prev != expected.prev or h.link != expected.link:
        raise ChainBrokenError(f"compacted object {key} does not chain like the objects it replaces")
    if int(h.meta.get("db_pages", -1)) != int(expected.meta["db_pages"]):
        raise CorruptionError(f"compacted object {key} read back with another database size")
    if src.hash != expected_hash:
        # Not the bytes just written (altered, or replaced meanwhile): keep the sources.
        raise CorruptionError(f"compacted object {key} read back with another content hash")


def _cleanup(
    storage: Storage,
    db: str,
    cleanup: Cleanup,
    headers: Mapping[str, ObjectHeader],
    cipher: FrameCipher | None,
    require_encrypted: bool,
    report: CompactionReport,
) -> None:
    """Verify the covering object, then delete what it replaces (newest first)."""
    cover = headers[cleanup.cover]
    try:
        _read_source(storage, db, cleanup.cover, cipher, require_encrypted, None, [0])
    except BakeliteError as e:
        report.errors.append(f"{cleanup.cover} does not verify; keeping what it covers: {e.one_line()}")
        logger.warning("%s: %s does not verify: %s", db, cleanup.cover, e.one_line(), extra={"db": db})
        return
    # An object starting where the cover starts must name the same predecessor, or the cover is
    # not a replacement of it.
    for key in cleanup.redundant:
        h = headers[key]
        if h.first == cover.first and h.prev != cover.prev:
            report.errors.append(f"{cleanup.cover} does not chain like {key}; keeping it")
            return
    for key in sorted(cleanup.redundant, key=lambda k: (headers[k].first, headers[k].last), reverse=True):
        storage.delete([key])
        report.leftovers_deleted += 1
