"""The multi-destination reader, the key-less object check, repair planning, backfill and the mirror pass."""

from __future__ import annotations

import pytest

from bakelite.crypto.keys import cipher_from_key, generate_key
from bakelite.daemon.mirror import MirrorState, reconcile
from bakelite.errors import CorruptionError, ObjectNotFound
from bakelite.format import layout
from bakelite.format.envelope import ObjectHeader, encode_object
from bakelite.ops import backfill
from bakelite.ops.repair import repair_database
from bakelite.storage.fanout import FallbackStorage, copy_object, validate_bytes
from bakelite.storage.memory import MemoryStorage

DB = "app"
B1 = "20260101T000000000Z-00000001"
B2 = "20260102T000000000Z-00000002"


def obj(backup: str, first: int = 0, last: int = 0, cipher: object = None) -> tuple[str, bytes]:
    """A well-formed object and its key (payload contents do not matter to these checks)."""
    if first:
        key = layout.changeset_key(DB, backup, 0, first, last)
        header = ObjectHeader("changeset", DB, backup, 0, first, last, 4096, "none", cipher is not None)
    else:
        key = layout.snapshot_key(DB, backup)
        header = ObjectHeader(
            "snapshot", DB, backup, page_size=4096, codec="none", encrypted=cipher is not None
        )
    data, _ = encode_object(header, [bytes([first % 256]) * 5000, b"tail" * 100], cipher)  # type: ignore[arg-type]
    return key, data


def flip(data: bytes, at: int = 200) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1 :]


def replica(*stores: MemoryStorage, backups: tuple[str, ...] = (B1,), n: int = 3) -> dict[str, bytes]:
    objects = {}
    for b in backups:
        objects.update([obj(b)] + [obj(b, i, i) for i in range(1, n + 1)])
    for s in stores:
        for k, v in objects.items():
            s.put(k, v)
        s.put(layout.current_key(DB), backups[-1].encode() + b"\n")
    return objects


def test_validate_detects_a_flipped_bit_with_and_without_a_key() -> None:
    key, data = obj(B1, 1, 1)
    validate_bytes(data, key)
    with pytest.raises(CorruptionError):
        validate_bytes(flip(data), key)
    cipher = cipher_from_key(generate_key())
    key, sealed = obj(B1, 2, 2, cipher)
    validate_bytes(sealed, key)  # key-less: CRCs and BLAKE3
    validate_bytes(sealed, key, cipher)  # with the AEAD tags
    for at in (100, len(sealed) // 2, len(sealed) - 20):
        with pytest.raises(CorruptionError):
            validate_bytes(flip(sealed, at), key)


def test_fallback_reads_a_healthy_copy_and_names_the_bad_destination() -> None:
    a, b = MemoryStorage(), MemoryStorage()
    objects = replica(a, b)
    key = layout.changeset_key(DB, B1, 0, 2, 2)
    a.put(key, flip(objects[key]))
    fb = FallbackStorage([a, b])
    assert fb.get(key) == objects[key]
    assert fb.open(key).read() == objects[key]
    assert fb.get_range(key, 0, 10) == objects[key][:10]
    assert [f.destination for f in fb.findings] == [a.describe()]
    assert fb.get(layout.current_key(DB)) == B1.encode() + b"\n"


def test_fallback_exhaustive_names_a_rotting_secondary() -> None:
    a, b = MemoryStorage(), MemoryStorage()
    objects = replica(a, b)
    key = layout.snapshot_key(DB, B1)
    b.put(key, flip(objects[key]))
    quick = FallbackStorage([a, b])
    quick.get(key)
    assert quick.findings == []  # first good copy wins, the secondary is not read
    full = FallbackStorage([a, b], exhaustive=True)
    assert full.get(key) == objects[key]
    assert [f.destination for f in full.findings] == [b.describe()]


def test_fallback_fails_loudly_when_every_copy_is_bad() -> None:
    a, b = MemoryStorage(), MemoryStorage()
    objects = replica(a, b)
    key = layout.changeset_key(DB, B1, 0, 1, 1)
    a.put(key, flip(objects[key]))
    b.put(key, flip(objects[key], 300))
    with pytest.raises(CorruptionError) as e:
        FallbackStorage([a, b]).get(key)
    assert a.describe() in e.value.one_line() and b.describe() in e.value.one_line()
    with pytest.raises(ObjectNotFound):
        FallbackStorage([a, b]).get(layout.changeset_key(DB, B1, 0, 9, 9))


def test_fallback_list_is_the_union() -> None:
    a, b = MemoryStorage(), MemoryStorage()
    replica(a, b)
    extra = layout.changeset_key(DB, B1, 0, 4, 4)
    b.put(extra, obj(B1, 4, 4)[1])
    keys = [i.key for i in FallbackStorage([a, b]).list(layout.db_prefix(DB))]
    assert extra in keys and keys == sorted(keys)


def test_repair_heals_corrupt_and_missing_and_dry_run_changes_nothing() -> None:
    a, b, m = MemoryStorage(), MemoryStorage(), MemoryStorage()
    objects = replica(a, b, m)
    k1, k2 = layout.changeset_key(DB, B1, 0, 1, 1), layout.changeset_key(DB, B1, 0, 2, 2)
    a.put(k1, flip(objects[k1]))
    b.delete([k2])
    m.put(k2, flip(objects[k2]))
    dry = repair_database(DB, [a, b, m], [True, True, False], dry_run=True)
    assert {(h.key, h.action) for h in dry.heals} == {(k1, "would heal"), (k2, "would heal")}
    assert len(dry.heals) == 3 and dry.exit_code == 0
    assert a.get(k1) != objects[k1] and b.stat(k2) is None
    done = repair_database(DB, [a, b, m], [True, True, False])
    assert done.exit_code == 0 and all(h.action == "healed" for h in done.heals)
    assert a.get(k1) == objects[k1] and b.get(k2) == objects[k2] and m.get(k2) == objects[k2]
    assert repair_database(DB, [a, b, m], [True, True, False]).heals == ()


def test_repair_reports_an_object_bad_everywhere() -> None:
    a, b = MemoryStorage(), MemoryStorage()
    objects = replica(a, b)
    k = layout.changeset_key(DB, B1, 0, 3, 3)
    a.put(k, flip(objects[k]))
    b.put(k, flip(objects[k]))
    r = repair_database(DB, [a, b], [True, True])
    assert r.unrecoverable == (k,) and r.exit_code == 1


def test_repair_does_not_resurrect_what_only_a_mirror_still_holds() -> None:
    a, m = MemoryStorage(), MemoryStorage()
    replica(a, m)
    retired = layout.changeset_key(DB, B1, 0, 1, 1)
    a.delete([retired])
    r = repair_database(DB, [a, m], [True, False])
    assert r.heals == () and a.stat(retired) is None


def test_backfill_policies() -> None:
    a, b = MemoryStorage(), MemoryStorage()
    objects = replica(a)
    with pytest.raises(backfill.IncompleteDestinationError):
        backfill.reconcile(DB, [a, b], "refuse")
    assert backfill.reconcile(DB, [a, b], "warn").incomplete == (b.describe(),)
    assert b.stat(layout.snapshot_key(DB, B1)) is None
    done = backfill.reconcile(DB, [a, b], "backfill")
    assert done.copied == len(objects) and done.source == a.describe()
    assert all(b.get(k) == v for k, v in objects.items())
    assert b.get(layout.current_key(DB)) == a.get(layout.current_key(DB))


def test_backfill_refuses_when_no_destination_is_complete() -> None:
    a, b = MemoryStorage(), MemoryStorage()
    replica(a, b)
    a.delete([layout.changeset_key(DB, B1, 0, 1, 1)])
    b.delete([layout.changeset_key(DB, B1, 0, 2, 2)])
    with pytest.raises(backfill.IncompleteDestinationError, match="no destination holds a complete"):
        backfill.reconcile(DB, [a, b], "backfill")


def test_copy_object_never_spreads_rot() -> None:
    a, b = MemoryStorage(), MemoryStorage()
    key, data = obj(B1, 1, 1)
    a.put(key, flip(data))
    with pytest.raises(CorruptionError):
        copy_object(a, b, key)
    assert b.stat(key) is None


def test_mirror_pass_copies_advances_current_and_prunes() -> None:
    primary, mirror = MemoryStorage(), MemoryStorage()
    replica(primary, backups=(B1,))
    state = MirrorState(mirror.describe())
    reconcile(DB, primary, mirror, state)
    assert state.in_sync and state.current == B1 and state.copied == 4
    # The primary moves on to a new backup and retires the old one.
    for k, v in [obj(B2), obj(B2, 1, 1)]:
        primary.put(k, v)
    primary.put(layout.current_key(DB), B2.encode() + b"\n")
    primary.delete([i.key for i in primary.list(layout.backup_prefix(DB, B1))])
    reconcile(DB, primary, mirror, state)
    assert state.in_sync and state.current == B2
    assert list(mirror.list(layout.backup_prefix(DB, B1))) == []


def test_mirror_pass_keeps_current_when_a_copy_fails() -> None:
    primary, mirror = MemoryStorage(), MemoryStorage()
    objects = replica(primary)
    bad = layout.changeset_key(DB, B1, 0, 2, 2)
    primary.put(bad, flip(objects[bad]))
    state = MirrorState(mirror.describe())
    with pytest.raises(CorruptionError):
        reconcile(DB, primary, mirror, state)
    assert mirror.stat(layout.current_key(DB)) is None
    assert mirror.stat(layout.changeset_key(DB, B1, 0, 1, 1)) is not None  # a restorable prefix
    assert mirror.stat(bad) is None


def test_mirror_never_prunes_after_an_empty_primary_listing() -> None:
    primary, mirror = MemoryStorage(), MemoryStorage()
    replica(primary, backups=(B1, B2))
    state = MirrorState(mirror.describe())
    reconcile(DB, primary, mirror, state)
    held = sorted(i.key for i in mirror.list())
    empty = MemoryStorage()  # the primary's disk unmounted: lists nothing, has no CURRENT
    reconcile(DB, empty, mirror, state)
    assert sorted(i.key for i in mirror.list()) == held
