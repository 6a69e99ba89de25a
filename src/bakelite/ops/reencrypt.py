"""Rewrite a replica under the configured encryption: enable, rotate or decrypt, history kept.

Every data object (snapshots, change-sets at every level) and the manifest is re-sealed frame by
frame.  The compressed frames are carried over byte for byte, so an object's content hash -- and with
it every ``prev`` link of the lineage chain -- is unchanged; only the sealing and the header's
``encrypted``/``key_id`` change.  Each object is replaced through the destination's atomic put (the
new bytes are checked against the old object's hash before the put completes), so a crash leaves
each object wholly old or wholly new; a rerun skips every object already in the target state.

The source key of an encrypted object is picked by the key id in its header among the configured
key and the old keys, in that order.  A plaintext object is only read when the configuration allows
plaintext (``require_encrypted = false``, or no encryption at all), so a rotation cannot launder
an object an attacker planted in the clear.  Nothing is written until the whole replica has been
planned and every object found readable with the keys given.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bakelite.config.model import Database
from bakelite.crypto import keys
from bakelite.crypto.aead import XChaCha20Poly1305
from bakelite.daemon.lock import DatabaseLock, lock_holder
from bakelite.errors import ConfigError, CorruptionError, EncryptionError, LockHeldError, ObjectNotFound
from bakelite.format import layout
from bakelite.format.envelope import (
    MAX_HEADER,
    FrameCipher,
    ObjectHeader,
    ObjectReader,
    ObjectWriter,
    cipher_key_id,
    peek_header,
)
from bakelite.format.layout import ObjectRef
from bakelite.ops.catalog import HEADER_PEEK, check_identity, read_header
from bakelite.replication.cursor import load_cursor, save_cursor
from bakelite.storage.base import Storage
from bakelite.storage.retry import Restartable

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class DestinationReport:
    """What reencrypt found (and did) on one destination.

    ``rewritten`` counts objects rewritten (with ``dry_run``: that would be); ``skipped`` those
    already in the target state; ``by_source`` counts the objects per current state
    (``plaintext`` or ``key <id>``).
    """

    destination: str
    objects: int
    rewritten: int
    skipped: int
    bytes_total: int
    bytes_rewritten: int
    by_source: dict[str, int]


@dataclass(frozen=True)
class ReencryptReport:
    """The result for one database; ``target`` is ``plaintext`` or ``key <id>``."""

    database: str
    target: str
    dry_run: bool
    objects: int
    rewritten: int
    skipped: int
    bytes_total: int
    bytes_rewritten: int
    destinations: tuple[DestinationReport, ...]
    keyparams_written: bool = False
    cursor_updated: bool = False
    daemon_pid: int | None = None
    elapsed_seconds: float = 0.0


@dataclass(frozen=True)
class ReencryptRun:
    """Every database one ``bakelite reencrypt`` acted on."""

    databases: tuple[ReencryptReport, ...]


@dataclass(frozen=True)
class _Planned:
    """One object and what to do with it."""

    key: str
    size: int
    ref: ObjectRef | None  # None: the manifest
    current: str
    source: tuple[FrameCipher | None, ...] | None  # ciphers to open it with; None: skip


def reencrypt(
    db: Database,
    storages: Sequence[Storage],
    *,
    old_key_files: Sequence[Path] = (),
    old_passphrase_files: Sequence[Path] = (),
    dry_run: bool = False,
    progress: ProgressFn | None = None,
) -> ReencryptReport:
    """Rewrite every object of ``db`` on every destination in ``storages`` under its configured encryption."""
    started = time.monotonic()
    lock: DatabaseLock | None = None
    if not dry_run:
        lock = _take_lock(db)
    try:
        return _run(db, storages, old_key_files, old_passphrase_files, dry_run, progress, started)
    finally:
        if lock is not None:
            lock.release()


def _take_lock(db: Database) -> DatabaseLock:
    try:
        return DatabaseLock(Path(db.path), db.name, purpose="reencrypt").acquire()
    except LockHeldError as e:
        raise LockHeldError(
            f"cannot reencrypt {db.name!r} while a bakelite daemon (or another reencrypt) runs for it",
            detail=e.detail,
            hint="stop it first (e.g. sudo systemctl stop bakelite), then run reencrypt again",
        ) from None


def _run(
    db: Database,
    storages: Sequence[Storage],
    old_key_files: Sequence[Path],
    old_passphrase_files: Sequence[Path],
    dry_run: bool,
    progress: ProgressFn | None,
    started: float,
) -> ReencryptReport:
    if not storages:
        raise ConfigError(f"{db.name!r} has no destination to reencrypt", hint="add a [[database.backends]]")
    params = keys.read_keyparams(storages, db.name)
    old = _old_ciphers(db, params, old_key_files, old_passphrase_files)
    target, new_params = _target(db, storages, params, old)
    allow_plaintext = db.encryption is None or not db.encryption.require_encrypted
    candidates = _dedupe([target, *old])

    plans = [(s, _plan(db, s, target, candidates, allow_plaintext)) for s in storages]
    _refuse_unreadable(db, [p for _, plan in plans for p in plan], target, allow_plaintext)

    reports = []
    total_work = sum(p.size for _, plan in plans for p in plan if p.source is not None)
    done = 0
    if not dry_run and new_params is not None:
        keys.write_keyparams(storages, db.name, new_params)
    for storage, plan in plans:
        for p in plan:
            if p.source is None or dry_run:
                continue
            _rewrite(storage, db.name, p, target)
            done += p.size
            if progress is not None:
                progress(done, total_work)
        reports.append(_destination_report(storage, plan))

    cursor_updated = False
    if not dry_run:
        cursor_updated = _update_cursor(db, target)
    report = ReencryptReport(
        database=db.name,
        target=keys.describe_cipher(target),
        dry_run=dry_run,
        objects=sum(r.objects for r in reports),
        rewritten=sum(r.rewritten for r in reports),
        skipped=sum(r.skipped for r in reports),
        bytes_total=sum(r.bytes_total for r in reports),
        bytes_rewritten=sum(r.bytes_rewritten for r in reports),
        destinations=tuple(reports),
        keyparams_written=not dry_run and new_params is not None,
        cursor_updated=cursor_updated,
        daemon_pid=lock_holder(Path(db.path), db.name) if dry_run else None,
        elapsed_seconds=time.monotonic() - started,
    )
    logger.info(
        "%s: reencrypt to %s%s: %d object(s) rewritten, %d already done",
        db.name,
        report.target,
        " (dry run)" if dry_run else "",
        report.rewritten,
        report.skipped,
        extra={"db": db.name},
    )
    return report


# -- keys ---------------------------------------------------------------------------------------


def _old_ciphers(
    db: Database,
    params: keys.KdfParams | None,
    key_files: Sequence[Path],
    passphrase_files: Sequence[Path],
) -> list[FrameCipher]:
    out: list[FrameCipher] = [XChaCha20Poly1305(keys.read_key_file(p)) for p in key_files]
    for path in passphrase_files:
        passphrase = keys.normalize_passphrase(keys.read_passphrase_file(path))
        if params is None:
            raise EncryptionError(
                f"--old-passphrase-file given, but {db.name!r} has no KEYPARAMS on its destinations",
                hint="the replica was never encrypted in passphrase mode; pass its key with --old-key-file",
            )
        out.append(XChaCha20Poly1305(keys.derive_key(passphrase, params)))
    return out


def _target(
    db: Database,
    storages: Sequence[Storage],
    params: keys.KdfParams | None,
    old: Sequence[FrameCipher],
) -> tuple[FrameCipher | None, keys.KdfParams | None]:
    """The configured cipher, and the KEYPARAMS to write before rewriting (passphrase mode)."""
    if db.encryption is None:
        return None, None
    source = keys.key_source(db.encryption)
    if source.kind == "key":
        return XChaCha20Poly1305(source.secret), None
    if params is None:
        fresh = keys.new_keyparams(source.secret)
        key = keys.derive_key(source.secret, fresh)
        return XChaCha20Poly1305(key), dataclasses.replace(fresh, key_id=XChaCha20Poly1305(key).key_id)
    key = keys.derive_key(source.secret, params)
    cipher = XChaCha20Poly1305(key)
    if params.key_id is None or cipher.key_id == params.key_id:
        return cipher, None
    if any(cipher_key_id(c) == params.key_id for c in old):
        # A passphrase change: the old passphrase was given and matches, so record the new one.
        return cipher, dataclasses.replace(params, key_id=cipher.key_id, created=time.time())
    keys.check_passphrase(db.name, key, params, source.origin)
    raise AssertionError("unreachable")


def _dedupe(ciphers: Sequence[FrameCipher | None]) -> list[FrameCipher]:
    seen: set[str] = set()
    out: list[FrameCipher] = []
    for c in ciphers:
        if c is None:
            continue
        kid = cipher_key_id(c)
        if kid is not None and kid in seen:
            continue
        if kid is not None:
            seen.add(kid)
        out.append(c)
    return out


# -- planning -----------------------------------------------------------------------------------


def _state(header: ObjectHeader) -> str:
    if not header.encrypted:
        return "plaintext"
    return f"key {header.key_id}" if header.key_id else "key (unknown id)"


def _plan(
    db: Database,
    storage: Storage,
    target: FrameCipher | None,
    candidates: Sequence[FrameCipher],
    allow_plaintext: bool,
) -> list[_Planned]:
    """What to do with each object on one destination (headers only: small range reads)."""
    target_id = cipher_key_id(target)
    out: list[_Planned] = []
    for info in storage.list(layout.db_prefix(db.name)):
        ref = layout.parse_key(db.name, info.key)
        if ref is None and info.key != layout.manifest_key(db.name):
            continue  # CURRENT, KEYPARAMS, anything foreign
        header = _header(storage, db.name, ref, info.key)
        if header is None:
            continue
        current = _state(header)
        source: tuple[FrameCipher | None, ...] | None
        in_target = header.encrypted == (target is not None) and (
            not header.encrypted or header.key_id == target_id
        )
        if in_target:
            source = None
        elif not header.encrypted:
            source = (None,) if allow_plaintext else ()
        elif header.key_id is None:
            source = tuple(candidates)  # written without a key id: try each key in order
        else:
            source = tuple(c for c in candidates if cipher_key_id(c) == header.key_id)
        out.append(_Planned(info.key, info.size, ref, current, source))
    return out


def _header(storage: Storage, db: str, ref: ObjectRef | None, key: str) -> ObjectHeader | None:
    if ref is not None:
        return read_header(storage, db, ref)
    try:
        data = storage.get_range(key, 0, HEADER_PEEK)
        try:
            header = peek_header(data, key)
        except CorruptionError:
            if len(data) < HEADER_PEEK:
                raise
            header = peek_header(storage.get_range(key, 0, MAX_HEADER + 16), key)
    except ObjectNotFound:
        return None
    except CorruptionError:
        logger.warning(
            "%s: %s is not a bakelite object; left as it is", db, key, extra={"db": db, "key": key}
        )
        return None
    if header.kind != "manifest" or header.db != db:
        raise CorruptionError(f"{key} is not {db!r}'s manifest (it holds a {header.kind} of {header.db!r})")
    return header


def _refuse_unreadable(
    db: Database, planned: Sequence[_Planned], target: FrameCipher | None, allow_plaintext: bool
) -> None:
    """Fail before writing anything if some object cannot be read with the keys given."""
    stuck: dict[str, list[_Planned]] = {}
    for p in planned:
        if p.source is not None and not p.source:
            stuck.setdefault(p.current, []).append(p)
    if not stuck:
        return
    plain = stuck.pop("plaintext", [])
    if plain:
        raise EncryptionError(
            f"{len(plain)} object(s) of {db.name!r} are plaintext and require_encrypted is on",
            detail=f"first: {plain[0].key}",
            hint="while converting a plaintext replica set require_encrypted = false in its "
            "[encryption] block, run reencrypt, then remove that line",
        )
    state, objs = next(iter(stuck.items()))
    configured = keys.describe_cipher(target)
    raise EncryptionError(
        f"{sum(len(v) for v in stuck.values())} object(s) of {db.name!r} are sealed with a key "
        "that was not given",
        detail=f"{len(objs)} under {state} (first: {objs[0].key}); configured: {configured}",
        hint="pass that key with --old-key-file (or --old-passphrase-file); repeat the flag for several",
    )


# -- rewriting ----------------------------------------------------------------------------------


def _rewrite(storage: Storage, db: str, p: _Planned, target: FrameCipher | None) -> None:
    """Re-seal one object in place via the destination's atomic put, trying its source keys in order."""
    assert p.source
    last: EncryptionError | None = None
    for source in p.source:
        try:
            size = storage.put_stream(
                p.key,
                Restartable(functools.partial(_resealed, storage, db, p, source, target)),
                cold=p.ref is not None and p.ref.kind == "snapshot",
            )
        except EncryptionError as e:
            last = e
            continue
        logger.debug(
            "%s: rewrote %s (%s -> %s, %d bytes)",
            db,
            p.key,
            p.current,
            keys.describe_cipher(target),
            size,
            extra={"db": db, "key": p.key},
        )
        return
    assert last is not None
    raise last


def _resealed(
    storage: Storage, db: str, p: _Planned, source: FrameCipher | None, target: FrameCipher | None
) -> Iterator[bytes]:
    """The object at ``p.key`` re-sealed under ``target``; fails (aborting the put) unless it verifies."""
    stream = storage.open(p.key)
    try:
        reader = ObjectReader(stream, p.key, source, require_encrypted=False)
        if p.ref is not None:
            check_identity(reader.header, db, p.ref)
        header = dataclasses.replace(reader.header, encrypted=target is not None, key_id=None)
        writer = ObjectWriter(header, target)
        for chunk in writer.chunks_compressed(reader.compressed_frames()):
            if writer.footer is not None:
                # The last chunk: the old object is fully verified; the new one must hash the same.
                assert reader.footer is not None
                if writer.footer.hash != reader.footer.hash:
                    raise CorruptionError(f"{p.key}: re-sealed object does not keep its content hash")
            yield chunk
    finally:
        stream.close()


def _destination_report(storage: Storage, plan: Sequence[_Planned]) -> DestinationReport:
    by_source: dict[str, int] = {}
    for p in plan:
        by_source[p.current] = by_source.get(p.current, 0) + 1
    work = [p for p in plan if p.source is not None]
    return DestinationReport(
        destination=storage.describe(),
        objects=len(plan),
        rewritten=len(work),
        skipped=len(plan) - len(work),
        bytes_total=sum(p.size for p in plan),
        bytes_rewritten=sum(p.size for p in work),
        by_source=by_source,
    )


def _update_cursor(db: Database, target: FrameCipher | None) -> bool:
    """Record the replica's new mode in the daemon's cursor, so it resumes instead of re-bootstrapping."""
    cursor = load_cursor(Path(db.path), db.name)
    if cursor is None:
        return False
    changes: dict[str, Any] = {}
    if cursor.encrypted != (target is not None):
        changes["encrypted"] = target is not None
    fields = {f.name for f in dataclasses.fields(cursor)}
    if "key_id" in fields and getattr(cursor, "key_id", None) != cipher_key_id(target):
        changes["key_id"] = cipher_key_id(target)
    if not changes:
        return False
    save_cursor(Path(db.path), db.name, dataclasses.replace(cursor, **changes))
    return True


def render_reencrypt_text(run: ReencryptRun) -> str:
    """One paragraph per database."""
    from bakelite.units import format_size

    lines: list[str] = []
    for r in run.databases:
        verb = "would rewrite" if r.dry_run else "rewrote"
        lines.append(
            f"{r.database}: {verb} {r.rewritten} object(s) ({format_size(r.bytes_rewritten)}) under "
            f"{r.target}; {r.skipped} already {'are' if r.dry_run else 'were'} "
            f"({r.objects} in all, {r.elapsed_seconds:.1f}s)"
        )
        for d in r.destinations:
            states = ", ".join(f"{n} {state}" for state, n in sorted(d.by_source.items())) or "empty"
            lines.append(f"  {d.destination}: {states}")
        if r.keyparams_written:
            lines.append("  wrote KEYPARAMS (passphrase salt and costs)")
        if r.dry_run and r.daemon_pid is not None:
            lines.append(f"  note: a daemon (pid {r.daemon_pid}) holds the lock; stop it before the real run")
    return "\n".join(lines)
