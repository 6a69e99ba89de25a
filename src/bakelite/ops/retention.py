"""Retention and limits: prune whole backups, oldest first, never the current one.

Planning is pure (``plan_retention``); ``apply_retention`` lists, plans and deletes.

Rules, applied in order to the backups older than the current one (the newest complete backup, and
any the caller protects, such as the daemon cursor's):

1. an incomplete backup (no snapshot) older than the current one is a leftover of an interrupted
   prune or bootstrap and can never become restorable: pruned;
2. ``retention``: a backup is pruned once every point it can restore is older than the window, that
   is once the *next* complete backup started at or before ``now - retention`` (so every target inside
   the window stays restorable);
3. ``max_backups``: the oldest complete backups go until at most that many remain;
4. ``max_total_size``: the oldest backups go until the stored bytes fit.  When only protected
   backups remain and the cap still cannot be met, nothing more is deleted: the plan says so
   (``unmet``) and the caller warns; the only restorable copy is never thrown away.

A backup is deleted snapshot first, so a crash mid-prune leaves it incomplete (invisible to restore,
pruned by rule 1 next time) rather than a half-deleted chain that looks restorable.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bakelite.errors import DeleteRefusedError
from bakelite.ops.catalog import BackupInfo, list_backups
from bakelite.storage.base import Storage
from bakelite.units import format_size

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackupFacts:
    """What the planner needs to know about one backup."""

    backup: str
    created: float
    complete: bool
    stored_bytes: int


@dataclass(frozen=True)
class Prune:
    """One backup to delete, and the rule that chose it."""

    backup: str
    reason: str  # "incomplete" | "retention" | "max_backups" | "max_total_size"
    stored_bytes: int


@dataclass(frozen=True)
class RetentionPlan:
    """The backups to prune (oldest first), the current one, and caps that cannot be met."""

    prune: tuple[Prune, ...]
    current: str | None
    kept: tuple[str, ...]
    bytes_after: int
    unmet: tuple[str, ...] = ()


def plan_retention(
    backups: Sequence[BackupFacts],
    *,
    now: float,
    retention: float = 0.0,
    max_backups: int = 0,
    max_total_size: int = 0,
    protect: Iterable[str] = (),
) -> RetentionPlan:
    """Pure: which backups to prune under ``retention`` / ``max_backups`` / ``max_total_size``."""
    ordered = sorted(backups, key=lambda b: b.backup)
    complete = [b for b in ordered if b.complete]
    if not complete:
        # Nothing restorable: deleting anything could only make it worse.
        total = sum(b.stored_bytes for b in ordered)
        none_complete: tuple[str, ...] = ()
        if max_total_size > 0 and total > max_total_size:
            none_complete = (
                f"max_total_size: {format_size(total)} stored, over the {format_size(max_total_size)} "
                "cap, and no backup is complete yet (nothing is pruned before one is)",
            )
        return RetentionPlan((), None, tuple(b.backup for b in ordered), total, none_complete)
    current = complete[-1].backup
    pinned = set(protect) | {current}
    # Only backups older than the current one are candidates (newer ones are being created).
    candidates = [b for b in ordered if b.backup < current and b.backup not in pinned]
    prune: dict[str, Prune] = {}
    for b in candidates:
        if not b.complete:
            prune[b.backup] = Prune(b.backup, "incomplete", b.stored_bytes)
    if retention > 0:
        cutoff = now - retention
        for i, b in enumerate(complete[:-1]):
            successor = complete[i + 1]
            if b in candidates and successor.created <= cutoff and b.backup not in prune:
                prune[b.backup] = Prune(b.backup, "retention", b.stored_bytes)
    if max_backups > 0:
        remaining = [b for b in complete if b.backup not in prune]
        excess = len(remaining) - max_backups
        for b in remaining:
            if excess <= 0:
                break
            if b in candidates:
                prune[b.backup] = Prune(b.backup, "max_backups", b.stored_bytes)
                excess -= 1
    total = sum(b.stored_bytes for b in ordered if b.backup not in prune)
    unmet: list[str] = []
    if max_total_size > 0:
        for b in candidates:
            if total <= max_total_size:
                break
            if b.backup not in prune:
                prune[b.backup] = Prune(b.backup, "max_total_size", b.stored_bytes)
                total -= b.stored_bytes
        if total > max_total_size:
            unmet.append(
                f"max_total_size: {format_size(total)} stored, over the {format_size(max_total_size)} "
                "cap, and only the current backup (never pruned) is left to delete"
            )
    if max_backups > 0:
        left = len([b for b in complete if b.backup not in prune])
        if left > max_backups:
            unmet.append(f"max_backups: {left} backups kept, over the cap of {max_backups} (protected)")
    order = [b.backup for b in ordered]
    pruned = tuple(sorted(prune.values(), key=lambda p: order.index(p.backup)))
    kept = tuple(b.backup for b in ordered if b.backup not in prune)
    return RetentionPlan(pruned, current, kept, total, tuple(unmet))


def facts(backups: Sequence[BackupInfo]) -> list[BackupFacts]:
    """Planner input from a listing."""
    return [BackupFacts(b.backup, b.created, b.complete, b.total_bytes) for b in backups]


@dataclass
class RetentionReport:
    """What one retention run of one database on one destination did."""

    database: str
    backend: str
    current: str | None = None
    pruned: list[Prune] = field(default_factory=list)
    objects_deleted: int = 0
    bytes_after: int = 0
    unmet: list[str] = field(default_factory=list)
    delete_refused: bool = False
    errors: list[str] = field(default_factory=list)
    dry_run: bool = False


def apply_retention(
    storage: Storage,
    db: str,
    *,
    now: float,
    retention: float = 0.0,
    max_backups: int = 0,
    max_total_size: int = 0,
    protect: Iterable[str] = (),
    dry_run: bool = False,
) -> RetentionReport:
    """List, plan and prune; a refused delete (WORM) stops the run and is reported, never raised."""
    report = RetentionReport(db, storage.describe(), dry_run=dry_run)
    listing = list_backups(storage, db)
    plan = plan_retention(
        facts(listing),
        now=now,
        retention=retention,
        max_backups=max_backups,
        max_total_size=max_total_size,
        protect=protect,
    )
    report.current = plan.current
    report.unmet = list(plan.unmet)
    report.bytes_after = plan.bytes_after
    for message in plan.unmet:
        logger.warning("%s: cannot meet a storage cap: %s", db, message, extra={"db": db})
    if dry_run:
        report.pruned = list(plan.prune)
        return report
    by_id = {b.backup: b for b in listing}
    for p in plan.prune:
        info = by_id[p.backup]
        # Snapshot first: from then on the backup is invisible to restore, whatever else is left.
        keys = [info.snapshot.key] if info.snapshot is not None else []
        keys += [o.key for o in sorted(info.changesets, key=lambda o: o.ref.last, reverse=True)]
        try:
            for key in keys[:1]:
                storage.delete([key])
            if keys[1:]:
                storage.delete(keys[1:])
        except DeleteRefusedError as e:
            report.delete_refused = True
            report.errors.append(e.one_line())
            logger.warning(
                "%s: the backend refused to delete backup %s; pruning is skipped (WORM / Object Lock?)",
                db,
                p.backup,
                extra={"db": db, "backup": p.backup},
            )
            break
        report.objects_deleted += len(keys)
        report.pruned.append(p)
        logger.info(
            "%s: pruned backup %s (%s, %s)",
            db,
            p.backup,
            p.reason,
            format_size(p.stored_bytes),
            extra={"db": db, "backup": p.backup},
        )
    if report.delete_refused:
        report.bytes_after = sum(b.total_bytes for b in list_backups(storage, db))
    return report
