"""What a replica holds and where a restore target lands, derived from the backend listing.

The listing is the truth (the manifest is only a cache, ``CURRENT`` only advisory): a backup is
restorable when its snapshot exists, up to the end of the contiguous run of change-sets from seq 1.
Headers are read with small range reads (``peek_header``), never whole objects, except the one
object a point-in-time target falls inside, whose commit times decide the exact commit.

Target resolution is pure (``resolve_target`` / ``land_inside``) so its rules can be tested alone:
``--timestamp T`` lands on the newest shipped commit with time <= T; before the oldest restore point
is a RestoreTargetError naming it; after the newest gives the newest.  Commit times are assumed
non-decreasing in (backup, seq) order, which is the order the daemon ships them in.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, cast

from bakelite.errors import ChainBrokenError, CorruptionError, ObjectNotFound, RestoreTargetError
from bakelite.format import layout
from bakelite.format.changeset import ByteFeed, changeset_time_range, iter_commits
from bakelite.format.envelope import MAX_HEADER, FrameCipher, ObjectHeader, ObjectReader, peek_header
from bakelite.format.layout import ObjectRef
from bakelite.format.snapshot import snapshot_commit_time, snapshot_db_pages
from bakelite.ops.timeparse import format_time
from bakelite.storage.base import Storage

logger = logging.getLogger(__name__)

# Enough for any header the daemon writes (a few hundred bytes of JSON); a bigger one is re-read.
HEADER_PEEK = 8192
HEADER_WORKERS = 8
# Pages are skipped (or written) in slices of at most this many bytes: bounded memory per commit.
PAGE_SLICE = 4 * 1024 * 1024


# -- listing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredObject:
    """A data object found by listing: its parsed key and stored size."""

    ref: ObjectRef
    size: int

    @property
    def key(self) -> str:
        """The object's key."""
        return self.ref.key


@dataclass(frozen=True)
class BackupInfo:
    """One backup as listed: its snapshot (``None`` if incomplete) and change-sets at every level."""

    backup: str
    snapshot: StoredObject | None
    changesets: tuple[StoredObject, ...]
    total_bytes: int

    @property
    def complete(self) -> bool:
        """Whether the snapshot exists (a crash mid-bootstrap leaves a backup without one)."""
        return self.snapshot is not None

    @property
    def created(self) -> float:
        """The creation time encoded in the backup id."""
        return layout.backup_time(self.backup)


def list_backups(storage: Storage, db: str) -> list[BackupInfo]:
    """Every backup of ``db`` on ``storage``, oldest first (incomplete ones included)."""
    snapshots: dict[str, StoredObject] = {}
    changesets: dict[str, list[StoredObject]] = {}
    totals: dict[str, int] = {}
    for info in storage.list(layout.db_prefix(db)):
        ref = layout.parse_key(db, info.key)
        if ref is None:
            continue  # CURRENT, the manifest, or something foreign
        obj = StoredObject(ref, info.size)
        totals[ref.backup] = totals.get(ref.backup, 0) + info.size
        if ref.kind == "snapshot":
            snapshots[ref.backup] = obj
        else:
            changesets.setdefault(ref.backup, []).append(obj)
    out = []
    for backup in sorted(totals):
        sets = sorted(changesets.get(backup, []), key=lambda o: (o.ref.first, o.ref.level, o.ref.last))
        out.append(BackupInfo(backup, snapshots.get(backup), tuple(sets), totals[backup]))
    return out


def read_current(storage: Storage, db: str) -> str | None:
    """The backup id ``CURRENT`` names, or ``None`` when absent or unreadable (it is advisory)."""
    try:
        text = storage.get(layout.current_key(db)).decode("utf-8", "replace").strip()
    except ObjectNotFound:
        return None
    if not layout.is_backup_id(text):
        logger.warning("CURRENT of %s does not name a backup: %r", db, text[:80], extra={"db": db})
        return None
    return text


# -- headers and identity -----------------------------------------------------------------------


def check_identity(header: ObjectHeader, db: str, ref: ObjectRef) -> None:
    """Raise ChainBrokenError (a CorruptionError) naming the key when the header is not what the key says."""
    if ref.kind == "snapshot":
        expected = ("snapshot", db, ref.backup, 0, 0, 0)
    else:
        expected = ("changeset", db, ref.backup, ref.level, ref.first, ref.last)
    actual = (header.kind, header.db, header.backup, header.level, header.first, header.last)
    if actual != expected:
        raise ChainBrokenError(
            f"object {ref.key} is not what its key says: it holds {_describe(actual)}",
            detail=f"expected {_describe(expected)}",
            hint="the object was relocated or substituted; restore from another backup or destination",
        )


def _describe(identity: tuple[str, str, str, int, int, int]) -> str:
    kind, db, backup, level, first, last = identity
    where = "" if kind == "snapshot" else f" L{level} seqs {first}..{last}"
    return f"{kind} of {db!r} backup {backup}{where}"


def read_header(storage: Storage, db: str, ref: ObjectRef) -> ObjectHeader:
    """An object's header from a small range read, checked against its key (payload not verified)."""
    try:
        data = storage.get_range(ref.key, 0, HEADER_PEEK)
        try:
            header = peek_header(data, ref.key)
        except CorruptionError:
            if len(data) < HEADER_PEEK:
                raise
            # A header longer than the first read: fetch the most a valid header can take.
            header = peek_header(storage.get_range(ref.key, 0, MAX_HEADER + 16), ref.key)
    except ObjectNotFound as e:
        raise vanished(ref) from e
    check_identity(header, db, ref)
    return header


def vanished(ref: ObjectRef) -> ChainBrokenError:
    """The error for an object that was listed but is gone when read."""
    return ChainBrokenError(
        f"{ref.kind} {ref.key} is missing",
        detail="it was listed moments ago",
        hint="a concurrent compaction or retention run may have replaced it: run the command again",
    )


# -- chain selection ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SeqGap:
    """Seqs ``first..last`` of a backup for which no object exists."""

    first: int
    last: int

    def describe(self) -> str:
        """``seq 7`` or ``seqs 7..9``."""
        return f"seq {self.first}" if self.first == self.last else f"seqs {self.first}..{self.last}"


def contiguous_end(changesets: Sequence[StoredObject]) -> tuple[int, SeqGap | None]:
    """The last seq reachable from seq 1 through abutting objects, and the hole after it if any."""
    # Any level can extend the chain (a compacted object may replace deleted L0 ones).
    reachable = {1}
    for obj in sorted(changesets, key=lambda o: o.ref.first):
        if obj.ref.first in reachable:
            reachable.add(obj.ref.last + 1)
    reach = max(reachable) - 1
    if all(o.ref.last <= reach for o in changesets):
        return reach, None
    later = [o.ref.first for o in changesets if o.ref.first > reach + 1]
    return reach, SeqGap(reach + 1, min(later) - 1 if later else reach + 1)


def select_chain(
    backup: str, changesets: Sequence[StoredObject], target_seq: int, *, prefer_level0: bool = True
) -> tuple[StoredObject, ...]:
    """The objects to apply, in order, to reach commit ``target_seq`` of ``backup`` from its snapshot.

    A path runs from seq 1 through objects whose ranges abut; the last one contains ``target_seq``
    (a compacted one must have a commit boundary there, which applying checks).  Among paths, the one
    with the fewest compacted objects and then the fewest objects wins with ``prefer_level0`` (L0
    keeps every commit boundary), the fewest objects first otherwise.  A hole in the seqs is a
    ChainBrokenError naming the missing range.
    """
    if target_seq == 0:
        return ()
    # best[p]: cheapest way to have applied every commit before seq p (p = 1 is the snapshot).
    # Objects are visited by first seq, so best[p] is final before any object starting at p is seen.
    best: dict[int, tuple[tuple[int, int], tuple[StoredObject, ...]]] = {1: ((0, 0), ())}
    finish: tuple[tuple[int, tuple[int, int], int], tuple[StoredObject, ...]] | None = None
    for obj in sorted(changesets, key=lambda o: (o.ref.first, o.ref.level, o.ref.last)):
        ref = obj.ref
        here = best.get(ref.first)
        if here is None or ref.first > target_seq:
            continue
        compacted = 1 if ref.level > 0 else 0
        step = (compacted, 1) if prefer_level0 else (1, compacted)
        cost = (here[0][0] + step[0], here[0][1] + step[1])
        path = (*here[1], obj)
        if ref.last < target_seq:
            nxt = ref.last + 1
            if nxt not in best or cost < best[nxt][0]:
                best[nxt] = (cost, path)
            continue
        # A terminal object.  Stopping inside a compacted one relies on a commit boundary its key
        # does not promise, so it is the last resort; stopping inside an L0 one is always possible.
        exact = 0 if ref.last == target_seq else 1
        rank = (exact * compacted, cost, exact)
        if finish is None or rank < finish[0]:
            finish = (rank, path)
    if finish is not None:
        return finish[1]
    reach, gap = contiguous_end(changesets)
    if gap is not None and gap.first <= target_seq:
        raise ChainBrokenError(
            f"backup {backup} is missing the change-set(s) for {gap.describe()}",
            detail=f"restorable only up to seq {reach}",
            hint="restore an earlier point (bakelite list shows the restorable spans) or take a fresh backup",
        )
    raise RestoreTargetError(f"backup {backup} has no commit {target_seq} (its newest is seq {reach})")


# -- restore points -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainObject:
    """A change-set's position and commit-time range, read from its header."""

    key: str
    level: int
    first: int
    last: int
    size: int
    t_first: float
    t_last: float
    db_pages: int


@dataclass(frozen=True)
class BackupSpan:
    """The restorable span of one complete backup.

    ``last_seq`` is the newest commit reachable without a hole (``max_seq`` is the newest stored;
    they differ only when ``gap`` is set).  ``changesets`` holds every change-set's header when
    ``detailed``, else only the header of the newest reachable one.
    """

    backup: str
    snapshot_key: str
    snapshot_size: int
    page_size: int
    db_pages: int
    first_time: float
    last_time: float
    last_seq: int
    max_seq: int
    objects: int
    stored_bytes: int
    gap: SeqGap | None
    changesets: tuple[ChainObject, ...]
    detailed: bool


def _chain_object(obj: StoredObject, header: ObjectHeader) -> ChainObject:
    t_first, t_last = changeset_time_range(header)
    try:
        db_pages = int(header.meta["db_pages"])
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptionError(f"{obj.key}: change-set header lacks db_pages") from e
    return ChainObject(
        obj.key, obj.ref.level, obj.ref.first, obj.ref.last, obj.size, t_first, t_last, db_pages
    )


def restore_points(
    storage: Storage, db: str, backups: Sequence[BackupInfo], *, detail: bool = True
) -> list[BackupSpan]:
    """One span per complete backup, oldest first; ``detail`` reads every change-set header."""
    complete = [b for b in backups if b.snapshot is not None]
    plans: list[tuple[BackupInfo, int, SeqGap | None, tuple[StoredObject, ...], list[StoredObject]]] = []
    wanted: list[StoredObject] = []
    for b in complete:
        assert b.snapshot is not None
        reach, gap = contiguous_end(b.changesets)
        path = select_chain(b.backup, b.changesets, reach) if reach else ()
        # Without detail only the newest reachable change-set's header is needed (for the span's end).
        to_read = list(b.changesets) if detail else list(path[-1:])
        plans.append((b, reach, gap, path, to_read))
        wanted += [b.snapshot, *to_read]
    headers = _read_headers(storage, db, wanted)
    spans = []
    for b, reach, gap, path, to_read in plans:
        assert b.snapshot is not None
        snap = headers[b.snapshot.key]
        chain = tuple(_chain_object(o, headers[o.key]) for o in to_read)
        by_key = {c.key: c for c in chain}
        first_time = snapshot_commit_time(snap)
        last_time = by_key[path[-1].key].t_last if path else first_time
        for c in chain:
            page_size = headers[c.key].page_size
            if page_size != snap.page_size:
                raise CorruptionError(
                    f"{c.key}: page size {page_size} differs from its snapshot's {snap.page_size}"
                )
        spans.append(
            BackupSpan(
                backup=b.backup,
                snapshot_key=b.snapshot.key,
                snapshot_size=b.snapshot.size,
                page_size=snap.page_size,
                db_pages=by_key[path[-1].key].db_pages if path else snapshot_db_pages(snap),
                first_time=first_time,
                last_time=last_time,
                last_seq=reach,
                max_seq=max((o.ref.last for o in b.changesets), default=0),
                objects=1 + len(path),
                stored_bytes=b.total_bytes,
                gap=gap,
                changesets=chain,
                detailed=detail,
            )
        )
    return spans


def _read_headers(storage: Storage, db: str, objects: Sequence[StoredObject]) -> dict[str, ObjectHeader]:
    # Range reads are latency-bound on object stores: a few in parallel.
    if len(objects) <= 1:
        return {o.key: read_header(storage, db, o.ref) for o in objects}
    with ThreadPoolExecutor(max_workers=min(HEADER_WORKERS, len(objects))) as pool:
        results = pool.map(lambda o: read_header(storage, db, o.ref), objects)
        return {o.key: h for o, h in zip(objects, results, strict=True)}


# -- target resolution --------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolution:
    """Where a target lands: ``seq`` of ``backup`` at commit ``time``.

    With ``inside`` set the newest commit at or before the target is in that object, at or after
    ``seq``: read its commit times and call ``land_inside``.
    """

    backup: str
    seq: int
    time: float
    inside: ChainObject | None = None


def oldest_point(spans: Sequence[BackupSpan]) -> float:
    """The time of the oldest restore point."""
    return min(s.first_time for s in spans)


def resolve_target(spans: Sequence[BackupSpan], target_time: float | None) -> Resolution:
    """Pure: the newest commit with time <= ``target_time`` (the newest of all for ``None``)."""
    if not spans:
        raise ValueError("no restore points to resolve against")
    if target_time is None:
        newest = spans[-1]
        _check_gap(newest, newest.max_seq)
        return Resolution(newest.backup, newest.last_seq, newest.last_time)
    oldest = oldest_point(spans)
    if target_time < oldest:
        raise RestoreTargetError(
            f"{format_time(target_time)} is before the oldest restore point ({format_time(oldest)})",
            hint="pick a time at or after it; `bakelite list --db <name>` shows the restorable spans",
        )
    best: tuple[float, int, int, Resolution, BackupSpan | None] | None = None
    for order, span in enumerate(spans):
        if span.first_time > target_time:
            continue
        res, blocked = _resolve_in_span(span, target_time)
        rank = (res.time, order, res.seq)
        if best is None or rank >= best[:3]:
            best = (*rank, res, span if blocked else None)
    assert best is not None
    if best[4] is not None:
        # The missing commits' times are unknown: one of them may be the newest at or before T.
        _check_gap(best[4], best[4].last_seq + 1)
    return best[3]


def _check_gap(span: BackupSpan, wanted_seq: int) -> None:
    if span.gap is not None and wanted_seq > span.last_seq:
        raise ChainBrokenError(
            f"backup {span.backup} is missing the change-set(s) for {span.gap.describe()}",
            detail=f"restorable only up to {format_time(span.last_time)} (seq {span.last_seq})",
            hint="restore an earlier point with --timestamp, or take a fresh backup",
        )


def _resolve_in_span(span: BackupSpan, t: float) -> tuple[Resolution, bool]:
    """The newest commit <= t in one span, and whether a hole in the chain may hide a newer one."""
    if t >= span.last_time:
        blocked = span.gap is not None and t > span.last_time
        return Resolution(span.backup, span.last_seq, span.last_time), blocked
    if not span.detailed:
        raise ValueError(f"span of backup {span.backup} needs detail to place {t} inside it")
    # Objects beyond a hole cannot be reached; times are non-decreasing in seq order.
    usable = [c for c in span.changesets if c.last <= span.last_seq]
    seq, when = 0, span.first_time
    for c in usable:
        # An L0 object's first seq is a commit boundary; a compacted one's may not be.
        if c.level == 0 and c.t_first <= t and c.first > seq:
            seq, when = c.first, c.t_first
        if c.t_last <= t and c.last > seq:
            seq, when = c.last, c.t_last
    # Commit seq+1 is after t unless an object holding seq+1 (and perhaps seq) straddles t: then
    # the answer is inside it.  The finest such object (L0 first) keeps the most commit boundaries.
    straddling = [c for c in usable if c.first - 1 <= seq < c.last and c.t_first <= t < c.t_last]
    inside = min(straddling, key=lambda c: (c.level, c.last - c.first), default=None)
    return Resolution(span.backup, seq, when, inside), False


def land_inside(
    resolution: Resolution, commits: Iterable[tuple[int, float]], target_time: float
) -> Resolution:
    """Pure: refine ``resolution`` with the (seq, time) commits of its ``inside`` object."""
    seq, when = resolution.seq, resolution.time
    for s, t in commits:
        if t <= target_time and s >= seq:
            seq, when = s, t
    return Resolution(resolution.backup, seq, when)


def commit_times(
    storage: Storage,
    key: str,
    page_size: int,
    *,
    cipher: FrameCipher | None = None,
    require_encrypted: bool = False,
) -> tuple[list[tuple[int, float]], int]:
    """The (seq, time) of every commit in one change-set, fully verified; and the bytes read."""
    counted = CountingReader(storage.open(key))
    with contextlib.closing(counted):
        reader = ObjectReader(counted.as_binary(), key, cipher, require_encrypted)
        out = []
        for hdr, feed in iter_commits(reader.frames(), page_size):
            skip_bytes(feed, len(hdr.pgnos) * page_size)
            out.append((hdr.seq, hdr.time))
    return out, counted.count


def skip_bytes(feed: ByteFeed, n: int) -> None:
    """Consume ``n`` bytes of a commit's pages in bounded slices."""
    while n > 0:
        step = min(n, PAGE_SLICE)
        feed.read(step)
        n -= step


class CountingReader:
    """Wraps a stream: counts bytes read and returns full reads unless the stream ends."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        """Read ``n`` bytes (everything left for ``n < 0``)."""
        read = self._stream.read
        if n < 0:
            data = bytes(read())
            self.count += len(data)
            return data
        parts: list[bytes] = []
        want = n
        while want > 0:
            chunk = read(want)
            if not chunk:
                break
            parts.append(bytes(chunk))
            want -= len(chunk)
        data = b"".join(parts)
        self.count += len(data)
        return data

    def close(self) -> None:
        """Close the wrapped stream."""
        self._stream.close()

    def as_binary(self) -> BinaryIO:
        """Itself, typed as the binary stream ``ObjectReader`` takes (it only calls ``read``)."""
        return cast(BinaryIO, self)


def iter_spans_needing_detail(spans: Sequence[BackupSpan], target_time: float) -> Iterator[BackupSpan]:
    """Coarse spans whose interior ``target_time`` falls in (they need every header to place it)."""
    for span in spans:
        if not span.detailed and span.first_time <= target_time < span.last_time:
            yield span
