"""``bakelite verify``: shallow catches damaged, missing, reordered and substituted objects by name;
only ``--deep`` catches a faithfully stored but corrupt database image; every run leaves a marker.

Replicas are built without a daemon (``tests/replica_builder.py``) and damaged on disk.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bakelite.cli.main import main
from bakelite.daemon.statusfile import read_marker
from bakelite.format import layout
from bakelite.storage.file import FileStorage
from replica_builder import ReplicaBuilder, Workload

T0 = 1_780_000_000.0


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No host env files or variables; logging and os.environ restored afterwards."""
    saved = dict(os.environ)
    monkeypatch.setenv("BAKELITE_ENV_FILE", os.devnull)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BAKELITE_CONFIG", raising=False)
    monkeypatch.delenv("BAKELITE_LOG", raising=False)
    handlers = list(logging.getLogger().handlers)
    yield
    os.environ.clear()
    os.environ.update(saved)
    for h in list(logging.getLogger().handlers):
        if h not in handlers:
            logging.getLogger().removeHandler(h)


@dataclass
class Site:
    """A replica of database ``app`` with two backups, and a config naming it."""

    root: Path
    config: Path
    storage: FileStorage
    backups: list[str]
    changesets: dict[str, list[str]]  # backup -> change-set keys in seq order
    snapshots: dict[str, str]

    def path(self, key: str) -> Path:
        return self.root / "backups" / key

    def verify(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
        code = main(["verify", "--config", str(self.config), *args])
        out, err = capsys.readouterr()
        return code, out + err


def write_config(root: Path, name: str = "app", db_dir: Path | None = None) -> Path:
    config = root / "bakelite.toml"
    config.write_text(
        f'[[database]]\nname = "{name}"\npath = "{(db_dir or root) / (name + ".db")}"\n'
        f'  [[database.backends]]\n  type = "file"\n  path = "{root / "backups"}"\n'
    )
    return config


def build_site(root: Path) -> Site:
    root.mkdir(parents=True, exist_ok=True)
    storage = FileStorage(root / "backups")
    rng = random.Random(7)
    work = Workload(root / "src.db")
    rb = ReplicaBuilder(storage, "app")
    t = T0
    backups, changesets, snapshots = [], {}, {}
    for b in range(2):
        state = work.run("CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, body BLOB)")
        backup = rb.new_backup(state, t)
        backups.append(backup)
        snapshots[backup] = layout.snapshot_key("app", backup)
        changesets[backup] = []
        for i in range(1, 13):
            t += 1
            rb.commit(work.run(("INSERT INTO items(body) VALUES (?)", (rng.randbytes(1500 + b),))), t)
            if i % 3 == 0:
                key = rb.flush()
                assert key is not None
                changesets[backup].append(key)
        t += 100
    work.close()
    storage.put(layout.current_key("app"), backups[-1].encode() + b"\n")
    return Site(root, write_config(root), storage, backups, changesets, snapshots)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return build_site(tmp_path / "site")


def problems(out: str) -> list[str]:
    return [line.removeprefix("  PROBLEM ") for line in out.splitlines() if line.startswith("  PROBLEM ")]


def test_clean_replica_passes_and_records_a_marker(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = site.verify(capsys)
    assert code == 0, out
    assert out.startswith("app: clean (shallow): 2 backup(s), 10 object(s)")
    marker = read_marker(site.root / "app.db", "app")
    assert (
        marker is not None and marker.clean and marker.mode == "shallow" and marker.last_clean == marker.when
    )


def test_truncated_object_is_named(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    key = site.changesets[site.backups[0]][1]
    path = site.path(key)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    code, out = site.verify(capsys)
    assert code == 1
    found = problems(out)
    assert len(found) == 1 and found[0].startswith(f"{key}: ") and "truncated" in found[0], out


def test_bit_flip_is_named(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    key = site.snapshots[site.backups[1]]
    path = site.path(key)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    code, out = site.verify(capsys)
    assert code == 1
    found = problems(out)
    assert len(found) == 1 and found[0].startswith(f"{key}: ") and "CRC-32C" in found[0], out


def test_deleted_change_set_is_named_with_what_it_strands(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    backup = site.backups[0]
    site.path(site.changesets[backup][1]).unlink()
    code, out = site.verify(capsys)
    assert code == 1
    assert problems(out) == [
        f"app/{backup}/: the change-set(s) for seqs 4..6 are missing: restorable only up to seq 3, "
        "2 later object(s) cannot be applied"
    ]


def test_deleted_snapshot_is_named(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    backup = site.backups[0]
    site.path(site.snapshots[backup]).unlink()
    code, out = site.verify(capsys)
    assert code == 1
    assert problems(out) == [f"app/{backup}/: no snapshot: its 4 change-set(s) cannot be restored"]


def test_reordered_objects_are_both_named(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = site.changesets[site.backups[1]][1:3]
    a, b = site.path(first).read_bytes(), site.path(second).read_bytes()
    site.path(first).write_bytes(b)
    site.path(second).write_bytes(a)
    code, out = site.verify(capsys)
    assert code == 1
    found = problems(out)
    assert [p.split(": ", 1)[0] for p in found] == sorted([first, second])
    assert all("is not what its key says" in p for p in found), out


def test_substituted_change_set_breaks_the_lineage(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Same database, backup id and seqs (so its identity matches its key and its hashes are
    # valid), but from another history: only the lineage chain can tell.
    backup = site.backups[0]
    other = FileStorage(tmp_path / "other")
    rb = ReplicaBuilder(other, "app")
    work = Workload(tmp_path / "other.db")
    rb.new_backup(work.run("CREATE TABLE x(y)"), T0, backup=backup)
    for i in range(1, 7):
        rb.commit(work.run(f"INSERT INTO x VALUES ({i})"), T0 + i)
        if i % 3 == 0:
            rb.flush()
    work.close()
    key = site.changesets[backup][1]
    assert key in rb.keys
    site.path(key).write_bytes(other.get(key))
    code, out = site.verify(capsys)
    assert code == 1
    found = problems(out)
    assert len(found) == 1 and found[0].startswith(f"{key}: does not follow its predecessor"), out


def test_current_rollback_is_a_warning(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.storage.put(layout.current_key("app"), site.backups[0].encode() + b"\n")
    code, out = site.verify(capsys)
    assert code == 0
    assert (
        f"warning: CURRENT names backup {site.backups[0]}, but the newest restore point is in backup" in out
    )


def test_json_report_and_marker_keep_the_last_clean_run(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    assert site.verify(capsys, "--deep")[0] == 0
    clean = read_marker(site.root / "app.db", "app")
    assert clean is not None and clean.mode == "deep"
    key = site.changesets[site.backups[0]][0]
    site.path(key).write_bytes(b"BKLT")
    code, out = site.verify(capsys, "--json")
    assert code == 1
    doc = json.loads(out[: out.rindex("}") + 1])
    (db,) = doc["databases"]
    assert (doc["mode"], doc["clean"], db["clean"], db["exit_code"]) == ("shallow", False, False, 1)
    assert db["problems"][0]["key"] == key
    assert [b["clean"] for b in db["backups"]] == [False, True]
    marker = read_marker(site.root / "app.db", "app")
    assert marker is not None and not marker.clean and marker.problems[0].startswith(key)
    assert (marker.last_clean, marker.last_clean_mode) == (clean.when, "deep")
    # status shows the failed verify beneath the row.
    assert main(["status", "--config", str(site.config)]) == 0
    assert f"verify: PROBLEMS (shallow, 0s ago): {key}: " in capsys.readouterr().out


def test_corrupt_image_passes_shallow_and_fails_deep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    work = Workload(root / "src.db")
    state = work.run(
        "CREATE TABLE items(id INTEGER PRIMARY KEY, body TEXT)",
        *[f"INSERT INTO items(body) VALUES ('{f'row {i} ' * 40}')" for i in range(200)],
    )
    work.close()
    page_size = 4096
    assert len(state) // page_size >= 10
    image = bytearray(state)
    # Scramble a leaf page of the table: the envelope faithfully stores whatever bytes it is given.
    victim = (len(state) // page_size - 2) * page_size
    image[victim : victim + 1] = b"\x00"  # an invalid b-tree page type
    image[victim + 200 : victim + 600] = random.Random(1).randbytes(400)
    storage = FileStorage(root / "backups")
    rb = ReplicaBuilder(storage, "app")
    backup = rb.new_backup(bytes(image), T0)
    storage.put(layout.current_key("app"), backup.encode() + b"\n")
    config = write_config(root)
    assert main(["verify", "--config", str(config)]) == 0, capsys.readouterr()
    capsys.readouterr()
    code = main(["verify", "--deep", "--config", str(config)])
    out = capsys.readouterr().out
    assert code == 1
    found = problems(out)
    assert len(found) == 1 and found[0].startswith(f"app/{backup}/: restore drill failed: "), out
    assert "integrity_check" in found[0]
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("bakelite-verify-*/*.db"))


def test_missing_replica_and_unwritable_marker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    # The database's directory does not exist here (verify from a host without the data volume).
    config = write_config(root, db_dir=tmp_path / "not-mounted")
    code = main(["verify", "--config", str(config)])
    out = capsys.readouterr().out
    assert code == 1
    assert "PROBLEM app/: no backup on file://" in out
    assert "warning: could not write the verify marker beside" in out


def test_two_databases_one_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = build_site(tmp_path / "site")
    # Another database's objects copied under "copy/": each one's identity still says "app".
    shutil.copytree(site.root / "backups" / "app", site.root / "backups" / "copy")
    original = site.config.read_text()
    site.config.write_text(original + original.replace('"app', '"copy').replace("app.db", "copy.db"))
    code, out = site.verify(capsys)
    assert code == 1
    assert out.startswith("app: clean (shallow)")
    assert "copy: 10 PROBLEMS (shallow)" in out and "is not what its key says" in out
