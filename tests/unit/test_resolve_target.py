"""Target resolution and chain selection, as pure functions over modelled replicas."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from bakelite.errors import ChainBrokenError, RestoreTargetError
from bakelite.format import layout
from bakelite.ops.catalog import (
    BackupSpan,
    ChainObject,
    Resolution,
    SeqGap,
    StoredObject,
    contiguous_end,
    land_inside,
    resolve_target,
    select_chain,
)
from bakelite.ops.timeparse import format_time

DB = "app"


def backup_id(i: int) -> str:
    return f"2026010{i + 1}T000000000Z-0000000{i}"


# -- a model replica ----------------------------------------------------------------------------


@dataclass
class Model:
    """Backups of (snapshot time, [commit time...]) plus how each backup's commits are grouped."""

    backups: list[tuple[float, list[float]]]
    groups: list[list[int]]  # per backup: sizes of consecutive L0 change-sets
    compacted: list[list[tuple[int, int]]]  # per backup: extra L1 objects (first, last) over L0 ones
    drop_covered: bool = False  # the L0 objects under an L1 one were deleted (compaction finished)

    def points(self) -> list[tuple[int, int, float]]:
        """Every restore point in shipping order: (backup index, seq, time)."""
        out = []
        for b, (snap, commits) in enumerate(self.backups):
            out.append((b, 0, snap))
            out += [(b, i + 1, t) for i, t in enumerate(commits) if self.is_boundary(b, i + 1)]
        return out

    def is_boundary(self, b: int, seq: int) -> bool:
        """Whether a stored object still has a commit boundary at ``seq``."""
        if not self.drop_covered:
            return True
        for first, last in self.compacted[b]:
            if first <= seq <= last:
                return seq == last or (seq - first) % 2 == 1
        return True

    def commit_time(self, b: int, seq: int) -> float:
        snap, commits = self.backups[b]
        return snap if seq == 0 else commits[seq - 1]

    def spans(self) -> list[BackupSpan]:
        spans = []
        for b, (snap, commits) in enumerate(self.backups):
            objs = []
            seq = 1
            for size in self.groups[b]:
                first, last = seq, seq + size - 1
                covered = any(f <= first and last <= la for f, la in self.compacted[b])
                if not (self.drop_covered and covered):
                    objs.append(self._obj(b, 0, first, last))
                seq = last + 1
            objs += [self._obj(b, 1, f, last) for f, last in self.compacted[b]]
            objs.sort(key=lambda c: (c.first, c.level, c.last))
            n = len(commits)
            spans.append(
                BackupSpan(
                    backup=backup_id(b),
                    snapshot_key=layout.snapshot_key(DB, backup_id(b)),
                    snapshot_size=100,
                    page_size=4096,
                    db_pages=1,
                    first_time=snap,
                    last_time=commits[-1] if commits else snap,
                    last_seq=n,
                    max_seq=n,
                    objects=1 + len(self.groups[b]),
                    stored_bytes=0,
                    gap=None,
                    changesets=tuple(objs),
                    detailed=True,
                )
            )
        return spans

    def _obj(self, b: int, level: int, first: int, last: int) -> ChainObject:
        key = layout.changeset_key(DB, backup_id(b), level, first, last)
        return ChainObject(
            key, level, first, last, 10, self.commit_time(b, first), self.commit_time(b, last), 1
        )

    def commits_of(self, obj: ChainObject) -> list[tuple[int, float]]:
        b = next(i for i in range(len(self.backups)) if obj.key.startswith(f"{DB}/{backup_id(i)}/"))
        seqs = list(range(obj.first, obj.last + 1))
        if obj.level > 0:
            # A compacted object keeps only some boundaries: here its last and every other one.
            seqs = [s for s in seqs if s == obj.last or (s - obj.first) % 2 == 1]
        return [(s, self.commit_time(b, s)) for s in seqs]


@st.composite
def models(draw: st.DrawFn, compaction: bool = False, drop_covered: bool = False) -> Model:
    # Small integer times make ties (equal commit times, T equal to a commit) common.
    times = sorted(draw(st.lists(st.integers(0, 40), min_size=1, max_size=40)))
    n_backups = draw(st.integers(1, min(4, len(times))))
    cuts = (
        sorted(draw(st.sets(st.integers(1, len(times) - 1), max_size=n_backups - 1)))
        if len(times) > 1
        else []
    )
    bounds = [0, *cuts, len(times)]
    backups, groups, compacted = [], [], []
    for lo, hi in itertools.pairwise(bounds):
        chunk = [float(t) for t in times[lo:hi]]
        snap, commits = chunk[0], chunk[1:]
        backups.append((snap, commits))
        sizes: list[int] = []
        left = len(commits)
        while left:
            size = draw(st.integers(1, left))
            sizes.append(size)
            left -= size
        groups.append(sizes)
        extra: list[tuple[int, int]] = []
        if compaction and len(sizes) >= 2:
            # One L1 object over some consecutive L0 objects (both kept, as after compaction
            # before the L0 ones are deleted).
            i = draw(st.integers(0, len(sizes) - 2))
            j = draw(st.integers(i + 1, len(sizes) - 1))
            first = 1 + sum(sizes[:i])
            last = sum(sizes[: j + 1])
            extra.append((first, last))
        compacted.append(extra)
    return Model(backups, groups, compacted, drop_covered)


def land(model: Model, t: float | None) -> tuple[int, int]:
    """Resolve like restore does: headers first, then the one object T falls inside."""
    res = resolve_target(model.spans(), t)
    if res.inside is not None:
        assert t is not None
        res = land_inside(res, model.commits_of(res.inside), t)
    b = next(i for i in range(len(model.backups)) if backup_id(i) == res.backup)
    assert res.time == model.commit_time(b, res.seq)
    return b, res.seq


def oracle(model: Model, t: float) -> tuple[int, int]:
    eligible = [(b, s) for b, s, ct in model.points() if ct <= t]
    return eligible[-1]


# -- properties ---------------------------------------------------------------------------------


@given(models(), st.floats(-1, 42))
def test_lands_on_the_newest_commit_at_or_before_t(model: Model, t: float) -> None:
    oldest = model.backups[0][0]
    assume(t >= oldest)
    assert land(model, t) == oracle(model, t)


@given(models(compaction=True), st.integers(0, 41))
def test_overlapping_compacted_objects_do_not_change_the_answer(model: Model, t: int) -> None:
    assume(t >= model.backups[0][0])
    # L0 objects keep every boundary and are preferred, so the answer is the exact one.
    assert land(model, float(t)) == oracle(model, float(t))


@given(models(compaction=True, drop_covered=True), st.integers(0, 41))
def test_compacted_objects_alone_land_on_their_newest_boundary(model: Model, t: int) -> None:
    assume(t >= model.backups[0][0])
    assert land(model, float(t)) == oracle(model, float(t))


@given(models(), st.floats(0, 42), st.floats(0, 42))
def test_monotonic_in_t(model: Model, t1: float, t2: float) -> None:
    lo, hi = sorted((t1, t2))
    assume(lo >= model.backups[0][0])
    assert land(model, lo) <= land(model, hi)


@given(models(), st.floats(-100, 40))
def test_before_the_oldest_names_it(model: Model, t: float) -> None:
    oldest = model.backups[0][0]
    assume(t < oldest)
    with pytest.raises(RestoreTargetError) as e:
        land(model, t)
    assert format_time(oldest) in e.value.message


@given(models(), st.floats(41, 1e9))
def test_after_the_newest_gives_the_newest(model: Model, t: float) -> None:
    newest = model.points()[-1]
    assert land(model, t) == newest[:2]
    assert land(model, None) == newest[:2]


# -- examples -----------------------------------------------------------------------------------


def _span(backup: int, first_time: float, last_time: float, **kw: object) -> BackupSpan:
    fields: dict[str, object] = dict(
        backup=backup_id(backup),
        snapshot_key="k",
        snapshot_size=1,
        page_size=4096,
        db_pages=1,
        first_time=first_time,
        last_time=last_time,
        last_seq=10,
        max_seq=10,
        objects=2,
        stored_bytes=0,
        gap=None,
        changesets=(),
        detailed=False,
    )
    fields.update(kw)
    return BackupSpan(**fields)  # type: ignore[arg-type]


def test_coarse_spans_suffice_outside_their_interiors() -> None:
    spans = [_span(0, 10, 20), _span(1, 30, 40)]
    assert resolve_target(spans, 25) == Resolution(backup_id(0), 10, 20)
    assert resolve_target(spans, 40) == Resolution(backup_id(1), 10, 40)
    assert resolve_target(spans, None) == Resolution(backup_id(1), 10, 40)
    with pytest.raises(ValueError):
        resolve_target(spans, 35)


def test_a_hole_blocks_targets_past_it_but_not_before() -> None:
    gap = SeqGap(4, 6)
    spans = [_span(0, 10, 20, last_seq=3, max_seq=9, gap=gap)]
    with pytest.raises(ChainBrokenError) as e:
        resolve_target(spans, None)
    assert "seqs 4..6" in e.value.message
    with pytest.raises(ChainBrokenError):
        resolve_target(spans, 21)
    assert resolve_target(spans, 20) == Resolution(backup_id(0), 3, 20)


def test_a_hole_in_an_older_backup_does_not_matter_for_a_newer_target() -> None:
    spans = [_span(0, 10, 20, last_seq=3, max_seq=9, gap=SeqGap(4, 6)), _span(1, 30, 40)]
    assert resolve_target(spans, 45) == Resolution(backup_id(1), 10, 40)


# -- chain selection ----------------------------------------------------------------------------


def objs(*specs: tuple[int, int, int]) -> list[StoredObject]:
    b = backup_id(0)
    return [
        StoredObject(layout.ObjectRef(b, "changeset", lv, f, la, layout.changeset_key(DB, b, lv, f, la)), 1)
        for lv, f, la in specs
    ]


def positions(path: tuple[StoredObject, ...]) -> list[tuple[int, int, int]]:
    return [(o.ref.level, o.ref.first, o.ref.last) for o in path]


def test_select_chain_l0() -> None:
    chain = objs((0, 1, 3), (0, 4, 4), (0, 5, 9))
    assert positions(select_chain("b", chain, 9)) == [(0, 1, 3), (0, 4, 4), (0, 5, 9)]
    assert positions(select_chain("b", chain, 4)) == [(0, 1, 3), (0, 4, 4)]
    # Stopping inside an L0 object: every commit is a boundary there.
    assert positions(select_chain("b", chain, 6)) == [(0, 1, 3), (0, 4, 4), (0, 5, 9)]
    assert select_chain("b", chain, 0) == ()


def test_select_chain_prefers_l0_but_uses_compacted_objects_where_l0_is_gone() -> None:
    both = objs((0, 1, 3), (0, 4, 6), (1, 1, 6), (0, 7, 8))
    assert positions(select_chain("b", both, 8)) == [(0, 1, 3), (0, 4, 6), (0, 7, 8)]
    assert positions(select_chain("b", both, 8, prefer_level0=False)) == [(1, 1, 6), (0, 7, 8)]
    only_l1 = objs((1, 1, 6), (0, 7, 8))
    assert positions(select_chain("b", only_l1, 8)) == [(1, 1, 6), (0, 7, 8)]


def test_select_chain_names_the_missing_range() -> None:
    chain = objs((0, 1, 3), (0, 7, 9))
    assert contiguous_end(chain) == (3, SeqGap(4, 6))
    with pytest.raises(ChainBrokenError) as e:
        select_chain("b", chain, 9)
    assert "seqs 4..6" in e.value.message
    assert positions(select_chain("b", chain, 2)) == [(0, 1, 3)]


def test_select_chain_missing_first_object() -> None:
    with pytest.raises(ChainBrokenError) as e:
        select_chain("b", objs((0, 2, 5)), 5)
    assert "seq 1" in e.value.message
