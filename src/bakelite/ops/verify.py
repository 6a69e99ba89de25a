"""``verify``: prove a replica is intact and restorable, reading the backend only.

Shallow (the default) downloads every stored object of a database and checks, for each one, the
envelope (magic, format version, CRC-32C of every frame and of the whole object, payload BLAKE3,
content hash), that its header is what its key says (database, backup, level, seqs), and that its
payload decodes (a snapshot holds exactly the pages it records; a change-set's commits run through
the seqs its key names).  Then it walks each backup's lineage from the snapshot forward: every
change-set must name as ``prev`` the link of the object that ends just before it, and a hole in the
seqs is reported with the objects it strands.  ``CURRENT`` not naming the newest backup is a
warning (a possible rollback), since restore never trusts it.

``--deep`` then restores the newest state of every backup that passed to a temporary file and runs
``PRAGMA integrity_check`` on it: the only check that catches a database image that was already
corrupt when it was shipped (the hashes are faithful to whatever bytes they were given).

Each database's result is recorded in ``.bakelite/<name>.verify.json`` beside the database, which
``status`` and the metrics endpoint read; the live database itself is never opened.

Limitation: a replica that lost only its newest change-sets looks like one that simply ended there;
no stored object names its successor.  The daemon's cursor knows, so a restart re-bases the backup.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

from bakelite.config.model import Database
from bakelite.daemon.statusfile import StatusFileError, VerifyMarker, read_marker, write_marker
from bakelite.errors import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    BakeliteError,
    CorruptionError,
    ObjectNotFound,
)
from bakelite.format.changeset import iter_commits
from bakelite.format.envelope import FrameCipher, ObjectHeader, ObjectReader, chain_link
from bakelite.format.snapshot import check_snapshot_frames
from bakelite.ops.catalog import (
    BackupInfo,
    CountingReader,
    StoredObject,
    check_identity,
    contiguous_end,
    list_backups,
    read_current,
    select_chain,
    skip_bytes,
)
from bakelite.ops.restore import restore_to_path
from bakelite.storage.base import Storage
from bakelite.units import format_size

logger = logging.getLogger(__name__)

# Objects checked at once: enough to hide an object store's latency; the CPU work (CRC-32C, BLAKE3,
# decompression) releases the GIL.  Each worker streams, holding about one 4 MiB frame.
VERIFY_WORKERS = 4
# Problems kept in the marker (the report has them all).
MARKER_PROBLEMS = 20

ProgressFn = Callable[[int, int | None], None]
# What decrypts a database's objects (None: a plaintext replica); encryption plugs in here.
CipherFor = Callable[[Database, Storage], FrameCipher | None]


@dataclass(frozen=True)
class Problem:
    """Something wrong with one object (``key``), or with a backup or database as a whole."""

    key: str
    problem: str
    exit_code: int = EXIT_CHECK_FAILED

    def __str__(self) -> str:
        return f"{self.key}: {self.problem}"


@dataclass(frozen=True)
class BackupResult:
    """One backup: its objects, how far its chain reaches, and (deep) how its restore drill went."""

    backup: str
    objects: int
    last_seq: int
    clean: bool
    restore: str | None = None  # deep only: "ok", "failed" or "skipped"


@dataclass(frozen=True)
class DatabaseResult:
    """The verification of one database's replica on its primary destination."""

    database: str
    location: str
    mode: str  # "shallow" | "deep"
    clean: bool
    backups: tuple[BackupResult, ...]
    objects: int
    bytes_read: int
    current: str | None
    problems: tuple[Problem, ...]
    warnings: tuple[str, ...]
    marker: Path | None
    elapsed_seconds: float
    exit_code: int


@dataclass(frozen=True)
class VerifyReport:
    """``bakelite verify``: one result per database; ``exit_code`` is the worst of them."""

    mode: str
    databases: tuple[DatabaseResult, ...]
    clean: bool
    exit_code: int


def verify_databases(
    databases: Sequence[Database],
    open_storage: Callable[[Database], Storage],
    *,
    deep: bool = False,
    progress: Callable[[str], ProgressFn] | None = None,
    now: Callable[[], float] = time.time,
    tmp_dir: Path | None = None,
    record: bool = True,
    cipher_for: CipherFor | None = None,
) -> VerifyReport:
    """Verify every database in ``databases`` and (with ``record``) write each one's verify marker."""
    results = []
    for db in databases:
        started = now()
        try:
            storage = open_storage(db)
        except BakeliteError as e:
            result = _failed(db.name, "-", deep, e, 0.0)
        else:
            try:
                enc = db.encryption
                result = verify_database(
                    db.name,
                    storage,
                    deep=deep,
                    progress=progress(db.name) if progress else None,
                    tmp_dir=tmp_dir,
                    cipher=cipher_for(db, storage) if cipher_for is not None else None,
                    require_encrypted=enc.require_encrypted if enc is not None else False,
                )
                result = _with_bad_copies(result, storage)
            except BakeliteError as e:  # the key could not be loaded
                result = _failed(db.name, storage.describe(), deep, e, 0.0)
            finally:
                storage.close()
        if record:
            result = _record(db, result, started)
        results.append(result)
    code = max((r.exit_code for r in results), default=EXIT_OK)
    return VerifyReport("deep" if deep else "shallow", tuple(results), code == EXIT_OK, code)


def verify_database(
    name: str,
    storage: Storage,
    *,
    deep: bool = False,
    progress: ProgressFn | None = None,
    tmp_dir: Path | None = None,
    workers: int = VERIFY_WORKERS,
    cipher: FrameCipher | None = None,
    require_encrypted: bool = False,
) -> DatabaseResult:
    """Verify the replica of database ``name`` on ``storage`` (no marker is written)."""
    started = time.monotonic()
    v = _Verification(name, storage, progress, workers, cipher, require_encrypted)
    try:
        v.run(deep, tmp_dir)
    except BakeliteError as e:
        # Listing failed (backend unreachable, permission): nothing could be checked.
        logger.warning("verify of %s failed: %s", name, e.one_line(), extra={"database": name})
        return _failed(name, storage.describe(), deep, e, time.monotonic() - started)
    problems = tuple(v.problems)
    code = max((p.exit_code for p in problems), default=EXIT_OK)
    return DatabaseResult(
        database=name,
        location=storage.describe(),
        mode="deep" if deep else "shallow",
        clean=not problems,
        backups=tuple(v.backups),
        objects=len(v.checked),
        bytes_read=v.bytes_read,
        current=v.current,
        problems=problems,
        warnings=tuple(v.warnings),
        marker=None,
        elapsed_seconds=time.monotonic() - started,
        exit_code=code,
    )


def _with_bad_copies(result: DatabaseResult, storage: Storage) -> DatabaseResult:
    """Add each destination's corrupt or missing copy (multi-destination) as a problem naming it."""
    from bakelite.storage.fanout import findings_of

    bad = findings_of(storage)
    if not bad:
        return result
    problems = (
        *result.problems,
        *(Problem(b.key, f"bad copy on {b.destination}: {b.problem} (run `bakelite repair`)") for b in bad),
    )
    return replace(result, problems=problems, clean=False, exit_code=max(result.exit_code, EXIT_CHECK_FAILED))


def _failed(name: str, location: str, deep: bool, e: BakeliteError, elapsed: float) -> DatabaseResult:
    return DatabaseResult(
        database=name,
        location=location,
        mode="deep" if deep else "shallow",
        clean=False,
        backups=(),
        objects=0,
        bytes_read=0,
        current=None,
        problems=(Problem(f"{name}/", e.one_line(), e.exit_code),),
        warnings=(),
        marker=None,
        elapsed_seconds=elapsed,
        exit_code=e.exit_code,
    )


def _record(db: Database, result: DatabaseResult, when: float) -> DatabaseResult:
    """Write the verify marker (keeping the time of the last clean run across failed ones)."""
    try:
        previous = read_marker(db.path, db.name)
    except StatusFileError:
        previous = None
    last_clean: float | None
    last_mode: str | None
    if result.clean:
        last_clean, last_mode = when, result.mode
    elif previous is not None:
        last_clean, last_mode = previous.last_clean, previous.last_clean_mode
    else:
        last_clean, last_mode = None, None
    problems = [str(p) for p in result.problems[:MARKER_PROBLEMS]]
    if len(result.problems) > MARKER_PROBLEMS:
        problems.append(f"+{len(result.problems) - MARKER_PROBLEMS} more")
    marker = VerifyMarker(db.name, when, result.mode, result.clean, tuple(problems), last_clean, last_mode)
    try:
        path = write_marker(db.path, marker)
    except OSError as e:
        # verify may run where the data volume is not mounted (a CronJob): report, do not fail.
        warning = f"could not write the verify marker beside {db.path}: {e.strerror or e}"
        return _replace_marker(result, None, (*result.warnings, warning))
    return _replace_marker(result, path, result.warnings)


def _replace_marker(result: DatabaseResult, path: Path | None, warnings: tuple[str, ...]) -> DatabaseResult:
    return replace(result, marker=path, warnings=warnings)


@dataclass
class _Checked:
    """One object after its own checks: its header and chain link, or what is wrong with it."""

    obj: StoredObject
    header: ObjectHeader | None = None
    link: str | None = None
    bytes_read: int = 0
    error: BakeliteError | None = None
    vanished: bool = False


def _check_object(
    storage: Storage, db: str, obj: StoredObject, cipher: FrameCipher | None, require_encrypted: bool
) -> _Checked:
    """Download one object and check everything it can prove on its own (runs in a worker)."""
    try:
        stream = storage.open(obj.key)
    except ObjectNotFound:
        return _Checked(obj, vanished=True)
    except BakeliteError as e:
        return _Checked(obj, error=e)
    counted = CountingReader(stream)
    try:
        with contextlib.closing(counted):
            reader = ObjectReader(counted.as_binary(), obj.key, cipher, require_encrypted)
            header = reader.header
            check_identity(header, db, obj.ref)
            ps = header.page_size
            if ps < 512 or ps > 65536 or ps & (ps - 1):
                raise CorruptionError(f"implausible page size {ps}")
            if obj.ref.kind == "snapshot":
                for _ in check_snapshot_frames(reader.frames(), header):
                    pass
            else:
                _check_commits(obj, reader, ps)
            assert reader.footer is not None
            return _Checked(obj, header, chain_link(header, reader.footer), counted.count)
    except BakeliteError as e:
        return _Checked(obj, bytes_read=counted.count, error=e)


def _check_commits(obj: StoredObject, reader: ObjectReader, page_size: int) -> None:
    """A change-set's commits rise through exactly the seqs its key names (every one at L0)."""
    ref = obj.ref
    seen = ref.first - 1
    for hdr, feed in iter_commits(reader.frames(), page_size):
        if not seen < hdr.seq <= ref.last or (ref.level == 0 and hdr.seq != seen + 1):
            raise CorruptionError(f"commit seq {hdr.seq} out of order after seq {seen}")
        if hdr.db_pages == 0 or 0 in hdr.pgnos:
            raise CorruptionError(f"commit {hdr.seq} records page 0 or an empty database")
        skip_bytes(feed, len(hdr.pgnos) * page_size)
        seen = hdr.seq
    if seen != ref.last:
        raise CorruptionError(f"its commits end at seq {seen}, its key says {ref.last}")


def _what(e: BakeliteError, key: str) -> str:
    """An error's text without a leading ``<key>: `` (the problem names the key already)."""
    text = e.one_line()
    return text.removeprefix(f"{key}: ")


class _Verification:
    """The state of one database's verification."""

    def __init__(
        self,
        name: str,
        storage: Storage,
        progress: ProgressFn | None,
        workers: int,
        cipher: FrameCipher | None,
        require_encrypted: bool,
    ) -> None:
        self.name = name
        self.cipher = cipher
        self.require_encrypted = require_encrypted
        self.storage = storage
        self.progress = progress
        self.workers = workers
        self.checked: dict[str, _Checked] = {}
        self.problems: list[Problem] = []
        self.warnings: list[str] = []
        self.backups: list[BackupResult] = []
        self.current: str | None = None
        self.bytes_read = 0
        self._done = 0

    def run(self, deep: bool, tmp_dir: Path | None) -> None:
        """List, check every object, walk every chain; then (deep) restore each clean backup."""
        # CURRENT before the listing: a backup created in between then reads as "CURRENT is not the
        # newest" (which the daemon's own put order also shows for a moment), never as missing.
        self.current = read_current(self.storage, self.name)
        backups = list_backups(self.storage, self.name)
        total = sum(b.total_bytes for b in backups)
        self._check_all(backups, total)
        if any(c.vanished for c in self.checked.values()):
            # A retention or compaction run replaced objects while we read: look again, and check
            # only what is new (an object still missing now is reported below).
            backups = list_backups(self.storage, self.name)
            for key in [k for k, c in self.checked.items() if c.vanished]:
                del self.checked[key]
            self._check_all(backups, total)
        if not backups:
            self.problems.append(
                Problem(f"{self.name}/", f"no backup on {self.storage.describe()}: nothing is restorable")
            )
            return
        clean: list[BackupInfo] = []
        for info in backups:
            before = len(self.problems)
            last_seq = self._walk(info)
            ok = len(self.problems) == before
            self.backups.append(BackupResult(info.backup, _count(info), last_seq, ok))
            if ok:
                clean.append(info)
        self._check_current(backups)
        if deep:
            self._drill(clean, tmp_dir, total)

    # -- objects -------------------------------------------------------------------------------

    def _check_all(self, backups: Sequence[BackupInfo], total: int) -> None:
        todo = [
            o
            for b in backups
            for o in ([b.snapshot] if b.snapshot else []) + list(b.changesets)
            if o.key not in self.checked
        ]
        # Biggest first, so a large snapshot does not start last and run alone.
        todo.sort(key=lambda o: -o.size)
        if not todo:
            return
        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(todo)))) as pool:
            futures = [
                pool.submit(_check_object, self.storage, self.name, o, self.cipher, self.require_encrypted)
                for o in todo
            ]
            for future in as_completed(futures):
                checked = future.result()
                self.checked[checked.obj.key] = checked
                self.bytes_read += checked.bytes_read
                self._done += checked.obj.size
                if self.progress is not None:
                    self.progress(self._done, total)

    def _problem_for(self, checked: _Checked) -> bool:
        """Record the object's own problem, if any; True when it has one."""
        key = checked.obj.key
        if checked.vanished:
            self.problems.append(Problem(key, "was listed but is missing when read"))
            return True
        if checked.error is not None:
            self.problems.append(Problem(key, _what(checked.error, key), checked.error.exit_code))
            return True
        return False

    # -- lineage -------------------------------------------------------------------------------

    def _walk(self, info: BackupInfo) -> int:
        """Check one backup's chain from its snapshot forward; returns the last reachable seq."""
        prefix = f"{self.name}/{info.backup}/"
        for obj in info.changesets:
            self._problem_for(self.checked[obj.key])
        if info.snapshot is None:
            self.problems.append(
                Problem(
                    prefix,
                    f"no snapshot: its {len(info.changesets)} change-set(s) cannot be restored",
                )
            )
            return 0
        snap = self.checked[info.snapshot.key]
        if self._problem_for(snap) or snap.header is None or snap.link is None:
            return 0
        page_size = snap.header.page_size
        # links[p]: the chain link every object starting at seq p must name as its prev.
        links: dict[int, str] = {1: snap.link}
        unknown: set[int] = set()  # positions after a corrupt object: their link cannot be known
        for obj in sorted(info.changesets, key=lambda o: (o.ref.first, o.ref.level, o.ref.last)):
            c = self.checked[obj.key]
            start, after = obj.ref.first, obj.ref.last + 1
            if c.header is None or c.link is None or start in unknown:
                unknown.add(after)
                continue
            if c.header.page_size != page_size:
                self.problems.append(
                    Problem(
                        obj.key, f"page size {c.header.page_size} differs from its snapshot's {page_size}"
                    )
                )
                unknown.add(after)
                continue
            expected = links.get(start)
            if expected is None:
                continue  # beyond a hole: reported once for the backup below
            if c.header.prev != expected:
                self.problems.append(
                    Problem(
                        obj.key,
                        "does not follow its predecessor in the lineage chain "
                        f"(it names prev {str(c.header.prev)[:16]}…, the chain is at {expected[:16]}…): "
                        "reordered, substituted or from another backup",
                    )
                )
                unknown.add(after)
                continue
            if after in links and links[after] != c.link:
                self.problems.append(
                    Problem(
                        obj.key, f"its chain link disagrees with another object ending at seq {after - 1}"
                    )
                )
                continue
            links[after] = c.link
        reach, gap = contiguous_end(info.changesets)
        if gap is not None:
            stranded = [o for o in info.changesets if o.ref.first > reach + 1]
            self.problems.append(
                Problem(
                    prefix,
                    f"the change-set(s) for {gap.describe()} are missing: restorable only up to seq {reach}, "
                    f"{len(stranded)} later object(s) cannot be applied",
                )
            )
        return reach

    def _check_current(self, backups: Sequence[BackupInfo]) -> None:
        complete = [b.backup for b in backups if b.snapshot is not None]
        if not complete:
            return
        newest = complete[-1]
        if self.current is None:
            self.warnings.append(f"CURRENT is missing or unreadable (the newest backup is {newest})")
        elif self.current not in {b.backup for b in backups}:
            self.warnings.append(
                f"CURRENT names backup {self.current}, which does not exist (the newest is {newest}): "
                "a possible rollback or a deleted backup"
            )
        elif self.current != newest:
            self.warnings.append(
                f"CURRENT names backup {self.current}, but the newest restore point is in backup {newest}: "
                "a possible rollback (restore ignores CURRENT and uses the newest)"
            )

    # -- deep ----------------------------------------------------------------------------------

    def _drill(self, clean: Sequence[BackupInfo], tmp_dir: Path | None, shallow_total: int) -> None:
        """Restore the newest state of every clean backup to a temp file and integrity_check it."""
        plans = []
        for info in clean:
            assert info.snapshot is not None
            newest = max((o.ref.last for o in info.changesets), default=0)
            path = select_chain(info.backup, info.changesets, newest)
            plans.append((info, info.snapshot.size + sum(o.size for o in path)))
        total = shallow_total + sum(size for _, size in plans)
        done_before = self._done
        results = {b.backup: b for b in self.backups}
        with tempfile.TemporaryDirectory(prefix="bakelite-verify-", dir=tmp_dir) as tmp:
            for info, size in plans:
                out = Path(tmp) / f"{info.backup}.db"
                offset = done_before

                def report(done: int, _total: int | None, offset: int = offset) -> None:
                    if self.progress is not None:
                        self.progress(offset + done, total)

                outcome = "ok"
                try:
                    restored = restore_to_path(
                        self.storage,
                        self.name,
                        info.backup,
                        None,
                        out,
                        cipher=self.cipher,
                        require_encrypted=self.require_encrypted,
                        progress=report,
                        listing=info,
                    )
                    self.bytes_read += restored.bytes_downloaded
                except BakeliteError as e:
                    outcome = "failed"
                    self.problems.append(
                        Problem(
                            f"{self.name}/{info.backup}/",
                            f"restore drill failed: {e.one_line()}",
                            e.exit_code,
                        )
                    )
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(out)
                done_before += size
                results[info.backup] = replace(results[info.backup], clean=outcome == "ok", restore=outcome)
        # A backup with shallow problems is not restored: its problems are already known.
        self.backups = [
            b if b.restore is not None else replace(b, restore="skipped")
            for b in (results[b.backup] for b in self.backups)
        ]


def _count(info: BackupInfo) -> int:
    return len(info.changesets) + (1 if info.snapshot is not None else 0)


# -- text -----------------------------------------------------------------------------------------


def render_verify_text(report: VerifyReport) -> str:
    """One summary line per database, then its problems and warnings."""
    if not report.databases:
        return "no databases"
    lines = []
    for r in report.databases:
        if r.clean:
            head = f"{r.database}: clean ({r.mode})"
        else:
            n = len(r.problems)
            head = f"{r.database}: {n} PROBLEM{'S' if n != 1 else ''} ({r.mode})"
        detail = f"{len(r.backups)} backup(s), {r.objects} object(s), {format_size(r.bytes_read)} read"
        if r.mode == "deep":
            drilled = sum(1 for b in r.backups if b.restore == "ok")
            detail += f", {drilled} restored and integrity-checked"
        lines.append(f"{head}: {detail} in {r.elapsed_seconds:.1f}s on {r.location}")
        lines += [f"  PROBLEM {p}" for p in r.problems]
        lines += [f"  warning: {w}" for w in r.warnings]
    return "\n".join(lines)
