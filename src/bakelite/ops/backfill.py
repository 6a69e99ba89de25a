"""Backfill on resume: make every sync destination hold the whole backup chain before shipping onto it.

A destination added to a running database (or repointed at an empty location) would otherwise get
only the change-sets shipped from then on, with no snapshot underneath: not restorable on its own.
At daemon start on resume the data objects (snapshots and change-sets) each sync destination holds
are compared with the union across all of them; a destination missing any is incomplete, and
``on_incomplete_destination`` decides: ``backfill`` copies what it lacks, verbatim, from a destination
holding the complete set; ``refuse`` stops the database; ``warn`` logs and carries on.  With no
complete destination at all the chains genuinely diverged: refuse and say so, whatever the policy
(except ``warn``, which only warns), rather than copy from a partial peer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bakelite.config.model import Database
from bakelite.errors import BakeliteError, ObjectNotFound
from bakelite.format import layout
from bakelite.replication.cursor import load_cursor
from bakelite.storage.base import Storage
from bakelite.storage.fanout import copy_object, copy_order

logger = logging.getLogger(__name__)


class IncompleteDestinationError(BakeliteError):
    """A sync destination lacks part of the backup chain and the policy (or the situation) refuses."""


@dataclass(frozen=True)
class DestinationPlan:
    """One sync destination: the data objects it lacks (key -> size on a complete source)."""

    destination: str
    missing: dict[str, int]


@dataclass(frozen=True)
class BackfillResult:
    """What the check found and did."""

    incomplete: tuple[str, ...]
    copied: int
    source: str | None


def plan(db: str, storages: Sequence[Storage]) -> tuple[list[DestinationPlan], int | None]:
    """Per destination, the data objects it lacks; and the index of one complete destination (or None)."""
    held: list[dict[str, int]] = []
    for storage in storages:
        held.append(
            {
                i.key: i.size
                for i in storage.list(layout.db_prefix(db))
                if layout.parse_key(db, i.key) is not None
            }
        )
    union: dict[str, int] = {}
    for h in held:
        for key, size in h.items():
            union.setdefault(key, size)
    plans = [
        DestinationPlan(s.describe(), {k: union[k] for k in union.keys() - h.keys()})
        for s, h in zip(storages, held, strict=True)
    ]
    complete = next((i for i, p in enumerate(plans) if not p.missing), None)
    return plans, complete


def reconcile(db: str, storages: Sequence[Storage], policy: str) -> BackfillResult:
    """Apply ``policy`` (backfill / refuse / warn) to incomplete sync destinations of ``db``."""
    if len(storages) < 2:
        return BackfillResult((), 0, None)
    plans, complete = plan(db, storages)
    incomplete = [p for p in plans if p.missing]
    names = tuple(p.destination for p in incomplete)
    if not incomplete:
        return BackfillResult((), 0, None)
    summary = ", ".join(f"{p.destination} lacks {len(p.missing)} object(s)" for p in incomplete)
    if policy == "warn":
        logger.warning(
            "%s: incomplete destination(s): %s; it stays unrestorable on its own until the next full "
            "snapshot (on_incomplete_destination = warn)",
            db,
            summary,
            extra={"database": db},
        )
        return BackfillResult(names, 0, None)
    if policy == "refuse":
        raise IncompleteDestinationError(
            f"{db}: a sync destination is missing part of the backup chain",
            detail=summary,
            hint='copy the chain yourself, or set on_incomplete_destination = "backfill"',
        )
    if complete is None:
        raise IncompleteDestinationError(
            f"{db}: no destination holds a complete copy of the backup chain (they diverged)",
            detail=summary,
            hint="resolve by hand: remove the divergent destination, or move its replica aside so a "
            "fresh snapshot rebases every destination",
        )
    source = storages[complete]
    copied = 0
    for p, storage in zip(plans, storages, strict=True):
        if not p.missing:
            continue
        logger.info(
            "%s: backfilling %d object(s) onto %s from %s",
            db,
            len(p.missing),
            p.destination,
            source.describe(),
            extra={"database": db},
        )
        # Snapshots first, then change-sets in order: a backfill cut short is still a valid prefix.
        for key in sorted(p.missing, key=lambda k: copy_order(db, k)):
            try:
                copy_object(source, storage, key, size=p.missing[key])
            except ObjectNotFound:
                continue  # retired by retention since the listing
            copied += 1
        for key in (layout.keyparams_key(db), layout.current_key(db)):
            if storage.stat(key) is None and source.stat(key) is not None:
                copy_object(source, storage, key)
    return BackfillResult(names, copied, source.describe())


def on_resume(db: Database, storages: Sequence[Storage]) -> BackfillResult | None:
    """The daemon's start hook: check sync destinations when resuming (a fresh bootstrap fans out whole)."""
    if len(storages) < 2 or load_cursor(Path(db.path), db.name) is None:
        return None
    return reconcile(db.name, storages, db.on_incomplete_destination)
