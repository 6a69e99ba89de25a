"""Several destinations on real daemon runs: lock-step fan-out, fallback reads, repair, mirrors, backfill.

Lock-step, as asserted here: the replicator writes each object to the sync destinations in order and
saves its cursor only once every one accepted it.  So while one destination fails, the database backs
off (status says so) and the others get ahead by at most the one object being retried (same key on
every retry), never by acknowledged progress; when the destination heals, everything ships.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import Deployment, OracleError, grade

NO_COMPACTION = "compaction_levels = []\n"


def destinations(dirs: list[Path], modes: list[str] | None = None) -> str:
    """A backend_toml body for several file destinations (the harness adds the first header)."""
    modes = modes or ["sync"] * len(dirs)
    return "\n[[backends]]\n".join(
        f'type = "file"\npath = "{d}"\n' + (f'mode = "{m}"\n' if m != "sync" else "")
        for d, m in zip(dirs, modes, strict=True)
    )


def make(
    tmp_path: Path, n: int, modes: list[str] | None = None, extra: str = ""
) -> tuple[Deployment, list[Path]]:
    dirs = [tmp_path / f"dest{i}" for i in range(n)]
    dep = Deployment(tmp_path / "site", extra_config=NO_COMPACTION + extra)
    dep.backend_toml = destinations(dirs, modes)
    dep.write_config()
    dep.init_db()
    return dep, dirs


@pytest.fixture
def cleanup() -> Iterator[list[Deployment]]:
    deps: list[Deployment] = []
    yield deps
    for d in deps:
        d.cleanup()


def solo(dep: Deployment, dest: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a command against ``dest`` alone, as if it were the only destination."""
    cfg = dep.root / f"solo-{dest.name}.toml"
    cfg.write_text(
        f'[defaults]\n{NO_COMPACTION}\n[[backends]]\ntype = "file"\npath = "{dest}"\n'
        f'\n[[database]]\nname = "{dep.name}"\npath = "{dep.db}"\n'
    )
    return subprocess.run(
        [sys.executable, "-m", "bakelite", *args, "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=dep.env(),
        timeout=120,
    )


def solo_restore(dep: Deployment, dest: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return solo(dep, dest, "restore", "--db", dep.name, "--output", str(out))


def objects(dest: Path) -> dict[str, bytes]:
    root = dest / "app"
    if not root.is_dir():
        return {}
    # Skips a temp file a killed writer left behind (never listed, never an object).
    return {
        str(p.relative_to(dest)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".tmp")
    }


def status(dep: Deployment) -> dict:  # type: ignore[type-arg]
    r = dep.bakelite("status", "--json")
    return json.loads(r.stdout)["databases"][0]  # type: ignore[no-any-return]


def wait_for(cond, timeout: float = 20.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def flip(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x20
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("n", [2, 3])
def test_every_destination_is_restorable_alone(tmp_path: Path, cleanup: list[Deployment], n: int) -> None:
    dep, dests = make(tmp_path, n)
    cleanup.append(dep)
    dep.start_daemon()
    dep.wait_replicating()
    dep.run_writer("--commits", "120", "--blob-every", "9")
    assert dep.stop_daemon() == 0, dep.daemon_log.read_text()
    last = dep.commits()[-1].seq
    contents = [objects(d) for d in dests]
    assert all(c == contents[0] for c in contents), "sync destinations must hold byte-identical objects"
    for d in dests:
        out = tmp_path / f"alone-{d.name}.db"
        r = solo_restore(dep, d, out)
        assert r.returncode == 0, r.stderr
        assert grade(out, dep.commits()).seq == last
    out = tmp_path / "fanout.db"
    assert dep.restore(out).returncode == 0
    assert grade(out, dep.commits()).seq == last


def test_a_failing_destination_backs_off_and_is_never_skipped(
    tmp_path: Path, cleanup: list[Deployment]
) -> None:
    dep, dests = make(tmp_path, 2)
    cleanup.append(dep)
    a, b = dests
    dep.start_daemon()
    dep.wait_replicating()
    dep.run_writer("--commits", "20")
    wait_for(lambda: objects(a) == objects(b) and len(objects(a)) >= 3, what="both caught up")
    # B becomes unwritable: its directory is replaced by a regular file.
    b.rename(tmp_path / "dest1.away")
    b.write_text("not a directory\n")
    dep.run_writer("--commits", "30", "--seed", "2")
    wait_for(lambda: status(dep)["state"] == "backing off", what="backing off")
    st = status(dep)
    assert "dest1" in (st["last_error"] or ""), st
    time.sleep(1.5)
    held_a = set(objects(a))
    held_b = set(objects(tmp_path / "dest1.away"))
    # A is ahead by at most the one object being retried, and the cursor never moved past it.
    assert len(held_a - held_b) <= 1, held_a - held_b
    # B comes back: everything committed during the outage ships to both.
    b.unlink()
    (tmp_path / "dest1.away").rename(b)
    wait_for(lambda: status(dep)["state"] == "replicating", timeout=90, what="recovery")
    assert dep.stop_daemon() == 0
    last = dep.commits()[-1].seq
    for d in (a, b):
        out = tmp_path / f"after-{d.name}.db"
        assert solo_restore(dep, d, out).returncode == 0
        assert grade(out, dep.commits()).seq == last


def test_bit_rot_falls_back_is_named_by_verify_and_healed_by_repair(
    tmp_path: Path, cleanup: list[Deployment]
) -> None:
    dep, dests = make(tmp_path, 2)
    cleanup.append(dep)
    a, b = dests
    dep.start_daemon()
    dep.wait_replicating()
    dep.run_writer("--commits", "60", "--blob-every", "5")
    assert dep.stop_daemon() == 0
    last = dep.commits()[-1].seq
    changesets = sorted(p for p in (a / "app").rglob("L0/*") if p.is_file())
    victim = changesets[len(changesets) // 2]
    flip(victim)
    snap_b = next((b / "app").rglob("snapshot"))
    flip(snap_b, 0.3)

    out = tmp_path / "fallback.db"
    r = dep.restore(out)
    assert r.returncode == 0, r.stderr
    assert grade(out, dep.commits()).seq == last
    assert str(a) in r.stderr  # the fall-through is logged naming the bad destination

    v = dep.bakelite("verify", "--db", "app", "--json")
    assert v.returncode == 1, v.stdout
    problems = json.dumps(json.loads(v.stdout)["databases"][0]["problems"])
    assert f"file://{a}" in problems and f"file://{b}" in problems

    before = {d: objects(d) for d in (a, b)}
    dry = dep.bakelite("repair", "--db", "app", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would heal 2" in dry.stdout
    assert {d: objects(d) for d in (a, b)} == before
    fix = dep.bakelite("repair", "--db", "app", "--json")
    assert fix.returncode == 0, fix.stdout + fix.stderr
    assert sorted(h["action"] for h in json.loads(fix.stdout)["databases"][0]["heals"]) == ["healed"] * 2
    assert objects(a) == objects(b)
    assert dep.bakelite("verify", "--db", "app").returncode == 0
    assert "all healthy" in dep.bakelite("repair", "--db", "app").stdout


def test_an_object_bad_on_every_destination_fails_loudly(tmp_path: Path, cleanup: list[Deployment]) -> None:
    dep, dests = make(tmp_path, 2)
    cleanup.append(dep)
    a, b = dests
    dep.start_daemon()
    dep.wait_replicating()
    dep.run_writer("--commits", "30")
    assert dep.stop_daemon() == 0
    rel = sorted(p.relative_to(a) for p in (a / "app").rglob("L0/*") if p.is_file())[0]
    flip(a / rel)
    flip(b / rel, 0.6)
    out = tmp_path / "x.db"
    r = dep.restore(out)
    assert r.returncode == 1 and "no destination holds a good copy" in r.stderr, r.stderr
    assert not out.exists()
    rep = dep.bakelite("repair", "--db", "app")
    assert rep.returncode == 1 and "UNRECOVERABLE" in rep.stdout


def test_async_mirror_down_then_revived_catches_up_and_is_always_a_restorable_prefix(
    tmp_path: Path, cleanup: list[Deployment]
) -> None:
    dep, dests = make(tmp_path, 2, ["sync", "async"], extra='mirror_interval = "1s"\n')
    cleanup.append(dep)
    primary, mirror = dests
    mirror.mkdir()
    dep.start_daemon()
    dep.wait_replicating()
    dep.run_writer("--commits", "30")
    wait_for(lambda: "in sync" in dep.bakelite("status").stdout, what="mirror in sync")

    # The mirror goes down; live replication carries on regardless.
    mirror.rename(tmp_path / "mirror.away")
    mirror.write_text("down\n")
    writer = dep.run_writer("--commits", "150", "--interval", "0.01", "--seed", "4", background=True)
    wait_for(lambda: "last error" in dep.bakelite("status").stdout, what="mirror error shown")
    wait_for(lambda: status(dep)["state"] == "replicating", what="live replication unaffected")
    writer.communicate(timeout=120)
    wait_for(lambda: status(dep)["lag_seconds"] == 0.0, what="primary caught up")
    # The daemon is killed while the mirror is down; its mirror line must then read stale.
    dep.stop_daemon(signal.SIGKILL)
    assert "(stale)" in dep.bakelite("status").stdout

    mirror.unlink()
    (tmp_path / "mirror.away").rename(mirror)
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        i = 0
        while not stop.is_set():
            out = tmp_path / f"sample-{i}.db"
            r = solo_restore(dep, mirror, out)
            assert r.returncode == 0, r.stderr
            try:
                samples.append(grade(out, dep.commits()).seq)
            except OracleError as e:  # pragma: no cover - the failure this test exists for
                raise AssertionError(f"mirror restore is not a valid prefix: {e}") from e
            i += 1

    sampler = threading.Thread(target=sample)
    dep.start_daemon()
    sampler.start()
    try:
        dep.wait_replicating()
        wait_for(lambda: "in sync" in dep.bakelite("status").stdout, timeout=30, what="mirror caught up")
    finally:
        stop.set()
        sampler.join(timeout=60)
    mirrors = status(dep)["mirrors"]
    assert mirrors[0]["in_sync"] and mirrors[0]["behind_objects"] == 0 and not mirrors[0]["stale"]
    assert samples and samples == sorted(samples)
    last = dep.commits()[-1].seq
    out = tmp_path / "mirror-final.db"
    assert solo_restore(dep, mirror, out).returncode == 0
    assert grade(out, dep.commits()).seq == last
    assert dep.stop_daemon() == 0
    assert set(objects(mirror)) <= set(objects(primary)) | {"app/CURRENT"}


@pytest.mark.parametrize("policy", ["backfill", "refuse", "warn"])
def test_a_destination_added_later(tmp_path: Path, cleanup: list[Deployment], policy: str) -> None:
    dep, dests = make(tmp_path, 1, extra=f'on_incomplete_destination = "{policy}"\n')
    cleanup.append(dep)
    a, b = dests[0], tmp_path / "added"
    dep.start_daemon()
    dep.wait_replicating()
    dep.run_writer("--commits", "25")
    assert dep.stop_daemon() == 0
    dep.backend_toml = destinations([a, b])
    dep.write_config()
    dep.start_daemon()
    if policy == "refuse":
        wait_for(lambda: status(dep)["state"] == "backing off", what="refusal")
        assert "missing part of the backup chain" in status(dep)["last_error"]
        assert objects(b) == {}
        return
    dep.wait_replicating()
    dep.run_writer("--commits", "10", "--seed", "7")
    assert dep.stop_daemon() == 0
    out = tmp_path / "added.db"
    r = solo_restore(dep, b, out)
    if policy == "backfill":
        assert r.returncode == 0, r.stderr
        assert grade(out, dep.commits()).seq == dep.commits()[-1].seq
        assert objects(a) == objects(b)
    else:
        assert "incomplete destination" in dep.daemon_log.read_text()
        assert r.returncode != 0 or grade(out, dep.commits()).seq < dep.commits()[-1].seq
