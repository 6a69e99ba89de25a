"""Compaction and retention end to end over replicas built from a real SQLite database's states.

Every restore is compared byte for byte with the recorded state of the commit it must land on: the
newest commit at or before the target among the restore points compaction keeps.  Crashes are
simulated in-process by a backend that stops working at a chosen call (``put_stream:permanent@N``,
``delete:permanent@N``), followed by a clean rerun.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bakelite.config.model import Database
from bakelite.errors import BakeliteError, RestoreTargetError
from bakelite.ops.catalog import list_backups, restore_points
from bakelite.ops.compact import compact_database
from bakelite.ops.restore import restore
from bakelite.ops.retention import apply_retention
from bakelite.storage.base import Storage
from bakelite.storage.faulty import FaultyStorage
from bakelite.storage.memory import MemoryStorage
from replica_builder import Commit, ReplicaBuilder, Workload

LEVELS = (1.0, 3.0)
KEEP = 4
T0 = 1_700_000_000.0


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Replica:
    """A builder-made replica plus the ground truth of every commit."""

    def __init__(self, tmp: Path, storage: Storage, seed: int = 1) -> None:
        self.tmp = tmp
        self.storage = storage
        self.rng = random.Random(seed)
        self.work = Workload(tmp / "src.db")
        self.work.run("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        self.builder = ReplicaBuilder(storage, "app")
        self.t = T0
        self.builder.new_backup(self.work.path.read_bytes(), self.t)
        self.n = 0

    def write(self, commits: int, flush_p: float = 0.4) -> None:
        for _ in range(commits):
            self.n += 1
            self.t += self.rng.uniform(0.02, 0.3)
            if self.n % 53 == 0:
                self.work.run("DELETE FROM t WHERE id % 2 = 0")
                state = self.work.vacuum()
            else:
                blob = self.rng.randbytes(self.rng.choice([8, 2000, 9000]))
                state = self.work.run(("INSERT INTO t(v) VALUES (?)", (blob,)))
            self.builder.commit(state, self.t)
            if self.rng.random() < flush_p:
                self.builder.flush()
        self.builder.flush()

    def new_backup(self) -> None:
        self.t += 0.5
        self.builder.new_backup(self.work.path.read_bytes(), self.t)

    def restore_at(self, t: float | None, name: str) -> int:
        """Restore at ``t`` (None: latest); assert the bytes are the expected commit's; return its seq."""
        out = self.tmp / f"restore-{name}.db"
        out.unlink(missing_ok=True)
        report = restore(
            Database(name="app", path=self.tmp / "live.db"),
            self.storage,
            output=out,
            timestamp=None if t is None else iso(t),
        )
        landed = next(
            c for c in self.builder.history if c.backup == report.backup and c.seq == report.landed_seq
        )
        assert out.read_bytes() == landed.state, f"restore at {t} is not the state of seq {landed.seq}"
        if t is not None:
            assert landed.time <= t + 1e-6
        out.unlink()
        return landed.seq

    def boundaries(self) -> list[tuple[str, int]]:
        """Every (backup, seq) a restore can still land on: the snapshot and each object's end."""
        spans = restore_points(
            self.storage, "app", [b for b in list_backups(self.storage, "app") if b.complete]
        )
        out = []
        for s in spans:
            out.append((s.backup, 0))
            for c in s.changesets:
                if c.level == 0:
                    out += [(s.backup, q) for q in range(c.first, c.last + 1)]
                else:
                    out.append((s.backup, c.last))
        return out

    def check_all_points(self, sample: int | None = None) -> int:
        """Every retained commit restores exactly when targeted at its own time; returns how many."""
        kept = set(self.boundaries())
        commits: list[Commit] = [c for c in self.builder.history if (c.backup, c.seq) in kept]
        if sample is not None and len(commits) > sample:
            commits = self.rng.sample(commits, sample) + commits[-1:]
        for i, c in enumerate(commits):
            assert self.restore_at(c.time + 1e-5, f"pt{i}") == c.seq
        assert self.restore_at(None, "latest") == self.builder.history[-1].seq
        return len(commits)

    def objects(self) -> int:
        return sum(1 for _ in self.storage.list("app/"))


def test_long_workload_keeps_object_count_bounded_and_every_kept_point_exact(tmp_path: Path) -> None:
    rep = Replica(tmp_path, MemoryStorage())
    counts, shipped = [], 0
    for i in range(15):
        before = len(rep.builder.keys)
        rep.write(60)
        shipped += len(rep.builder.keys) - before
        report = compact_database(rep.storage, "app", LEVELS, KEEP, rep.t + 0.01)
        assert not report.errors
        # Within one backup the count grows only by one object per closed top-level window.
        newest = list_backups(rep.storage, "app")[-1]
        elapsed = rep.t - newest.created
        assert len(newest.changesets) <= KEEP + 2 * LEVELS[1] / LEVELS[0] + elapsed / LEVELS[1] + 2
        if i % 3 == 2:
            rep.new_backup()  # snapshot_interval / max_segments_per_snapshot
            apply_retention(rep.storage, "app", now=rep.t, max_backups=2)
        counts.append(rep.objects())
    # With new backups and retention the total stays bounded however long the history.
    assert max(counts[6:]) <= max(counts[:6]) + 5, counts
    assert shipped > 4 * max(counts)
    assert rep.check_all_points(sample=60) > 0
    # A target between two kept points lands on the older one, exactly.
    t = (rep.builder.history[-40].time + rep.builder.history[-41].time) / 2
    assert rep.restore_at(t, "between") <= rep.builder.history[-41].seq


def test_coarser_levels_take_over_as_time_passes(tmp_path: Path) -> None:
    rep = Replica(tmp_path, MemoryStorage())
    seen: set[str] = set()
    for _ in range(10):
        rep.write(8, flush_p=0.9)
        compact_database(rep.storage, "app", LEVELS, KEEP, rep.t + 0.01)
        seen |= {i.key.split("/")[2] for i in rep.storage.list("app/") if "/L" in i.key}
    assert {"L0", "L1", "L2"} <= seen
    before = rep.objects()
    compact_database(rep.storage, "app", LEVELS, KEEP, rep.t + 100)
    levels = [i.key.split("/")[2] for i in rep.storage.list("app/") if "/L" in i.key]
    assert levels.count("L2") >= 2 and rep.objects() <= before
    assert compact_database(rep.storage, "app", LEVELS, KEEP, rep.t + 100).planned_merges == 0
    rep.check_all_points()


def test_idempotent_rerun_changes_nothing(tmp_path: Path) -> None:
    rep = Replica(tmp_path, MemoryStorage())
    rep.write(100)
    compact_database(rep.storage, "app", LEVELS, KEEP, rep.t + 50)
    keys = [i.key for i in rep.storage.list("app/")]
    report = compact_database(rep.storage, "app", LEVELS, KEEP, rep.t + 50)
    assert report.merged == 0 and [i.key for i in rep.storage.list("app/")] == keys


@pytest.mark.parametrize("op", ["put_stream", "delete", "open"])
def test_a_crash_at_every_step_of_compaction_leaves_a_restorable_replica(tmp_path: Path, op: str) -> None:
    base = MemoryStorage()
    rep = Replica(tmp_path, base, seed=3)
    rep.write(80)
    # The reference: how many calls of this op one clean compaction makes.
    probe = MemoryStorage()
    for info in base.list("app/"):
        probe.put(info.key, base.get(info.key))
    counter = FaultyStorage(probe, "")
    compact_database(counter, "app", LEVELS, KEEP, rep.t + 50)
    steps = counter.calls[op]
    assert steps > 0
    pristine = {i.key: base.get(i.key) for i in base.list("app/")}
    for n in range(1, steps + 1):
        for key in [i.key for i in base.list("app/")]:
            base.delete([key])
        for key, data in pristine.items():
            base.put(key, data)
        faulty = FaultyStorage(base, f"{op}:permanent@{n}")
        with pytest.raises(BakeliteError):
            compact_database(faulty, "app", LEVELS, KEEP, rep.t + 50)
        # Stopped mid-way: the replica restores exactly, latest and a few points.
        rep.check_all_points(sample=4)
        # The rerun finishes the job (leftovers are cleaned up under their verified cover).
        compact_database(base, "app", LEVELS, KEEP, rep.t + 50)
        assert compact_database(base, "app", LEVELS, KEEP, rep.t + 50).merged == 0
        rep.check_all_points(sample=6)


def test_delete_refusing_backend_degrades_gracefully(tmp_path: Path) -> None:
    base = MemoryStorage()
    rep = Replica(tmp_path, base)
    rep.write(60)
    rep.new_backup()
    rep.write(60)
    worm = FaultyStorage(base, "delete:refuse%100")
    report = compact_database(worm, "app", LEVELS, KEEP, rep.t + 50)
    assert report.delete_refused and report.merged == 1
    retention = apply_retention(worm, "app", now=rep.t + 50, max_backups=1)
    assert retention.delete_refused and not retention.pruned
    assert len(list_backups(base, "app")) == 2
    rep.check_all_points(sample=10)


def test_retention_and_caps_prune_oldest_never_current_and_pruned_targets_fail_clearly(
    tmp_path: Path,
) -> None:
    rep = Replica(tmp_path, MemoryStorage())
    for _ in range(4):
        rep.write(30)
        rep.new_backup()
    rep.write(30)
    backups = [b.backup for b in list_backups(rep.storage, "app")]
    assert len(backups) == 5
    report = apply_retention(rep.storage, "app", now=rep.t, max_backups=3)
    assert [p.backup for p in report.pruned] == backups[:2]
    left = list_backups(rep.storage, "app")
    assert [b.backup for b in left] == backups[2:]
    # A target before the oldest retained point fails naming it.
    with pytest.raises(RestoreTargetError, match="before the oldest restore point"):
        rep.restore_at(rep.builder.history[5].time, "pruned")
    # A cap that cannot be met keeps the current backup and says so.
    report = apply_retention(rep.storage, "app", now=rep.t, max_total_size=1)
    assert report.unmet and [b.backup for b in list_backups(rep.storage, "app")] == backups[-1:]
    rep.check_all_points(sample=10)


def test_crash_mid_prune_leaves_no_half_backup_visible(tmp_path: Path) -> None:
    base = MemoryStorage()
    rep = Replica(tmp_path, base)
    rep.write(40)
    rep.new_backup()
    rep.write(40)
    faulty = FaultyStorage(base, "delete:permanent@2")
    with pytest.raises(BakeliteError):
        apply_retention(faulty, "app", now=rep.t, max_backups=1)
    # The old backup lost its snapshot first: it is incomplete, invisible to restore.
    infos = list_backups(base, "app")
    assert [b.complete for b in infos] == [False, True]
    rep.check_all_points(sample=10)
    report = apply_retention(base, "app", now=rep.t, max_backups=1)
    assert [p.reason for p in report.pruned] == ["incomplete"]
    assert len(list_backups(base, "app")) == 1
