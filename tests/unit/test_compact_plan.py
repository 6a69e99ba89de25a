"""plan_compaction: pure planning of which change-sets merge into which windows."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from bakelite.ops.compact import ChangesetInfo, CompactionPlan, plan_compaction, target_level, window_of

BACKUP = "20240101T000000000Z-00000000"
LEVELS = (1.0, 3.0, 10.0)


def chain(times: list[float], sizes: list[int] | None = None, backup: str = BACKUP) -> list[ChangesetInfo]:
    """L0 change-sets ending at ``times`` with ``sizes`` commits each (1 by default)."""
    out, seq = [], 1
    for i, t in enumerate(times):
        n = sizes[i] if sizes else 1
        out.append(ChangesetInfo(f"{backup}/L0/{seq}", backup, 0, seq, seq + n - 1, t))
        seq += n
    return out


def apply(objs: list[ChangesetInfo], plan: CompactionPlan) -> list[ChangesetInfo]:
    """The objects after executing ``plan`` (the planner's model of the executor)."""
    by_key = {o.key: o for o in objs}
    for c in plan.cleanups:
        for k in c.redundant:
            by_key.pop(k)
    for m in plan.merges:
        last = by_key[m.sources[-1]]
        for k in m.sources:
            by_key.pop(k)
        key = f"{m.backup}/L{m.level}/{m.first}"
        by_key[key] = ChangesetInfo(key, m.backup, m.level, m.first, m.last, last.t_last)
    return sorted(by_key.values(), key=lambda o: (o.backup, o.first))


def test_target_level_is_the_coarsest_closed_window() -> None:
    assert target_level(0.5, LEVELS, 0.9) == 0
    assert target_level(0.5, LEVELS, 1.0) == 1
    assert target_level(0.5, LEVELS, 3.0) == 2
    assert target_level(0.5, LEVELS, 100.0) == 3
    assert window_of(2.9, 3.0) == 0 and window_of(3.0, 3.0) == 1


def test_merges_runs_of_one_closed_window_and_keeps_recent() -> None:
    objs = chain([0.1, 0.5, 0.9, 1.2, 1.5, 2.5, 2.6, 2.7])
    plan = plan_compaction(objs, LEVELS, keep_recent=2, now=2.8)
    # window [0,3) of level 2 is open; level-1 windows [0,1) and [1,2) are closed; [2,3) is open.
    assert [(m.level, m.first, m.last) for m in plan.merges] == [(1, 1, 3), (1, 4, 5)]
    assert all("L0/7" not in k and "L0/8" not in k for m in plan.merges for k in m.sources)


def test_old_objects_go_straight_to_the_coarsest_closed_level() -> None:
    objs = chain([0.1, 0.5, 2.9, 4.0, 50.0])
    plan = plan_compaction(objs, LEVELS, keep_recent=1, now=60.0)
    assert [(m.level, m.first, m.last) for m in plan.merges] == [(3, 1, 4)]


def test_singletons_and_disabled_levels_do_nothing() -> None:
    objs = chain([0.5, 1.5, 2.5, 3.5])
    assert plan_compaction(objs, LEVELS, keep_recent=1, now=2.9).merges == ()
    assert plan_compaction(chain([0.1, 0.2, 0.3]), (), keep_recent=0, now=99).empty


def test_protected_key_is_never_merged_and_splits_the_run() -> None:
    objs = chain([0.1, 0.2, 0.3, 0.4, 5.0])
    plan = plan_compaction(objs, LEVELS, keep_recent=1, now=9.0, protect=[objs[2].key])
    assert [(m.first, m.last) for m in plan.merges] == [(1, 2)]


def test_leftovers_of_a_crash_are_cleaned_up_under_their_cover() -> None:
    objs = chain([0.1, 0.2, 0.3, 5.0])
    merged = ChangesetInfo(f"{BACKUP}/L1/1", BACKUP, 1, 1, 3, 0.3)
    plan = plan_compaction([*objs[:2], merged, objs[3]], LEVELS, keep_recent=1, now=1.5)
    assert [(c.cover, sorted(c.redundant)) for c in plan.cleanups] == [
        (merged.key, sorted([objs[0].key, objs[1].key]))
    ]
    assert plan.merges == ()


def test_crossing_ranges_leave_the_backup_alone() -> None:
    a = ChangesetInfo("a", BACKUP, 1, 1, 5, 0.5)
    b = ChangesetInfo("b", BACKUP, 1, 3, 8, 0.8)
    plan = plan_compaction([a, b, *chain([9.0])[0:0]], LEVELS, keep_recent=0, now=99)
    assert plan.empty and plan.skipped


@settings(max_examples=300, deadline=None)
@given(
    gaps=st.lists(st.floats(0.0, 4.0), min_size=1, max_size=40),
    sizes=st.lists(st.integers(1, 5), min_size=40, max_size=40),
    keep=st.integers(0, 10),
    later=st.floats(0.0, 30.0),
    levels=st.sampled_from([(1.0,), (1.0, 3.0), (1.0, 3.0, 10.0), (0.5, 0.7, 2.0)]),
    rounds=st.integers(1, 4),
)
def test_plan_invariants(
    gaps: list[float], sizes: list[int], keep: int, later: float, levels: tuple[float, ...], rounds: int
) -> None:
    times, t = [], 0.0
    for g in gaps:
        t += g
        times.append(t)
    objs = chain(times, sizes[: len(times)])
    end = objs[-1].last
    now = t
    for _ in range(rounds):
        now += later / rounds
        plan = plan_compaction(objs, levels, keep, now)
        newest = {o.key for o in objs[-max(keep, 1) :]}
        for m in plan.merges:
            assert len(m.sources) >= 2
            assert not newest & set(m.sources), "a recent change-set was merged"
            srcs = [next(o for o in objs if o.key == k) for k in m.sources]
            assert [s.first for s in srcs[1:]] == [s.last + 1 for s in srcs[:-1]], "sources do not abut"
            width = levels[m.level - 1]
            windows = {window_of(s.t_last, width) for s in srcs}
            assert len(windows) == 1, "a merge spans two windows"
            assert (windows.pop() + 1) * width <= now, "merged into a window still open"
        objs = apply(objs, plan)
        # The chain still runs from seq 1 to the end without holes or overlaps.
        assert objs[0].first == 1 and objs[-1].last == end
        assert all(b.first == a.last + 1 for a, b in itertools.pairwise(objs))
        # Every restore point left is a commit time that existed (a window end in time order).
        assert [o.t_last for o in objs] == sorted(o.t_last for o in objs)
    # Idempotent: the same plan inputs and time plan nothing once applied.
    assert plan_compaction(objs, levels, keep, now).merges == ()
