"""``status``: is replication healthy and current?  Read from local files only, never the backend.

The daemon publishes ``.bakelite/<name>.status.json`` every few seconds; ``verify`` leaves
``.bakelite/<name>.verify.json``.  The state shown is derived, so a daemon that died or hung never
looks healthy:

* no status file                    -> ``not running`` (the daemon never ran for it here)
* the file says ``stopped``         -> ``stopped`` (a clean shutdown)
* the recorded PID is gone          -> ``not running``
* older than its ``stale_after``    -> ``stale`` (the daemon is hung or stopped by a signal)
* otherwise                         -> the state the daemon wrote

Only ``replicating`` and ``snapshotting`` are healthy.  ``--check`` fails on any other state, on a lag
beyond ``--max-lag`` and on a missing, failed or too old verify with ``--max-verify-age``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from bakelite.config.model import Database
from bakelite.daemon.statusfile import (
    HEALTHY_STATES,
    StatusFileError,
    StatusRecord,
    VerifyMarker,
    read_marker,
    read_status,
)
from bakelite.errors import EXIT_CHECK_FAILED, EXIT_OK
from bakelite.ops.timeparse import to_datetime
from bakelite.units import format_age, format_duration, format_size

logger = logging.getLogger(__name__)

# States that only exist while the daemon is alive: their lag and freshness mean something.
LIVE_STATES = frozenset({"starting", "snapshotting", "replicating", "backing off"})

PidCheck = Callable[[int], bool]


@dataclass(frozen=True)
class VerifyState:
    """The last verify of a database (from its marker) and its last clean one."""

    when: datetime
    mode: str
    clean: bool
    problems: tuple[str, ...]
    age_seconds: float
    last_clean: datetime | None
    last_clean_mode: str | None
    last_clean_age_seconds: float | None


@dataclass(frozen=True)
class MirrorStatus:
    """One async mirror destination, from the mirror loop's state file."""

    destination: str
    in_sync: bool
    behind_objects: int
    behind_bytes: int
    current: str | None
    last_reconcile: datetime | None
    last_reconcile_age_seconds: float | None
    last_error: str | None
    stale: bool  # the mirror loop's daemon is gone or silent: this reading is not live


@dataclass(frozen=True)
class DatabaseStatus:
    """One database: the derived state, its numbers, and why it fails ``--check`` (``problems``)."""

    database: str
    path: Path
    state: str
    healthy: bool
    reason: str | None  # why a derived state (stale, not running, stopped) was chosen
    pid: int | None
    updated: datetime | None  # when the status file was written
    updated_age_seconds: float | None
    stale_after_seconds: float | None
    lag_seconds: float | None  # replica behind the live database; None when unknown
    last_sync: datetime | None
    synced_age_seconds: float | None
    backup: str | None
    changesets: int
    bytes_shipped: int
    stuck_seconds: float | None  # how long it has been unhealthy; None while healthy
    failing_since: datetime | None
    attempts: int
    retrying: bool
    last_error: str | None
    verify: VerifyState | None
    problems: tuple[str, ...]
    mirrors: tuple[MirrorStatus, ...] = ()


@dataclass(frozen=True)
class StatusReport:
    """``bakelite status``: one entry per selected database; ``exit_code`` is 1 only with ``--check``."""

    databases: tuple[DatabaseStatus, ...]
    check: bool
    max_lag_seconds: float | None
    max_verify_age_seconds: float | None
    healthy: bool
    exit_code: int


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a reaped or zombie daemon is gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True  # no procfs (macOS): kill() is all we can know
    fields = stat.rsplit(b")", 1)[-1].split()
    return not fields or fields[0] != b"Z"


def derive_state(
    record: StatusRecord | None, now: float, alive: PidCheck = pid_alive
) -> tuple[str, str | None]:
    """Pure: the state to show for a status record, and the reason for a derived one."""
    if record is None:
        return "not running", "no status file: the daemon has not run for this database"
    if record.state == "stopped":
        return "stopped", f"the daemon stopped {format_age(now - record.written)} ago"
    if not alive(record.pid):
        return "not running", f"daemon pid {record.pid} is gone"
    age = now - record.written
    if age > record.stale_after:
        return "stale", (
            f"status file not updated for {format_age(age)} (threshold {format_age(record.stale_after)}); "
            f"daemon pid {record.pid} may be hung or stopped"
        )
    return record.state, None


def _verify_state(marker: VerifyMarker | None, now: float) -> VerifyState | None:
    if marker is None:
        return None
    return VerifyState(
        when=to_datetime(marker.when),
        mode=marker.mode,
        clean=marker.clean,
        problems=marker.problems,
        age_seconds=max(0.0, now - marker.when),
        last_clean=None if marker.last_clean is None else to_datetime(marker.last_clean),
        last_clean_mode=marker.last_clean_mode,
        last_clean_age_seconds=None if marker.last_clean is None else max(0.0, now - marker.last_clean),
    )


def database_status(
    db: Database,
    *,
    now: float,
    max_lag: float | None = None,
    max_verify_age: float | None = None,
    alive: PidCheck = pid_alive,
) -> DatabaseStatus:
    """Read one database's status file and verify marker and judge them."""
    record: StatusRecord | None
    try:
        record = read_status(db.path, db.name)
    except StatusFileError as e:
        logger.warning("unreadable status file: %s", e, extra={"database": db.name})
        return _unreadable(db, str(e), now, max_verify_age)
    try:
        marker = read_marker(db.path, db.name)
    except StatusFileError as e:
        logger.warning("unreadable verify marker: %s", e, extra={"database": db.name})
        marker = None
    state, reason = derive_state(record, now, alive)
    verify = _verify_state(marker, now)
    healthy = state in HEALTHY_STATES
    if record is None:
        missing = (f"{state}: {reason}", *_verify_problems(verify, max_verify_age))
        return _without_record(db, state, reason, verify, missing)
    lag: float | None = None
    if state in LIVE_STATES and record.last_sync is not None:
        # Absolute times: the lag keeps growing between two writes of the file.
        lag = 0.0 if record.oldest_unshipped is None else max(0.0, now - record.oldest_unshipped)
    stuck: float | None = None
    if not healthy:
        if record.failing_since is not None:
            since = record.failing_since
        elif state == "starting":
            since = record.started
        else:
            since = record.written
        stuck = max(0.0, now - since)
    problems: list[str] = []
    if not healthy:
        problems.append(_unhealthy_text(state, reason, stuck, record))
    if max_lag is not None and lag is not None and lag > max_lag:
        problems.append(f"replica is {format_age(lag)} behind (--max-lag {format_duration(max_lag)})")
    problems += _verify_problems(verify, max_verify_age)
    return DatabaseStatus(
        database=db.name,
        path=Path(db.path),
        state=state,
        healthy=healthy,
        reason=reason,
        pid=record.pid,
        updated=to_datetime(record.written),
        updated_age_seconds=max(0.0, now - record.written),
        stale_after_seconds=record.stale_after,
        lag_seconds=lag,
        last_sync=None if record.last_sync is None else to_datetime(record.last_sync),
        synced_age_seconds=None if record.last_sync is None else max(0.0, now - record.last_sync),
        backup=record.backup,
        changesets=record.changesets,
        bytes_shipped=record.bytes_shipped,
        stuck_seconds=stuck,
        failing_since=None if record.failing_since is None else to_datetime(record.failing_since),
        attempts=record.attempts,
        retrying=record.retrying,
        last_error=record.last_error,
        verify=verify,
        problems=tuple(problems),
    )


def _unreadable(db: Database, error: str, now: float, max_verify_age: float | None) -> DatabaseStatus:
    reason = f"status file unreadable: {error}"
    return _without_record(db, "stale", reason, None, (f"stale: {reason}",))


def _without_record(
    db: Database, state: str, reason: str | None, verify: VerifyState | None, problems: tuple[str, ...]
) -> DatabaseStatus:
    """A row for a database whose daemon left no usable status record (never healthy)."""
    return DatabaseStatus(
        database=db.name,
        path=Path(db.path),
        state=state,
        healthy=False,
        reason=reason,
        pid=None,
        updated=None,
        updated_age_seconds=None,
        stale_after_seconds=None,
        lag_seconds=None,
        last_sync=None,
        synced_age_seconds=None,
        backup=None,
        changesets=0,
        bytes_shipped=0,
        stuck_seconds=None,
        failing_since=None,
        attempts=0,
        retrying=True,
        last_error=None,
        verify=verify,
        problems=problems,
    )


def _stuck_text(stuck: float | None, attempts: int) -> str:
    return f"stuck for {format_age(stuck or 0.0)} ({attempts} failed attempt{'' if attempts == 1 else 's'})"


def _health_parts(
    state: str, reason: str | None, stuck: float | None, attempts: int, retrying: bool
) -> list[str]:
    """How long an unhealthy database has been so, and why (the ``stuck for`` line)."""
    # A clean stop with no failures is not "stuck"; the reason says when it stopped.
    quiet = stuck is None or (state == "stopped" and not attempts)
    parts = [] if quiet else [_stuck_text(stuck, attempts)]
    if reason:
        parts.append(reason)
    if not retrying:
        parts.append("not retried: fix it and restart the daemon")
    return parts


def _unhealthy_text(state: str, reason: str | None, stuck: float | None, record: StatusRecord) -> str:
    parts = _health_parts(state, reason, stuck, record.attempts, record.retrying)
    # An error is shown with the streak it belongs to; a recovered one stays in --json only.
    if record.last_error and record.failing_since is not None:
        parts.append(f"last error: {record.last_error}")
    return f"{state}: " + "; ".join(parts)


def _verify_problems(verify: VerifyState | None, max_age: float | None) -> list[str]:
    if max_age is None:
        return []
    limit = f"(--max-verify-age {format_duration(max_age)})"
    if verify is None:
        return [f"never verified {limit}: run `bakelite verify`"]
    if not verify.clean:
        first = verify.problems[0] if verify.problems else "see `bakelite verify`"
        return [
            f"the last verify ({verify.mode}, {format_age(verify.age_seconds)} ago) found problems: {first}"
        ]
    if verify.last_clean_age_seconds is None or verify.last_clean_age_seconds > max_age:
        age = verify.last_clean_age_seconds
        when = "never" if age is None else f"{format_age(age)} ago"
        return [f"last clean verify was {when} {limit}"]
    return []


def status_report(
    databases: Sequence[Database],
    *,
    check: bool = False,
    max_lag: float | None = None,
    max_verify_age: float | None = None,
    now: float | None = None,
    alive: PidCheck = pid_alive,
) -> StatusReport:
    """Status of every database in ``databases`` (config order)."""
    t = time.time() if now is None else now
    rows = tuple(
        _with_mirrors(
            database_status(db, now=t, max_lag=max_lag, max_verify_age=max_verify_age, alive=alive),
            db,
            t,
            alive,
        )
        for db in databases
    )
    healthy = not any(r.problems for r in rows)
    return StatusReport(
        databases=rows,
        check=check,
        max_lag_seconds=max_lag,
        max_verify_age_seconds=max_verify_age,
        healthy=healthy,
        exit_code=EXIT_CHECK_FAILED if check and not healthy else EXIT_OK,
    )


def _with_mirrors(row: DatabaseStatus, db: Database, now: float, alive: PidCheck) -> DatabaseStatus:
    """Attach the async mirror lines (none without async destinations or a mirror state file)."""
    if not db.async_backends:
        return row
    from bakelite.daemon.mirror import read_mirror_file

    doc = read_mirror_file(db.path, db.name)
    if doc is None:
        return row
    stale = not alive(doc.pid) or now - doc.written > doc.stale_after
    mirrors = tuple(
        MirrorStatus(
            destination=m.destination,
            in_sync=m.in_sync,
            behind_objects=m.behind_objects,
            behind_bytes=m.behind_bytes,
            current=m.current,
            last_reconcile=None if m.last_reconcile is None else to_datetime(m.last_reconcile),
            last_reconcile_age_seconds=None if m.last_reconcile is None else max(0.0, now - m.last_reconcile),
            last_error=m.last_error,
            stale=stale,
        )
        for m in doc.mirrors
    )
    return replace(row, mirrors=mirrors)


def mirror_text(m: MirrorStatus) -> str:
    """``mirror <dest>: in sync | N obj / <size> behind, reconciled <age> ago | last error …``."""
    where = "in sync" if m.in_sync else f"{m.behind_objects} obj / {format_size(m.behind_bytes)} behind"
    parts = [f"mirror {m.destination}: {where}"]
    if m.last_error:
        parts.append(f"last error: {m.last_error}")
    elif m.last_reconcile_age_seconds is not None:
        parts.append(f"reconciled {format_age(m.last_reconcile_age_seconds)} ago")
    else:
        parts.append("not reconciled yet")
    return ", ".join(parts) + (" (stale)" if m.stale else "")


# -- text -----------------------------------------------------------------------------------------


def fresh_text(lag: float | None) -> str:
    """The FRESH column: ``live`` when caught up, ``-42s`` / ``-5m`` when behind, ``-`` if unknown."""
    if lag is None:
        return "-"
    # Under a second behind is the normal debounce window of a busy database: still live.
    return "live" if lag < 1.0 else f"-{format_age(lag)}"


def render_status_text(report: StatusReport) -> str:
    """The status table, each row followed by its stuck / last error / verified lines."""
    if not report.databases:
        return "no databases"
    headers = ["DATABASE", "STATE", "FRESH", "SYNCED", "CHANGES", "SHIPPED"]
    rows = [
        [
            d.database,
            d.state,
            fresh_text(d.lag_seconds),
            "-" if d.synced_age_seconds is None else f"{format_age(d.synced_age_seconds)} ago",
            str(d.changesets),
            format_size(d.bytes_shipped),
        ]
        for d in report.databases
    ]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out = [line(headers)]
    for d, cells in zip(report.databases, rows, strict=True):
        out.append(line(cells))
        out += [f"  {extra}" for extra in _detail_lines(d)]
    return "\n".join(out)


def _detail_lines(d: DatabaseStatus) -> list[str]:
    lines: list[str] = []
    if not d.healthy:
        lines.append("; ".join(_health_parts(d.state, d.reason, d.stuck_seconds, d.attempts, d.retrying)))
        if d.last_error and d.failing_since is not None:
            lines.append(f"last error: {d.last_error}")
    v = d.verify
    if v is not None:
        if v.clean:
            lines.append(f"verified: clean ({v.mode}) {format_age(v.age_seconds)} ago")
        else:
            first = v.problems[0] if v.problems else "no detail recorded"
            more = f"; +{len(v.problems) - 1} more" if len(v.problems) > 1 else ""
            lines.append(f"verify: PROBLEMS ({v.mode}, {format_age(v.age_seconds)} ago): {first}{more}")
    lines += [mirror_text(m) for m in d.mirrors]
    return lines


def render_check_text(report: StatusReport) -> str:
    """``status --check``: nothing when healthy, else one line per failing database and reason."""
    return "\n".join(f"{d.database}: {p}" for d in report.databases for p in d.problems)
