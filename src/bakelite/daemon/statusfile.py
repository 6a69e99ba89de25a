"""The local health files beside a database: the daemon's status file and verify's marker.

``.bakelite/<name>.status.json`` is published by the daemon (``StatusPublisher``) and read by
``bakelite status``; ``.bakelite/<name>.verify.json`` is written by ``bakelite verify`` and read by
``status`` and the metrics endpoint.  This module owns both formats (paths, fields, parsing) so a
writer and its readers cannot drift, and it imports nothing above ``fsutil``.

Times in both files are Unix seconds (floats); a reader computes ages against its own clock.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

from bakelite.fsutil import atomic_write_json, state_dir

logger = logging.getLogger(__name__)

STATUS_VERSION = 1
MARKER_VERSION = 1
# The states in which a database counts as healthy (status --check, bakelite_up).
HEALTHY_STATES = frozenset({"replicating", "snapshotting"})
# How often the publisher looks at every database; a changed status is on disk within this.
PUBLISH_INTERVAL = 2.0
# Slack on top of the heartbeat before a status file counts as stale: a publisher pass over
# thousands of databases, or a slow disk, must not make a healthy daemon look hung.
STALE_MARGIN = 10.0


def status_path(db_path: str | os.PathLike[str], name: str) -> Path:
    """Where the status file of database ``name`` lives."""
    return state_dir(db_path) / f"{name}.status.json"


def marker_path(db_path: str | os.PathLike[str], name: str) -> Path:
    """Where the verify marker of database ``name`` lives."""
    return state_dir(db_path) / f"{name}.verify.json"


def heartbeat_interval(safety_poll: float, interval: float = PUBLISH_INTERVAL) -> float:
    """How often an unchanged status file is rewritten anyway: once per safety poll.

    Tying it to ``safety_poll`` (30 s by default) keeps an idle fleet of 10,000 databases at a few
    hundred small writes a second instead of thousands.
    """
    return max(interval, safety_poll)


def stale_threshold(safety_poll: float, interval: float = PUBLISH_INTERVAL) -> float:
    """Age beyond which a status file proves nothing about the daemon (recorded in the file)."""
    return max(3 * interval, heartbeat_interval(safety_poll, interval) + STALE_MARGIN)


class StatusFileError(ValueError):
    """A status file or marker exists but cannot be parsed."""


def _fields_from(cls: type[Any], data: object, path: Path) -> dict[str, Any]:
    """The known fields of ``cls`` from a parsed JSON object (newer writers may add fields)."""
    if not isinstance(data, dict):
        raise StatusFileError(f"{path}: not a JSON object")
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _read_json(path: Path) -> object | None:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StatusFileError(f"{path}: {e.strerror or e}") from e
    try:
        data: object = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StatusFileError(f"{path}: not valid JSON ({e})") from e
    return data


# -- the status file ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusRecord:
    """What the daemon publishes about one database (the status file's JSON object)."""

    database: str
    path: str
    pid: int
    started: float  # when this daemon process started
    written: float  # when this record was written
    stale_after: float  # seconds after ``written`` when a reader must call the file stale
    state: str  # starting | snapshotting | replicating | backing off | stopped
    retrying: bool = True  # False when the daemon gave up on the database (it needs a restart)
    backup: str | None = None
    last_sync: float | None = None  # when the replica was last caught up
    oldest_unshipped: float | None = None  # commit time of the oldest commit not yet shipped
    changesets: int = 0  # change-sets in the current backup
    changesets_shipped: int = 0  # change-sets shipped by this daemon run
    bytes_shipped: int = 0  # bytes shipped by this daemon run
    snapshots: int = 0  # full backups taken by this daemon run
    failing_since: float | None = None  # start of the current streak of failed attempts
    attempts: int = 0  # failed attempts in that streak
    last_error: str | None = None  # kept after recovery, so a flapping database can be diagnosed
    # True: the file's mtime is its heartbeat (refreshed while the record is unchanged), so the
    # record was last confirmed at the later of ``written`` and the mtime (read_status applies it).
    mtime_heartbeat: bool = False
    version: int = STATUS_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to disk."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object, path: Path = Path("<status>")) -> StatusRecord:
        """Parse a status file's JSON; StatusFileError when required fields are missing or wrong."""
        known = _fields_from(cls, data, path)
        try:
            record = cls(**known)
        except TypeError as e:
            raise StatusFileError(f"{path}: {e}") from e
        if not isinstance(record.pid, int) or not isinstance(record.written, int | float):
            raise StatusFileError(f"{path}: malformed pid or timestamp")
        return record


def read_status(db_path: str | os.PathLike[str], name: str) -> StatusRecord | None:
    """The published status of database ``name``, or None if no daemon ever published one.

    With ``mtime_heartbeat``, ``written`` is the later of the record's own time and the file's
    mtime: an unchanged record's heartbeat only touches the file (see ``StatusPublisher``).
    """
    path = status_path(db_path, name)
    data = _read_json(path)
    if data is None:
        return None
    record = StatusRecord.from_dict(data, path)
    if not record.mtime_heartbeat:
        return record
    with contextlib.suppress(OSError):
        touched = os.stat(path).st_mtime
        if touched > record.written:
            record = replace(record, written=touched)
    return record


def write_status(path: Path, record: StatusRecord) -> None:
    """Replace a status file atomically (temp file + rename), deliberately without fsync.

    A status file is a live hint rewritten every few seconds for every database: fsyncing each
    write would be an fsync storm with thousands of databases.  The rename alone is what readers
    need (they never see a torn file); after a power loss the file may be old or empty, and a reader
    then reports the database stale or not running, which is the truth about a daemon that died.
    """
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    data = json.dumps(record.to_dict(), sort_keys=True, separators=(",", ":")).encode() + b"\n"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        # The file's mtime is its heartbeat (see read_status): it starts as the record's time.
        os.utime(fd, (record.written, record.written))
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)


class Publication(NamedTuple):
    """One database's status: where it goes, what changed, how often to rewrite it unchanged.

    ``key`` is everything the record says except when it was written, as a plain tuple: comparing
    it is all a pass over thousands of unchanged databases costs.  ``build`` makes the record only
    when it is written.
    """

    path: Path
    key: tuple[object, ...]
    heartbeat: float
    build: Callable[[float], StatusRecord]
    # The record has mtime_heartbeat: an unchanged file's heartbeat sets its mtime, not a rewrite.
    touch: bool = False


class StatusPublisher:
    """Writes each database's status file when it changed, and at least once per heartbeat.

    One thread for every database (no thread per database); ``publish_all`` can also be called
    directly, as the daemon does once more after its drain so the files say ``stopped``.  The
    source need only yield the databases whose status may have changed: the heartbeat of every
    file written before is kept here.  A publication with ``touch`` gets its heartbeat by setting
    the file's mtime (one syscall instead of a rewrite: ~4 µs instead of ~140 µs, which matters for
    10,000 databases; ``read_status`` takes the later of the two as ``written``).
    """

    def __init__(
        self,
        source: Callable[[], Iterable[Publication]],
        interval: float = PUBLISH_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.interval = interval
        self.clock = clock
        # path -> (the key last written, when it was written or touched, its publication)
        self._last: dict[Path, tuple[tuple[object, ...], float, Publication]] = {}
        self._heartbeats: list[tuple[float, Path]] = []  # (when due, path), stale entries skipped
        self._retry: dict[Path, Publication] = {}  # whose last write failed: tried again each pass
        self._failing: set[Path] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Publish once now, then every ``interval`` in a background thread."""
        self.publish_all()
        self._thread = threading.Thread(target=self._loop, name="bakelite-status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background thread (the files stay)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.publish_all()
            except Exception:  # a bug here must not silence status for the rest of the run
                logger.exception("publishing status files failed")

    def publish_all(self, force: bool = False) -> int:
        """Write every status file that changed or is due; returns how many were written or touched."""
        written = 0
        with self._lock:
            now = self.clock()
            # Failed writes first, so a newer publication of the same file from the source wins.
            for pub in itertools.chain(list(self._retry.values()), self.source()):
                last = self._last.get(pub.path)
                if not force and last is not None and last[0] == pub.key:
                    if now - last[1] >= pub.heartbeat and self._touch(pub, now):
                        written += 1
                    continue
                if self._write(pub.path, pub.build(now)):
                    self._remember(pub, now)
                    written += 1
                else:
                    self._retry[pub.path] = pub
            while self._heartbeats and self._heartbeats[0][0] <= now:
                _, path = heapq.heappop(self._heartbeats)
                entry = self._last.get(path)
                if entry is not None and now - entry[1] >= entry[2].heartbeat and self._touch(entry[2], now):
                    written += 1
        return written

    def _remember(self, pub: Publication, now: float) -> None:
        self._last[pub.path] = (pub.key, now, pub)
        self._retry.pop(pub.path, None)
        heapq.heappush(self._heartbeats, (now + pub.heartbeat, pub.path))

    def _touch(self, pub: Publication, now: float) -> bool:
        """Heartbeat of an unchanged file: set its mtime, or rewrite it (without ``touch``, or if gone)."""
        try:
            if not pub.touch:
                raise FileNotFoundError
            os.utime(pub.path, (now, now))
        except OSError:
            if not self._write(pub.path, pub.build(now)):
                self._retry[pub.path] = pub
                return False
        self._remember(pub, now)
        return True

    def _write(self, path: Path, record: StatusRecord) -> bool:
        try:
            if path not in self._last:
                # Only .bakelite/ itself is made: a database whose directory is gone gets no file.
                path.parent.mkdir(exist_ok=True)
            write_status(path, record)
        except OSError as e:
            self._last.pop(path, None)  # so .bakelite/ is made again next time, should it be gone
            if path not in self._failing:
                # Logged once per streak: a read-only directory must not flood the journal.
                logger.warning(
                    "%s: cannot write status file %s: %s",
                    record.database,
                    path,
                    e.strerror or e,
                    extra={"database": record.database},
                )
                self._failing.add(path)
            return False
        self._failing.discard(path)
        return True


# -- the verify marker ----------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyMarker:
    """The result of the last ``bakelite verify`` of one database, and of its last clean one."""

    database: str
    when: float
    mode: str  # "shallow" | "deep"
    clean: bool
    problems: tuple[str, ...] = ()
    last_clean: float | None = None
    last_clean_mode: str | None = None
    version: int = MARKER_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to disk."""
        d = asdict(self)
        d["problems"] = list(self.problems)
        return d

    @classmethod
    def from_dict(cls, data: object, path: Path = Path("<marker>")) -> VerifyMarker:
        """Parse a marker's JSON; StatusFileError when it is malformed."""
        known = _fields_from(cls, data, path)
        problems = known.get("problems", ())
        if not isinstance(problems, list | tuple):
            raise StatusFileError(f"{path}: problems is not a list")
        known["problems"] = tuple(str(p) for p in problems)
        try:
            marker = cls(**known)
        except TypeError as e:
            raise StatusFileError(f"{path}: {e}") from e
        if not isinstance(marker.when, int | float) or not isinstance(marker.clean, bool):
            raise StatusFileError(f"{path}: malformed time or result")
        return marker


def read_marker(db_path: str | os.PathLike[str], name: str) -> VerifyMarker | None:
    """The last verify result of database ``name``, or None if it was never verified here."""
    path = marker_path(db_path, name)
    data = _read_json(path)
    return None if data is None else VerifyMarker.from_dict(data, path)


def write_marker(db_path: str | os.PathLike[str], marker: VerifyMarker) -> Path:
    """Durably record a verify result beside the database (``.bakelite/`` is made if missing).

    Raises OSError when the database's directory is absent or not writable (verify runs on hosts
    without the data volume too; the caller reports it and carries on).
    """
    path = marker_path(db_path, marker.database)
    path.parent.mkdir(exist_ok=True)
    atomic_write_json(path, marker.to_dict())
    return path


class MarkerCache:
    """Verify markers for a scraper: re-read only when the file's mtime or size changed."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[tuple[int, int], VerifyMarker | None]] = {}

    def get(self, db_path: str | os.PathLike[str], name: str) -> VerifyMarker | None:
        """The marker of ``name`` (None when absent or unreadable)."""
        path = marker_path(db_path, name)
        try:
            st = os.stat(path)
        except OSError:
            self._cache.pop(path, None)
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        hit = self._cache.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        try:
            marker = read_marker(db_path, name)
        except StatusFileError as e:
            logger.warning("ignoring unreadable verify marker: %s", e)
            marker = None
        self._cache[path] = (stamp, marker)
        return marker
