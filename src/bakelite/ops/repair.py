"""``repair``: heal bit-rot across destinations by copying a healthy object over a bad copy.

Every destination holds byte-identical, write-once objects, so a copy that validates is
authoritative and overwriting a corrupt or missing one with it is an idempotent byte-for-byte copy
that races nothing (safe with the daemon running).

What is expected where: an object held by any *sync* destination is expected on every sync
destination (they are written in lock-step), so its absence is damage; an async mirror may lag by
design, so only its *corrupt* copies are healed (its reconciler copies what it lacks).  An object
only an async mirror holds was retired by the primary and is left alone, never resurrected.
``CURRENT`` is advisory and per destination; ``KEYPARAMS`` is copied where missing.

Exit codes: 0 when everything is (or would be) healthy; 1 when an object is bad on every destination
(only a fresh backup replaces it) or a bad copy could not be overwritten (a WORM destination, reported
as degraded); 3 when a destination could not even be listed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bakelite.config.model import Database
from bakelite.errors import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    EXIT_RUNTIME,
    BackendError,
    CorruptionError,
    ObjectNotFound,
)
from bakelite.format import layout
from bakelite.format.envelope import FrameCipher
from bakelite.storage.base import Storage
from bakelite.storage.fanout import is_object_key, validate_bytes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Heal:
    """One bad copy: where, what was wrong, where the good copy came from, and what happened."""

    key: str
    destination: str
    problem: str  # "missing" or the validation failure
    source: str | None  # the destination holding the good copy; None when there is none
    action: str  # "healed" | "would heal" | "failed: <why>" | "unrecoverable"


@dataclass(frozen=True)
class DatabaseRepair:
    """One database's scan: objects checked, copies healed, and what is still wrong."""

    database: str
    destinations: tuple[str, ...]
    skipped: str | None  # why nothing was scanned (single destination)
    objects: int
    heals: tuple[Heal, ...]
    unrecoverable: tuple[str, ...]  # keys bad on every destination
    degraded: tuple[str, ...]  # destinations holding a bad copy that could not be overwritten
    errors: tuple[str, ...]  # destinations that could not be listed
    exit_code: int


@dataclass(frozen=True)
class RepairReport:
    """``bakelite repair``: one entry per database; ``exit_code`` is the worst of them."""

    dry_run: bool
    databases: tuple[DatabaseRepair, ...]
    exit_code: int


OpenAll = Callable[[Database], list[tuple[Storage, bool]]]


def repair_databases(
    databases: Sequence[Database],
    open_all: OpenAll,
    *,
    dry_run: bool = False,
    cipher_for: Callable[[Database, list[Storage]], FrameCipher | None] | None = None,
) -> RepairReport:
    """Repair every database in ``databases``; ``open_all`` gives (storage, is_sync) per destination."""
    results = []
    for db in databases:
        if len(db.backends) < 2:
            results.append(
                DatabaseRepair(
                    db.name,
                    tuple(b.describe() for b in db.backends),
                    "single destination: no sibling to heal from",
                    0,
                    (),
                    (),
                    (),
                    (),
                    EXIT_OK,
                )
            )
            continue
        pairs = open_all(db)
        try:
            storages = [s for s, _ in pairs]
            cipher = cipher_for(db, storages) if cipher_for is not None else None
            results.append(
                repair_database(
                    db.name, storages, [sync for _, sync in pairs], dry_run=dry_run, cipher=cipher
                )
            )
        finally:
            for storage, _ in pairs:
                storage.close()
    code = max((r.exit_code for r in results), default=EXIT_OK)
    return RepairReport(dry_run, tuple(results), code)


def repair_database(
    name: str,
    storages: Sequence[Storage],
    sync: Sequence[bool],
    *,
    dry_run: bool = False,
    cipher: FrameCipher | None = None,
) -> DatabaseRepair:
    """Scan every object of ``name`` on every destination; heal bad copies from a good one."""
    where = [s.describe() for s in storages]
    listings: list[dict[str, int] | None] = []
    errors: list[str] = []
    for storage in storages:
        try:
            listings.append({i.key: i.size for i in storage.list(layout.db_prefix(name))})
        except BackendError as e:
            listings.append(None)
            errors.append(f"{storage.describe()}: {e.one_line()}")
    expected: set[str] = set()
    for listing, is_sync in zip(listings, sync, strict=True):
        if listing is not None and is_sync:
            expected.update(listing)
    # Copies held only by an async mirror: checked for rot, never spread back.
    mirror_only = {k for listing in listings if listing is not None for k in listing} - expected
    heals: list[Heal] = []
    unrecoverable: list[str] = []
    degraded: set[str] = set()
    current = layout.current_key(name)
    for key in sorted(expected | mirror_only):
        if key == current:
            continue  # advisory and per destination: an async mirror's CURRENT lags on purpose
        good: bytes | None = None
        source: str | None = None
        bad: list[tuple[int, str]] = []
        for i, storage in enumerate(storages):
            listing = listings[i]
            if listing is None:
                continue
            if key not in listing:
                if key in expected and sync[i]:
                    bad.append((i, "missing"))
                continue
            try:
                data = storage.get(key)
                if is_object_key(key):
                    validate_bytes(data, key, cipher)
            except ObjectNotFound:
                continue  # retired (pruned) since the listing: not damage
            except CorruptionError as e:
                bad.append((i, e.one_line().removeprefix(f"{key}: ")))
                continue
            except BackendError as e:
                bad.append((i, f"unreadable: {e.one_line()}"))
                continue
            if good is None:
                good, source = data, where[i]
        if not bad:
            continue
        if good is None:
            unrecoverable.append(key)
            heals += [Heal(key, where[i], problem, None, "unrecoverable") for i, problem in bad]
            logger.error("%s is bad on every destination", key, extra={"database": name})
            continue
        for i, problem in bad:
            if dry_run:
                heals.append(Heal(key, where[i], problem, source, "would heal"))
                continue
            try:
                storages[i].put(key, good)
            except BackendError as e:
                # WORM / Object Lock: the rotted copy is immutable; the others still restore.
                degraded.add(where[i])
                heals.append(Heal(key, where[i], problem, source, f"failed: {e.one_line()}"))
                continue
            heals.append(Heal(key, where[i], problem, source, "healed"))
            logger.info("healed %s on %s from %s", key, where[i], source, extra={"database": name})
    code = EXIT_OK
    if unrecoverable or degraded:
        code = EXIT_CHECK_FAILED
    if errors:
        code = max(code, EXIT_RUNTIME)
    return DatabaseRepair(
        database=name,
        destinations=tuple(where),
        skipped=None,
        objects=len(expected | mirror_only),
        heals=tuple(heals),
        unrecoverable=tuple(unrecoverable),
        degraded=tuple(sorted(degraded)),
        errors=tuple(errors),
        exit_code=code,
    )


def render_repair_text(report: RepairReport) -> str:
    """One summary line per database, then one line per bad copy."""
    out: list[str] = []
    for r in report.databases:
        if r.skipped is not None:
            out.append(f"{r.database}: skipped ({r.skipped})")
            continue
        bad = len(r.heals)
        if not bad and not r.errors:
            out.append(
                f"{r.database}: {r.objects} object(s) on {len(r.destinations)} destinations: all healthy"
            )
        else:
            verb = "would heal" if report.dry_run else "healed"
            n = sum(1 for h in r.heals if h.action in ("healed", "would heal"))
            out.append(f"{r.database}: {r.objects} object(s), {bad} bad cop(ies), {verb} {n}")
        for h in r.heals:
            src = f" from {h.source}" if h.source else ""
            out.append(f"  {h.key} on {h.destination}: {h.problem} -> {h.action}{src}")
        for key in r.unrecoverable:
            out.append(f"  UNRECOVERABLE: {key} is bad on every destination; only a fresh backup replaces it")
        for d in r.degraded:
            out.append(f"  DEGRADED: {d} holds bad copies that cannot be overwritten (WORM?)")
        for e in r.errors:
            out.append(f"  ERROR: cannot list {e}")
    if report.dry_run:
        out.append("dry run: nothing was changed")
    return "\n".join(out)
