"""Replication of one live database: bootstrap or resume, ship change-sets, checkpoint, snapshot, stop.

A ``DatabaseReplicator`` is driven by the daemon's scheduler (or an embedded replicator): every
public method takes the replicator's lock, so one database never has two operations at once.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from bakelite.config.model import Database
from bakelite.errors import BackendError, BakeliteError, CorruptionError
from bakelite.format import layout
from bakelite.format.changeset import CommitRecord, changeset_frames, changeset_header
from bakelite.format.envelope import (
    FrameCipher,
    ObjectFooter,
    ObjectHeader,
    ObjectWriter,
    chain_link,
    cipher_key_id,
    decode_object,
)
from bakelite.format.snapshot import snapshot_header
from bakelite.replication.cursor import ReplicaCursor, load_cursor, save_cursor
from bakelite.replication.snapshotter import plan_snapshot, snapshot_frames
from bakelite.replication.waltracker import GapError, PendingCommit, WalPosition, WalTracker
from bakelite.sqlite import wal
from bakelite.sqlite.connections import LiveDatabase
from bakelite.storage.base import Storage
from bakelite.storage.retry import Restartable

logger = logging.getLogger(__name__)

# A change-set holds at most about this many bytes of pages; a bigger backlog ships as several.
MAX_CHANGESET_BYTES = 64 * 1024 * 1024
# How long after the database file's last write a cursor save must be for its mtime to prove
# that no later write happened (several coarse timestamp ticks).
MTIME_MARGIN = 0.05


# A WAL file left bigger than max_wal_size (its TRUNCATE lost to a busy writer) is retried this often.
TRUNCATE_RETRY = 5.0
# Frames a change event's first look reads for a commit while our reader may sit on read-mark 0
# (60 KiB of 4 KiB pages: checked in Python, about a millisecond).
PROBE_FRAMES = 15
# WAL grown past our reader's snapshot before a long ship moves the reader on (looked at after
# every this many bytes of pages shipped): the app's own checkpoint works in spans of 1,000 pages.
STEP_BYTES = 4 * 1024 * 1024


@dataclass
class ReplicatorStatus:
    """What the daemon publishes about one database (status file, metrics)."""

    state: str = "starting"
    backup: str | None = None
    last_sync: float | None = None  # when the replica was last caught up
    oldest_unshipped: float | None = None  # commit time of the oldest commit not yet shipped
    changesets: int = 0
    bytes_shipped: int = 0
    failing_since: float | None = None
    attempts: int = 0
    last_error: str | None = None
    snapshots: int = 0
    checkpoints: int = 0
    truncates: int = 0
    checkpoints_deferred: int = 0  # put off because the app wrote faster than the tail settled


class DatabaseReplicator:
    """Ships every committed change of one database to its sync destinations."""

    def __init__(
        self,
        db: Database,
        storages: list[Storage],
        *,
        cipher: FrameCipher | None = None,
        snapshot_gate: threading.Semaphore | None = None,
        snapshot_workers: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not storages:
            raise ValueError("a replicator needs at least one sync destination")
        self.db = db
        self.storages = storages
        self.cipher = cipher
        self.snapshot_gate = snapshot_gate
        # Threads that compress one snapshot's frames (the daemon's snapshot_workers).
        self.snapshot_workers = snapshot_workers
        self.clock = clock
        self.lock = threading.RLock()
        self.live: LiveDatabase | None = None
        self.tracker: WalTracker | None = None
        self.cursor: ReplicaCursor | None = None
        self.status = ReplicatorStatus()
        self._missed_observe = False
        self._retry_batch = 0
        # Every commit up to our reader's mark has been shipped, so any commit observed since lies
        # past the mark.  False from the start of a ship until it finishes (a failure part-way
        # can leave pending commits behind a newer reader).
        self._shipped_to_mark = False
        # (LiveDatabase.epoch, WAL generation, commit_next) from a full scan made after the reader
        # of that epoch began: its snapshot ends at or before that frame, so any commit seen past
        # it proves frames our reader keeps the app's checkpoints from backfilling.
        self._mark_bound: tuple[int, tuple[int, int], int] | None = None
        self._last_checkpoint = 0.0
        # The WAL generation and its committed frame bytes at our latest checkpoint.
        self._checkpointed_at: tuple[tuple[int, int] | None, int] = (None, 0)

    @property
    def _slot0_suspect(self) -> bool:
        """Whether our reader may sit on read-mark slot 0 (see LiveDatabase.maybe_slot0).

        Such a reader makes every autocheckpoint of the app rebuild a frame iterator over the whole
        WAL and then give up, so the app's commits get several times slower once its WAL passes
        wal_autocheckpoint; a new reader begun once commits are pending takes a slot > 0.
        """
        return self.live is not None and self.live.maybe_slot0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Open the database, then resume from a valid cursor or take a new full backup."""
        with self.lock:
            self.status.state = "starting"
            live = LiveDatabase(Path(self.db.path), self.db.busy_timeout, auto_wal=self.db.auto_wal)
            self.live = live
            self.tracker = WalTracker(live.wal_path, live.read_header().page_size)
            cursor = load_cursor(Path(self.db.path), self.db.name)
            resumed = False
            try:
                # I5: the first read transaction (and the resume copy) happen inside a writer freeze.
                with live.freeze():
                    live.acquire_initial()
                    reason, resumed_at, position = self._check_cursor(cursor)
                    if reason is None and resumed_at is not None:
                        cursor = resumed_at
                        self._save_cursor(cursor)
                        self.tracker.reset(position)
                        self._ship_all()
                        resumed = True
                        logger.info(
                            "resumed %s at seq %d of backup %s", self.db.name, cursor.seq, cursor.backup
                        )
                    elif cursor is not None:
                        logger.warning("%s: starting a new backup: %s", self.db.name, reason)
                if not resumed:
                    self._new_backup()
            except BaseException:
                self.status.state = "backing off"
                raise
            self.status.state = "replicating"
            self.status.backup = self.cursor.backup if self.cursor else None

    def stop(self) -> None:
        """Ship everything committed (inside a writer freeze), save the cursor, close."""
        with self.lock:
            live = self.live
            if live is None:
                return
            try:
                if self.cursor is not None and live.current is not None:
                    with live.freeze():
                        self._ship_all()
            finally:
                live.close()
                self.live = None
                self.status.state = "stopped"

    def abandon(self) -> None:
        """Close connections without shipping (after a fatal error)."""
        with self.lock:
            if self.live is not None:
                self.live.close()
                self.live = None

    # ------------------------------------------------------------------ steady state
    def observe(self) -> bool:
        """Stamp newly committed transactions with the current time (cheap; skipped if busy).

        Returns True when a sync should run now rather than after the debounce: commits are
        pending while our reader may hold read-mark slot 0 (see ``_slot0_suspect``), or the WAL
        has grown past max_wal_size (so a fast writer cannot outrun the checkpoint for a whole
        max_batch_delay).
        """
        if not self.lock.acquire(blocking=False):
            # Busy shipping: the running operation stamps these commits before it lets go.
            self._missed_observe = True
            return False
        try:
            if self.tracker is not None and self.cursor is not None and self.live is not None:
                if self._slot0_suspect and self._shipped_to_mark:
                    # Off slot 0 now, not after the sync that follows: until then every app
                    # commit past 1,000 WAL pages walks the whole WAL (see refresh(beyond_mark)).
                    # One commit past the mark is proof enough, and a probe of a few frames finds
                    # it without waiting for a full scan (which may wait for numpy's import).
                    with contextlib.suppress(GapError):
                        self.tracker.observe(self.clock(), force=False, max_frames=PROBE_FRAMES)
                    if self.tracker.pending:
                        self.live.step_forward()
                        logger.debug(
                            "%s: reader stepped off read-mark 0%s",
                            self.db.name,
                            " (not yet proven: the commit was not published)" if self._slot0_suspect else "",
                        )
                        self._shipped_to_mark = False  # the pending commits now lie behind the mark
                with contextlib.suppress(GapError):
                    self.tracker.observe(self.clock(), force=False)
                self._update_lag()
                return self._urgent()
            return False
        finally:
            self.lock.release()

    def urgent(self) -> bool:
        """Whether a sync should run now (see ``observe``); for the scheduler after each task."""
        with self.lock:
            return self.tracker is not None and self.live is not None and self._urgent()

    def _urgent(self) -> bool:
        tracker = self._require_tracker()
        if not tracker.pending:
            return False
        if self._slot0_suspect:
            return True
        used = tracker.frames_used()
        if used <= self.db.max_wal_size:
            return False
        # Once per WAL generation, then again only after another half max_wal_size: an app reader
        # pinning an old snapshot keeps the WAL from restarting however often we try.
        gen, at = self._checkpointed_at
        return gen != tracker.gen or used - at >= self.db.max_wal_size // 2

    def sync(self) -> int:
        """Refresh the read transaction (I1) and ship every committed change; return commits shipped."""
        t0 = time.monotonic()
        try:
            return self._sync()
        finally:
            logger.debug("%s: sync in %.3f s", self.db.name, time.monotonic() - t0)

    def _sync(self) -> int:
        with self.lock:
            live = self._require_live()
            # Commits already stamped lie beyond our current reader's mark.
            frames_pending = bool(self._require_tracker().pending)
            # Step off a reader that may pin slot 0 before shipping, not after, when that is safe.
            beyond_mark = self._past_mark() or (
                frames_pending and self._slot0_suspect and self._shipped_to_mark
            )
            try:
                shipped = live.refresh(self._ship_all, beyond_mark=beyond_mark)
            except GapError as e:
                logger.warning("%s: %s; taking a new full backup", self.db.name, e)
                self._new_backup()
                shipped = 0
            self._ok()
            self._catch_up_observe()
            return shipped

    def _catch_up_observe(self) -> None:
        """Stamp commits whose change events arrived while the lock was held."""
        if self._missed_observe and self.tracker is not None:
            self._missed_observe = False
            with contextlib.suppress(GapError):
                self.tracker.observe(self.clock())
            self._update_lag()

    def maybe_checkpoint(self) -> bool:
        """Checkpoint (and TRUNCATE) once the WAL passes max_wal_size; True if one ran."""
        with self.lock:
            live = self._require_live()
            tracker = self._require_tracker()
            # The frames of this WAL generation decide; the file keeps its high-water size after
            # a restart, so a file still too big is only re-truncated once in a while.
            if tracker.frames_used() <= self.db.max_wal_size and (
                tracker.wal_size() <= self.db.max_wal_size
                or time.monotonic() - self._last_checkpoint < TRUNCATE_RETRY
            ):
                return False
            self._last_checkpoint = t0 = time.monotonic()
            self._checkpointed_at = (tracker.gen, tracker.frames_used())
            truncated = live.checkpoint(self._ship_all, self._tail_bytes, self._past_mark)
            if truncated is None:
                # The app writes faster than the tail settles: the next sync past max_wal_size
                # tries again, never with a long freeze.
                logger.debug(
                    "%s: checkpoint put off: %d bytes of WAL still unshipped",
                    self.db.name,
                    self._pending_bytes(),
                )
                self.status.checkpoints_deferred += 1
                self._catch_up_observe()
                return False
            logger.debug(
                "%s: checkpoint in %.3f s (WAL frames %d bytes, truncated: %s)",
                self.db.name,
                time.monotonic() - t0,
                tracker.frames_used(),
                truncated,
            )
            self.status.checkpoints += 1
            if truncated:
                self.status.truncates += 1
            # The checkpoint wrote the database file: record its new size and mtime.
            self._save_cursor(self._require_cursor())
            self._catch_up_observe()
            return True

    def _tail_bytes(self) -> int:
        """Committed WAL bytes not yet shipped, observed now (what a writer freeze would copy)."""
        self._require_tracker().observe(self.clock())
        return self._pending_bytes()

    def _pending_bytes(self) -> int:
        """WAL bytes of the commits already observed and not yet shipped."""
        tracker = self._require_tracker()
        frame = tracker.page_size + wal.FRAME_HEADER_SIZE
        return frame * sum(len(c.frames) for c in tracker.pending)

    def snapshot_due(self) -> bool:
        """Whether snapshot_interval or max_segments_per_snapshot calls for a new full backup."""
        cursor = self.cursor
        if cursor is None:
            return False
        age = self.clock() - layout.backup_time(cursor.backup)
        if self.db.snapshot_interval > 0 and age >= self.db.snapshot_interval:
            return True
        limit = self.db.max_segments_per_snapshot
        return bool(limit) and cursor.changesets >= limit

    def snapshot(self) -> None:
        """Ship what is pending, then take a new full backup."""
        with self.lock:
            live = self._require_live()
            live.refresh(self._ship_all)
            self._new_backup()
            self._ok()

    def record_failure(self, error: BaseException) -> None:
        """Note a failed attempt (the scheduler backs off and retries)."""
        now = self.clock()
        if self.status.failing_since is None:
            self.status.failing_since = now
        self.status.attempts += 1
        self.status.last_error = error.one_line() if isinstance(error, BakeliteError) else repr(error)
        if self.status.state not in ("stopped",):
            self.status.state = "backing off"

    # ------------------------------------------------------------------ internals
    def _require_live(self) -> LiveDatabase:
        if self.live is None:
            raise BakeliteError(f"replication of {self.db.name} is not running")
        return self.live

    def _require_tracker(self) -> WalTracker:
        if self.tracker is None:
            raise BakeliteError(f"replication of {self.db.name} is not running")
        return self.tracker

    def _require_cursor(self) -> ReplicaCursor:
        if self.cursor is None:
            raise BakeliteError(f"replication of {self.db.name} has no backup yet")
        return self.cursor

    def _ok(self) -> None:
        self.status.state = "replicating"
        self.status.failing_since = None
        self.status.attempts = 0
        self._update_lag()

    def _update_lag(self) -> None:
        tracker = self.tracker
        if tracker is None:
            return
        if tracker.pending:
            self.status.oldest_unshipped = tracker.pending[0].time
        else:
            self.status.oldest_unshipped = None
            self.status.last_sync = self.clock()

    def _check_cursor(
        self, cursor: ReplicaCursor | None
    ) -> tuple[str | None, ReplicaCursor | None, WalPosition | None]:
        """(None, cursor, where to continue) if replication can resume, else (why not, None, None).

        Called inside the writer freeze, so the WAL cannot change while it is checked.  Objects
        found beyond the cursor (a crash between an upload and the cursor write) are adopted when
        they verify and chain on, and deleted when they do not (they were never acknowledged).
        """
        if cursor is None:
            return "no cursor", None, None
        reason = self._cursor_identity_problem(cursor)
        if reason is None:
            cursor, reason = self._adopt_beyond(cursor)
        if reason is None:
            reason = self._wal_problem(cursor)
        if reason is not None:
            return reason, None, None
        hdr = self._require_tracker().read_header()
        pos = cursor.position
        if pos is not None and hdr is not None and hdr.salts == pos.salts:
            return None, cursor, pos
        # Same file, nothing checkpointed since: the current generation (if any) starts at frame 0.
        return None, cursor, None

    def _cursor_identity_problem(self, cursor: ReplicaCursor) -> str | None:
        live, tracker = self._require_live(), self._require_tracker()
        if (cursor.st_dev, cursor.st_ino) != live.identity:
            return "the database file was replaced"
        if cursor.page_size != tracker.page_size:
            return "the page size changed"
        if cursor.encrypted != (self.cipher is not None):
            return "encryption was turned on or off"
        if cursor.key_id is not None and cursor.key_id != cipher_key_id(self.cipher):
            return "the encryption key changed"
        primary = self.storages[0]
        for key in (layout.snapshot_key(self.db.name, cursor.backup), cursor.last_key):
            if primary.stat(key) is None:
                return f"object {key} is missing from {primary.describe()}"
        return None

    def _adopt_beyond(self, cursor: ReplicaCursor) -> tuple[ReplicaCursor, str | None]:
        primary = self.storages[0]
        beyond = sorted(
            (
                ref
                for info in primary.list(layout.backup_prefix(self.db.name, cursor.backup))
                if (ref := layout.parse_key(self.db.name, info.key)) is not None
                and ref.kind == "changeset"
                and ref.last > cursor.seq
            ),
            key=lambda r: (r.first, r.level),
        )
        for i, ref in enumerate(beyond):
            adopted = self._try_adopt(cursor, ref)
            if isinstance(adopted, str):
                stale = [r.key for r in beyond[i:]]
                if adopted == "corrupt":
                    # Never acknowledged by the cursor and not restorable: remove the torn tail.
                    logger.warning("%s: removing %d unacknowledged object(s)", self.db.name, len(stale))
                    for storage in self.storages:
                        storage.delete(stale)
                    return cursor, None
                return cursor, f"object {ref.key} beyond the cursor: {adopted}"
            cursor = adopted
            logger.info("%s: adopted %s shipped before a crash", self.db.name, ref.key)
        return cursor, None

    def _try_adopt(self, cursor: ReplicaCursor, ref: layout.ObjectRef) -> ReplicaCursor | str:
        """The cursor advanced past ``ref`` if it verifies and chains on; else why not."""
        primary = self.storages[0]
        try:
            data = primary.get(ref.key)
            header, _, footer = decode_object(data, ref.key, self.cipher)
        except CorruptionError:
            return "corrupt"
        if ref.first != cursor.seq + 1 or header.prev != cursor.last_link:
            return "corrupt"
        position = WalPosition.from_dict(header.meta.get("position"))
        if position is None or self._position_problem(position) is not None:
            return "its WAL position is gone"
        t_last = float(header.meta.get("t_last", cursor.last_time))
        return replace(
            cursor,
            seq=ref.last,
            last_key=ref.key,
            last_link=chain_link(header, footer),
            last_time=t_last,
            position=position,
            changesets=cursor.changesets + 1,
        )

    def _position_problem(self, pos: WalPosition) -> str | None:
        live, tracker = self._require_live(), self._require_tracker()
        hdr = tracker.read_header()
        if hdr is None or hdr.salts != pos.salts:
            return "the WAL generation changed"
        if pos.next_frame == 0:
            return None if hdr.checksum == (pos.ck1, pos.ck2) else "the WAL header changed"
        with open(live.wal_path, "rb") as f:
            f.seek(wal.frame_offset(pos.next_frame - 1, tracker.page_size))
            raw = f.read(wal.FRAME_HEADER_SIZE)
        if len(raw) == wal.FRAME_HEADER_SIZE:
            fh = wal.parse_frame_header(raw)
            if fh.salts == pos.salts and fh.checksum == (pos.ck1, pos.ck2) and fh.is_commit:
                return None
        return "the WAL no longer holds the cursor's frame"

    def _wal_problem(self, cursor: ReplicaCursor) -> str | None:
        live = self._require_live()
        pos = cursor.position
        hdr = self._require_tracker().read_header()
        if pos is not None and hdr is not None and hdr.salts == pos.salts:
            return self._position_problem(pos)
        st = os.fstat(live.dbfd)
        # File timestamps tick coarsely (one kernel tick, up to 10 ms): a checkpoint in the same
        # tick as the recorded mtime would leave it unchanged.  Trust "unchanged" only when the
        # cursor was saved well after that mtime, so any later write lands in a later tick.
        settled = cursor.saved_at - cursor.db_mtime_ns / 1e9 > MTIME_MARGIN
        if settled and (st.st_size, st.st_mtime_ns) == (cursor.db_size, cursor.db_mtime_ns):
            # The WAL restarted or was truncated but nothing was checkpointed into the file since
            # the cursor was saved: the current generation holds every later commit.
            return None
        return "the WAL was reset while the daemon was down and continuity cannot be proven"

    def _ship_all(self) -> int:
        """Observe and ship every pending commit (called inside a read transaction).

        Commits found while shipping (to step the reader forward) are left for the next sync,
        so a writer that never pauses cannot keep one sync going forever.
        """
        tracker = self._require_tracker()
        self._shipped_to_mark = False
        try:
            self._observe_bounding()
        finally:
            self._update_lag()
        todo = len(tracker.pending)
        total = 0
        while total < todo:
            # After a failed upload, retry exactly the same commits, so the retry lands on the
            # same key and overwrites whatever the failed attempt left there.
            if self._retry_batch:
                batch = tracker.pending[: self._retry_batch]
            else:
                batch = tracker.take(MAX_CHANGESET_BYTES)[: todo - total]
            self._retry_batch = len(batch)
            self._ship(batch)
            self._retry_batch = 0
            tracker.shipped(batch)
            total += len(batch)
        self._shipped_to_mark = self._shipped_through_bound()
        self._update_lag()
        return total

    def _observe_bounding(self) -> None:
        """A full scan of the WAL; its end bounds the snapshot of the newest reader (begun before)."""
        live, tracker = self._require_live(), self._require_tracker()
        epoch = live.epoch
        tracker.observe(self.clock())
        gen = tracker.gen
        self._mark_bound = None if gen is None else (epoch, gen, tracker.commit_next)

    def _bound(self) -> int | None:
        """The frame our current reader's snapshot ends at or before, if known for this WAL."""
        bound, live, tracker = self._mark_bound, self.live, self.tracker
        if bound is None or live is None or tracker is None:
            return None
        epoch, gen, frame = bound
        return frame if epoch == live.epoch and gen == tracker.gen else None

    def _past_mark(self) -> bool:
        """Whether a commit is known past our reader's snapshot (so the WAL is not all backfilled)."""
        bound = self._bound()
        return bound is not None and self._require_tracker().commit_next > bound

    def _shipped_through_bound(self) -> bool:
        """Whether every commit up to our reader's snapshot is shipped (any left lies past it)."""
        pending = self._require_tracker().pending
        bound = self._bound()
        return not pending or (bound is not None and pending[0].last_frame >= bound)

    def _step_if_behind(self) -> None:
        """During a long ship: move our reader to the WAL's end when the WAL has grown STEP_BYTES.

        A reader left where the ship began lets the app's checkpoints backfill nothing newer, and
        then, once it moves, hundreds of MiB in one of the app's commits (0.4-0.6 s seen).  Moving
        it every few MiB shipped keeps each backfill near the app's own 1,000-page span.  Safe
        because a commit seen past the mark means the new reader lands on a slot > 0, which alone
        keeps every frame (see step_forward); not while refresh() holds both readers.
        """
        live, tracker = self._require_live(), self._require_tracker()
        if not live.can_step:
            return
        tracker.observe(self.clock())
        bound = self._bound()
        if bound is None:
            return
        grown = wal.frame_offset(tracker.commit_next, tracker.page_size) - wal.frame_offset(
            bound, tracker.page_size
        )
        if grown < STEP_BYTES:
            return
        live.step_forward()
        self._observe_bounding()
        logger.debug("%s: reader moved on while shipping (WAL grew %d bytes)", self.db.name, grown)

    def _ship(self, commits: list[PendingCommit]) -> None:
        cursor = self._require_cursor()
        tracker = self._require_tracker()
        last = cursor.seq + len(commits)
        with open(tracker.wal_path, "rb") as wal_file:
            footer, size, key, position = self._ship_from(commits, wal_file)
        self.status.changesets += 1
        self.status.bytes_shipped += size
        self._save_cursor(
            replace(
                cursor,
                seq=last,
                last_key=key,
                last_link=footer.hash,
                last_time=commits[-1].time,
                position=position,
                changesets=cursor.changesets + 1,
            )
        )

    def _ship_from(
        self, commits: list[PendingCommit], wal_file: BinaryIO
    ) -> tuple[ObjectFooter, int, str, WalPosition | None]:
        """Encode ``commits`` (pages read through ``wal_file``) and write the change-set object."""
        cursor = self._require_cursor()
        tracker = self._require_tracker()
        ps = tracker.page_size
        first = cursor.seq + 1
        last = cursor.seq + len(commits)
        records = []
        for i, c in enumerate(commits):
            pages = tracker.read_pages(c, wal_file)
            records.append(CommitRecord(first + i, c.time, c.db_pages, pages, pgnos=pages.pgnos))
        position = tracker.position_after(commits)
        header = changeset_header(
            db=self.db.name,
            backup=cursor.backup,
            first=first,
            last=last,
            page_size=ps,
            codec=self.db.compression,
            encrypted=self.cipher is not None,
            created=self.clock(),
            prev=cursor.last_link,
            t_first=commits[0].time,
            t_last=commits[-1].time,
            db_pages=commits[-1].db_pages,
            position=None if position is None else position.to_dict(),
        )
        key = layout.changeset_key(self.db.name, cursor.backup, 0, first, last)
        footer, size = self._put(key, header, lambda: changeset_frames(self._stepping(records, ps), ps))
        return footer, size, key, position

    def _stepping(self, records: list[CommitRecord], page_size: int) -> Iterator[CommitRecord]:
        """``records`` in order, offering to move our reader on after every STEP_BYTES of pages."""
        since = 0
        for record in records:
            if since >= STEP_BYTES:
                since = 0
                self._step_if_behind()
            yield record
            since += len(record.pages) * page_size

    def _put(
        self,
        key: str,
        header: ObjectHeader,
        frames: Callable[[], Iterable[bytes]],
        cold: bool = False,
        workers: int = 1,
    ) -> tuple[ObjectFooter, int]:
        """Write one object to every sync destination (lock-step); return its footer and size."""
        writers: list[ObjectWriter] = []

        def chunks() -> Iterator[bytes]:
            w = ObjectWriter(header, self.cipher, workers=workers)
            writers.append(w)
            yield from w.chunks(frames())

        size = 0
        for storage in self.storages:
            size = storage.put_stream(key, Restartable(chunks), cold=cold)
        footer = writers[-1].footer
        if footer is None:
            raise BackendError(f"object {key} was not written completely")
        return footer, size

    def _save_cursor(self, cursor: ReplicaCursor) -> None:
        live = self._require_live()
        st = os.fstat(live.dbfd)
        cursor = replace(
            cursor,
            db_size=st.st_size,
            db_mtime_ns=st.st_mtime_ns,
            saved_at=time.time(),
            key_id=cipher_key_id(self.cipher),
        )
        save_cursor(Path(self.db.path), self.db.name, cursor)
        self.cursor = cursor

    def _new_backup(self) -> None:
        """Take a full snapshot as the base of a new backup (inside our read transaction)."""
        live, tracker = self._require_live(), self._require_tracker()
        self._shipped_to_mark = False
        gate = self.snapshot_gate
        if gate is not None:
            gate.acquire()
        try:
            self.status.state = "snapshotting"
            for attempt in range(1, 4):
                now = self.clock()
                plan = plan_snapshot(live)
                backup = layout.new_backup_id(now)
                header = snapshot_header(
                    db=self.db.name,
                    backup=backup,
                    page_size=plan.page_size,
                    db_pages=plan.db_pages,
                    commit_time=now,
                    codec=self.db.compression,
                    encrypted=self.cipher is not None,
                    created=now,
                    position=None if plan.position is None else plan.position.to_dict(),
                )
                key = layout.snapshot_key(self.db.name, backup)
                try:
                    footer, size = self._put(
                        key,
                        header,
                        functools.partial(snapshot_frames, live, plan),
                        cold=True,
                        workers=self.snapshot_workers,
                    )
                    break
                except GapError as e:
                    # The WAL restarted under the snapshot (at most once per read transaction):
                    # plan again from the new generation.
                    if attempt == 3:
                        raise
                    logger.info("%s: %s; taking the snapshot again", self.db.name, e)
            st = os.fstat(live.dbfd)
            cursor = ReplicaCursor(
                db_path=str(self.db.path),
                st_dev=live.identity[0],
                st_ino=live.identity[1],
                page_size=plan.page_size,
                backup=backup,
                seq=0,
                last_key=key,
                last_link=footer.hash,
                last_time=now,
                position=plan.position,
                db_size=st.st_size,
                db_mtime_ns=st.st_mtime_ns,
                codec=self.db.compression,
                encrypted=self.cipher is not None,
            )
            self._save_cursor(cursor)
            tracker.reset(plan.position)
            # The snapshot covers every commit up to the last one it planned, at or past our mark.
            self._shipped_to_mark = True
            self._mark_bound = None
            self._retry_batch = 0
            for storage in self.storages:
                storage.put(layout.current_key(self.db.name), backup.encode() + b"\n")
            self.status.snapshots += 1
            self.status.bytes_shipped += size
            self.status.backup = backup
            logger.info(
                "%s: new backup %s: %d pages of %d bytes",
                self.db.name,
                backup,
                plan.db_pages,
                plan.page_size,
                extra={"database": self.db.name, "backup": backup},
            )
        finally:
            if gate is not None:
                gate.release()
