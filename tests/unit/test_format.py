"""The object format: keys, envelope integrity, change-set records, lineage hashes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bakelite.errors import CorruptionError, FormatVersionError
from bakelite.format import layout
from bakelite.format.changeset import (
    CommitRecord,
    changeset_frames,
    changeset_header,
    read_commits,
)
from bakelite.format.envelope import (
    FORMAT_VERSION,
    ObjectHeader,
    chain_link,
    decode_object,
    encode_object,
    peek_header,
)
from bakelite.format.snapshot import check_snapshot_frames, snapshot_header

PS = 512
BACKUP = "20261122T010203004Z-0123abcd"


def _commits(n: int, pages_per: int = 3) -> list[CommitRecord]:
    return [
        CommitRecord(
            seq=i,
            time=1000.0 + i,
            db_pages=10 + i,
            pages=[(pg, bytes([i % 256, pg % 256]) * (PS // 2)) for pg in range(1, pages_per + 1)],
        )
        for i in range(1, n + 1)
    ]


def _header(first: int = 1, last: int = 3, prev: str = "aa" * 32, codec: str = "zstd") -> ObjectHeader:
    return changeset_header(
        db="app",
        backup=BACKUP,
        first=first,
        last=last,
        page_size=PS,
        codec=codec,
        encrypted=False,
        created=5.0,
        prev=prev,
        t_first=1001.0,
        t_last=1003.0,
        db_pages=13,
    )


# ---------------------------------------------------------------- layout


def test_keys_round_trip_and_sort_numerically() -> None:
    keys = [layout.changeset_key("app", BACKUP, 0, f, f + 9) for f in (1, 11, 101, 1001)]
    assert keys == sorted(keys)
    refs = [layout.parse_key("app", k) for k in keys]
    assert [(r.first, r.last) for r in refs if r] == [(1, 10), (11, 20), (101, 110), (1001, 1010)]
    snap = layout.parse_key("app", layout.snapshot_key("app", BACKUP))
    assert snap is not None and snap.kind == "snapshot"


def test_foreign_and_pointer_keys_are_not_data_objects() -> None:
    assert layout.parse_key("app", layout.current_key("app")) is None
    assert layout.parse_key("app", layout.manifest_key("app")) is None
    assert layout.parse_key("app", layout.snapshot_key("other", BACKUP)) is None
    assert layout.parse_key("app", f"app/{BACKUP}/L0/garbage") is None


def test_backup_ids_sort_by_time() -> None:
    ids = [layout.new_backup_id(t) for t in (1_700_000_000.1, 1_700_000_000.2, 1_800_000_000.0)]
    assert ids == sorted(ids)
    assert abs(layout.backup_time(ids[0]) - 1_700_000_000.1) < 0.002


@given(st.integers(1, 10**11), st.integers(0, 10**6), st.integers(0, 9))
def test_changeset_key_parse_inverts_build(first: int, span: int, level: int) -> None:
    key = layout.changeset_key("db1", BACKUP, level, first, first + span)
    ref = layout.parse_key("db1", key)
    assert ref is not None and (ref.level, ref.first, ref.last) == (level, first, first + span)


# ---------------------------------------------------------------- envelope


@pytest.mark.parametrize("codec", ["zstd", "lz4", "none"])
def test_changeset_round_trip(codec: str) -> None:
    commits = _commits(3)
    data, footer = encode_object(_header(codec=codec), changeset_frames(commits, PS))
    header, frames, footer2 = decode_object(data)
    assert header.codec == codec and footer2 == footer
    back = read_commits(frames, PS)
    assert [(c.seq, c.time, c.db_pages) for c in back] == [(c.seq, c.time, c.db_pages) for c in commits]
    assert [[(p, bytes(i)) for p, i in c.pages] for c in back] == [
        [(p, bytes(i)) for p, i in c.pages] for c in commits
    ]


def test_every_single_byte_flip_is_caught() -> None:
    data, _ = encode_object(_header(), changeset_frames(_commits(2, pages_per=1), PS))
    for i in range(0, len(data), max(1, len(data) // 300)):
        bad = bytearray(data)
        bad[i] ^= 0x40
        with pytest.raises((CorruptionError, FormatVersionError)):
            decode_object(bytes(bad))


def test_truncated_and_extended_objects_are_caught() -> None:
    data, _ = encode_object(_header(), changeset_frames(_commits(2), PS))
    for cut in (1, 5, 100, len(data) - 1):
        with pytest.raises(CorruptionError):
            decode_object(data[:cut])
    with pytest.raises(CorruptionError):
        decode_object(data + b"\0")


def test_newer_format_is_refused_naming_both_versions() -> None:
    data, _ = encode_object(_header(), changeset_frames(_commits(1), PS))
    newer = data[:4] + struct.pack(">H", FORMAT_VERSION + 1) + data[6:]
    with pytest.raises(FormatVersionError) as e:
        decode_object(newer)
    assert str(FORMAT_VERSION + 1) in e.value.message and str(FORMAT_VERSION) in e.value.message
    assert "upgrade" in (e.value.hint or "")


def test_content_hash_binds_identity_and_predecessor() -> None:
    frames = list(changeset_frames(_commits(3), PS))
    _, f1 = encode_object(_header(), frames)
    _, f2 = encode_object(_header(prev="bb" * 32), frames)
    _, f3 = encode_object(_header(first=2, last=4), frames)
    assert len({f1.hash, f2.hash, f3.hash}) == 3


def test_content_hash_ignores_codec_independent_fields_only() -> None:
    frames = list(changeset_frames(_commits(3), PS))
    a, fa = encode_object(_header(), frames)
    b, fb = encode_object(_header(), frames)
    assert a == b and fa.hash == fb.hash  # deterministic: a replayed upload writes the same bytes


def test_chain_link_prefers_compaction_link() -> None:
    data, footer = encode_object(_header(), changeset_frames(_commits(1), PS))
    header = peek_header(data)
    assert chain_link(header, footer) == footer.hash
    compacted = ObjectHeader(**{**header.__dict__, "link": "cc" * 32})
    assert chain_link(compacted, footer) == "cc" * 32


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 40),
            st.lists(st.integers(1, 60), max_size=12, unique=True),
            st.one_of(st.none(), st.integers(1, 40)),
        ),
        min_size=1,
        max_size=8,
    ),
    st.sampled_from(["zstd", "lz4", "none"]),
)
def test_changeset_records_round_trip_property(
    spec: list[tuple[int, list[int], int | None]], codec: str
) -> None:
    commits = [
        CommitRecord(
            seq=i + 1,
            time=float(i),
            db_pages=db_pages,
            pages=[(pg, bytes([pg % 256]) * PS) for pg in sorted(pgs)],
            truncate_to=trunc,
        )
        for i, (db_pages, pgs, trunc) in enumerate(spec)
    ]
    data, _ = encode_object(_header(first=1, last=len(commits), codec=codec), changeset_frames(commits, PS))
    _, frames, _ = decode_object(data)
    back = read_commits(frames, PS)
    assert [(c.seq, c.db_pages, c.truncate_to, [p for p, _ in c.pages]) for c in back] == [
        (c.seq, c.db_pages, c.truncate_to, [p for p, _ in c.pages]) for c in commits
    ]


def test_large_commit_spans_frames() -> None:
    ps = 4096
    pages = [(pg, bytes([pg % 251]) * ps) for pg in range(1, 2500)]
    frames = list(changeset_frames([CommitRecord(1, 1.0, 2499, pages)], ps))
    assert len(frames) >= 2
    back = read_commits(frames, ps)
    assert back[0].pages[-1] == (2499, pages[-1][1])


def test_snapshot_frames_must_match_recorded_size() -> None:
    h = snapshot_header(
        db="app",
        backup=BACKUP,
        page_size=PS,
        db_pages=4,
        commit_time=1.0,
        codec="zstd",
        encrypted=False,
        created=1.0,
    )
    assert list(check_snapshot_frames(iter([b"\0" * PS * 4]), h)) == [b"\0" * PS * 4]
    with pytest.raises(CorruptionError):
        list(check_snapshot_frames(iter([b"\0" * PS * 3]), h))
    with pytest.raises(CorruptionError):
        list(check_snapshot_frames(iter([b"\0" * (PS * 4 + 1)]), h))
