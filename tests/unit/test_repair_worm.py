"""repair on a WORM destination: the immutable rotted copy is reported as degraded, not healed."""

from __future__ import annotations

from bakelite.errors import EXIT_CHECK_FAILED
from bakelite.format import layout
from bakelite.format.changeset import CommitRecord, changeset_frames, changeset_header
from bakelite.format.envelope import encode_object
from bakelite.ops.repair import repair_database
from bakelite.storage.faulty import FaultyStorage
from bakelite.storage.memory import MemoryStorage

BACKUP = "20261122T010203004Z-0123abcd"


def _object() -> tuple[str, bytes]:
    header = changeset_header(
        db="app", backup=BACKUP, first=1, last=1, page_size=512, codec="zstd", encrypted=False,
        created=1.0, prev="aa" * 32, t_first=1.0, t_last=1.0, db_pages=1,
    )  # fmt: skip
    data, _ = encode_object(header, changeset_frames([CommitRecord(1, 1.0, 1, [(1, b"x" * 512)])], 512))
    return layout.changeset_key("app", BACKUP, 0, 1, 1), data


def test_worm_destination_is_degraded_and_the_healthy_copy_untouched() -> None:
    key, data = _object()
    good, rotten = MemoryStorage(), MemoryStorage()
    good.put(key, data)
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 1
    rotten.put(key, bytes(flipped))
    worm = FaultyStorage(rotten, "put:permanent%100")  # every overwrite refused, as Object Lock does
    report = repair_database("app", [good, worm], [True, True])
    assert report.exit_code == EXIT_CHECK_FAILED
    assert report.degraded == (worm.describe(),)
    assert good.get(key) == data and rotten.get(key) == bytes(flipped)
    assert [h.action.split(":")[0] for h in report.heals] == ["failed"]


def test_dry_run_changes_nothing_and_a_real_run_heals() -> None:
    key, data = _object()
    good, rotten = MemoryStorage(), MemoryStorage()
    good.put(key, data)
    rotten.put(key, data[:-3])
    report = repair_database("app", [good, rotten], [True, True], dry_run=True)
    assert rotten.get(key) == data[:-3] and report.heals[0].action == "would heal"
    report = repair_database("app", [good, rotten], [True, True])
    assert rotten.get(key) == data and report.exit_code == 0
