"""plan_retention: pure planning of which backups retention and caps prune."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bakelite.format import layout
from bakelite.ops.retention import BackupFacts, plan_retention

DAY = 86400.0
T0 = 1_700_000_000.0


def backups(
    created: list[float], sizes: list[int] | None = None, complete: list[bool] | None = None
) -> list[BackupFacts]:
    out = []
    for i, t in enumerate(created):
        bid = layout.new_backup_id(t)
        out.append(
            BackupFacts(
                bid, layout.backup_time(bid), complete[i] if complete else True, sizes[i] if sizes else 100
            )
        )
    return out


def test_retention_prunes_backups_whose_whole_span_is_outside_the_window() -> None:
    bs = backups([T0, T0 + DAY, T0 + 2 * DAY, T0 + 3 * DAY])
    plan = plan_retention(bs, now=T0 + 3.5 * DAY, retention=2 * DAY)
    # Backup 1 ends when backup 2 starts (T0+1d), before the window start (T0+1.5d): pruned.
    # Backup 2 covers up to T0+2d, inside the window: kept.
    assert [p.backup for p in plan.prune] == [bs[0].backup]
    assert plan.current == bs[-1].backup


def test_caps_prune_oldest_first_and_never_the_current_one() -> None:
    bs = backups([T0, T0 + 10, T0 + 20, T0 + 30], sizes=[400, 300, 200, 900])
    plan = plan_retention(bs, now=T0 + 40, max_backups=3)
    assert [(p.backup, p.reason) for p in plan.prune] == [(bs[0].backup, "max_backups")]
    plan = plan_retention(bs, now=T0 + 40, max_total_size=1200)
    assert [p.backup for p in plan.prune] == [bs[0].backup, bs[1].backup]
    assert plan.bytes_after == 1100 and not plan.unmet
    plan = plan_retention(bs, now=T0 + 40, max_total_size=500)
    assert bs[-1].backup in plan.kept and len(plan.prune) == 3
    assert plan.unmet and "max_total_size" in plan.unmet[0]


def test_incomplete_leftovers_go_and_newer_in_progress_backups_stay() -> None:
    bs = backups([T0, T0 + 10, T0 + 20, T0 + 30], complete=[False, True, True, False])
    plan = plan_retention(bs, now=T0 + 40)
    assert [(p.backup, p.reason) for p in plan.prune] == [(bs[0].backup, "incomplete")]
    assert plan.current == bs[2].backup


def test_nothing_restorable_means_nothing_deleted() -> None:
    bs = backups([T0, T0 + 10], complete=[False, False])
    assert plan_retention(bs, now=T0 + 99, max_backups=1, retention=1.0).prune == ()


def test_protected_backup_is_kept() -> None:
    bs = backups([T0, T0 + 10, T0 + 20])
    plan = plan_retention(bs, now=T0 + 40, max_backups=1, protect=[bs[1].backup])
    assert [p.backup for p in plan.prune] == [bs[0].backup]
    assert plan.unmet


@settings(max_examples=300, deadline=None)
@given(
    gaps=st.lists(st.floats(1.0, 2 * DAY), min_size=1, max_size=12),
    sizes=st.lists(st.integers(1, 1000), min_size=12, max_size=12),
    complete=st.lists(st.booleans(), min_size=12, max_size=12),
    retention=st.sampled_from([0.0, 3600.0, DAY, 3 * DAY]),
    max_backups=st.integers(0, 5),
    max_total=st.sampled_from([0, 500, 2000, 5000]),
    later=st.floats(0.0, 5 * DAY),
)
def test_retention_invariants(
    gaps: list[float],
    sizes: list[int],
    complete: list[bool],
    retention: float,
    max_backups: int,
    max_total: int,
    later: float,
) -> None:
    t, created = T0, []
    for g in gaps:
        t += g
        created.append(t)
    n = len(created)
    bs = backups(created, sizes[:n], complete[:n])
    now = t + later
    plan = plan_retention(bs, now=now, retention=retention, max_backups=max_backups, max_total_size=max_total)
    pruned = {p.backup for p in plan.prune}
    full = [b for b in bs if b.complete]
    if full:
        current = full[-1]
        assert plan.current == current.backup and current.backup not in pruned
        # Nothing newer than the current backup is touched (it may be in progress).
        assert all(b.backup < current.backup for b in bs if b.backup in pruned)
    else:
        assert not pruned
    kept_full = [b for b in full if b.backup not in pruned]
    if max_backups and len(kept_full) > max_backups:
        assert plan.unmet
    if max_total and plan.bytes_after > max_total:
        assert plan.unmet and len(kept_full) <= 1
    if retention:
        # Every kept complete backup except the newest still covers a point inside the window, or
        # it was kept for lack of a cap reason to prune it.
        window_start = now - retention
        for i, b in enumerate(full[:-1]):
            if full[i + 1].created > window_start:
                assert (
                    b.backup not in pruned
                    or plan.prune[[p.backup for p in plan.prune].index(b.backup)].reason != "retention"
                )
    # Pruned oldest first.
    assert [p.backup for p in plan.prune] == sorted(pruned)
