"""The adversities of the correctness bar, each a scenario graded by the oracle.

Every scenario takes a scratch directory, a seed and a scale (1.0 = the bounded CI size), runs the
marked workload against a real daemon subprocess under one adversity, restores, and grades every
restore with ``harness.grade``.  It returns figures for the report and raises on any violation.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from harness import Commit, Deployment, OracleError, grade, rfc3339  # noqa: E402

Figures = dict[str, Any]
Scenario = Callable[[Path, int, float], Figures]


def _deployment(root: Path, extra: str = "", **kw: str) -> Deployment:
    shutil.rmtree(root, ignore_errors=True)
    dep = Deployment(root, extra_config=extra, **kw)
    dep.init_db()
    return dep


def _writer_args(rng: random.Random, commits: int, interval: float = 0.002) -> list[str]:
    return [
        "--commits", str(commits),
        "--interval", str(interval),
        "--seed", str(rng.randrange(1 << 30)),
        "--blob-every", str(rng.choice([3, 5, 11])),
        "--vacuum-every", str(rng.choice([0, 60, 97])),
        "--rollback-every", str(rng.choice([0, 43])),
        "--autocheckpoint", str(rng.choice([0, 20, 100, 1000])),
    ]  # fmt: skip


def _restore_and_grade(dep: Deployment, log: list[Commit] | None, name: str, *extra: str) -> int:
    """Restore and grade; with ``log`` None the running writer's log is re-read as needed."""
    out = dep.root / f"restore-{name}.db"
    out.unlink(missing_ok=True)
    r = dep.restore(out, *extra)
    if r.returncode != 0:
        raise OracleError(f"restore {name} failed: {r.stderr.strip()}")
    return grade(out, dep.commits if log is None else log).seq


def _pitr_sweep(dep: Deployment, log: list[Commit], rng: random.Random, samples: int) -> int:
    """Restores at increasing random times land on non-decreasing committed states."""
    if not log:
        return 0
    # Sample inside the restorable span: commits made before the first backup (a daemon that
    # started late or crashed in its first snapshot) have no restore point of their own.
    listing = json.loads(dep.bakelite("list", "--db", dep.name, "--json", check=True).stdout)
    firsts = [b["first_time"] for b in listing["backups"] if b.get("first_time")]
    oldest = min(datetime.fromisoformat(f.replace("Z", "+00:00")).timestamp() for f in firsts)
    start = max(log[0].t, oldest + 0.002)
    times = sorted(rng.uniform(start, log[-1].t + 0.5) for _ in range(samples))
    landed = [
        _restore_and_grade(dep, log, f"pitr{i}", "--timestamp", rfc3339(t)) for i, t in enumerate(times)
    ]
    if landed != sorted(landed):
        raise OracleError(f"point-in-time targets went backwards: {landed}")
    return len(landed)


def _finish_exact(dep: Deployment, rng: random.Random, samples: int = 3) -> Figures:
    """Clean stop, then the latest restore must be exactly the last commit."""
    code = dep.stop_daemon()
    if code != 0:
        raise OracleError(f"daemon exited {code} on SIGTERM:\n{dep.daemon_log.read_text()[-3000:]}")
    log = dep.commits()
    seq = _restore_and_grade(dep, log, "latest")
    if seq != log[-1].seq:
        raise OracleError(f"after a clean stop the restore is at {seq}, the last commit was {log[-1].seq}")
    return {"commits": len(log), "restored": seq, "pitr_restores": _pitr_sweep(dep, log, rng, samples)}


# ---------------------------------------------------------------- the adversities


def clean_drain(root: Path, seed: int, scale: float) -> Figures:
    """Randomized workload, quiescent drain, exact restore; PITR sweep."""
    rng = random.Random(seed)
    dep = _deployment(root)
    try:
        dep.start_daemon()
        dep.wait_replicating()
        dep.run_writer(*_writer_args(rng, int(300 * scale)))
        return _finish_exact(dep, rng, samples=int(4 * scale) + 1)
    finally:
        dep.cleanup()


def unsynced_window(root: Path, seed: int, scale: float) -> Figures:
    """Commits after the last sync when the daemon dies: the durability floor holds."""
    rng = random.Random(seed)
    # A long batch delay keeps a window of committed-but-unshipped transactions open.
    dep = _deployment(root, debounce="2s", max_batch_delay="3s")
    try:
        dep.start_daemon()
        dep.wait_replicating()
        writer = dep.run_writer(*_writer_args(rng, int(1200 * scale), 0.003), background=True)
        floors = []
        for i in range(int(3 * scale) + 1):
            time.sleep(rng.uniform(0.5, 1.5))
            floor = _restore_and_grade(dep, None, f"floor{i}")  # what is durable right now
            floors.append(floor)
        dep.stop_daemon(signal.SIGKILL)
        after_kill = _restore_and_grade(dep, None, "after-kill")
        if after_kill < floors[-1]:
            raise OracleError(f"durability floor broken: {after_kill} < {floors[-1]} after SIGKILL")
        dep.start_daemon()
        dep.wait_replicating()
        writer.communicate(timeout=600)
        figures = _finish_exact(dep, rng)
        figures.update(floor=floors[-1], after_kill=after_kill)
        return figures
    finally:
        dep.cleanup()


def sigkill_under_load(root: Path, seed: int, scale: float) -> Figures:
    """A real daemon SIGKILLed mid-write several times, resumed each time."""
    rng = random.Random(seed)
    dep = _deployment(root)
    kills = int(3 * scale) + 1
    try:
        dep.start_daemon()
        dep.wait_replicating()
        writer = dep.run_writer(*_writer_args(rng, int(1500 * scale), 0.002), background=True)
        for i in range(kills):
            time.sleep(rng.uniform(0.3, 1.2))
            dep.stop_daemon(signal.SIGKILL)
            _restore_and_grade(dep, None, f"killed{i}")
            time.sleep(rng.uniform(0.0, 0.5))
            dep.start_daemon()
            dep.wait_replicating()
        writer.communicate(timeout=600)
        figures = _finish_exact(dep, rng)
        figures["kills"] = kills
        return figures
    finally:
        dep.cleanup()


def transient_faults(root: Path, seed: int, scale: float) -> Figures:
    """Errors, timeouts, partial writes and lagging listings injected at the backend."""
    rng = random.Random(seed)
    dep = _deployment(root)
    plan = (
        "put_stream:transient%15,timeout%8,partial%5;put:transient%15,timeout%10;"
        "get:transient%10;get_range:transient%10;stat:transient%10;list:transient%10,lag%20"
    )
    try:
        dep.start_faulty_daemon(plan, seed)
        dep.wait_replicating()
        dep.run_writer(*_writer_args(rng, int(400 * scale), 0.003))
        time.sleep(1.0)
        return _finish_exact(dep, rng)
    finally:
        dep.cleanup()


def full_outage(root: Path, seed: int, scale: float) -> Figures:
    """The backend is unreachable for a while under write load; replication catches up."""
    rng = random.Random(seed)
    dep = _deployment(root)
    outage = dep.root / "outage"
    try:
        dep.start_faulty_daemon("", seed, outage)
        dep.wait_replicating()
        writer = dep.run_writer(*_writer_args(rng, int(1000 * scale), 0.003), background=True)
        time.sleep(0.5)
        outage.touch()
        time.sleep(2.0 * scale)
        outage.unlink()
        writer.communicate(timeout=600)
        time.sleep(1.0)
        return _finish_exact(dep, rng)
    finally:
        outage.unlink(missing_ok=True)
        dep.cleanup()


def _crash_at(plan: str) -> Scenario:
    def scenario(root: Path, seed: int, scale: float) -> Figures:
        rng = random.Random(seed)
        dep = _deployment(root)
        try:
            dep.start_faulty_daemon(plan, seed)
            writer = dep.run_writer(*_writer_args(rng, int(400 * scale), 0.003), background=True)
            assert dep.daemon is not None
            code = dep.daemon.wait(timeout=120)
            if code != -signal.SIGKILL:
                raise OracleError(f"the injected crash did not happen (exit {code})")
            dep.daemon = None
            if dep.commits() and (dep.backups / dep.name).exists():
                try:
                    _restore_and_grade(dep, None, "after-crash")
                except OracleError as e:
                    # Nothing restorable yet (crashed in the very first snapshot) is fine; anything
                    # else restored must be an exact committed state (checked by grade).
                    if "no backup" not in str(e).lower() and "nothing" not in str(e).lower():
                        raise
            dep.start_daemon()
            dep.wait_replicating()
            writer.communicate(timeout=600)
            figures = _finish_exact(dep, rng)
            figures["plan"] = plan
            return figures
        finally:
            dep.cleanup()

    scenario.__doc__ = f"Crash injected at {plan}, then resumed"
    return scenario


# Every attempt of the first snapshot (a WAL restart under it retries it, up to three times,
# before two chunks are out) is killed mid-upload.
crash_mid_snapshot = _crash_at("put_stream:crashmid,crashmid,crashmid")
crash_after_object_write = _crash_at("put_stream:crashafter@4")
crash_before_object_write = _crash_at("put_stream:crash@6")
crash_after_pointer_write = _crash_at("put:crashafter@1")


def red_path(root: Path, seed: int, scale: float) -> Figures:
    """Corrupt the replica four ways; restore must refuse each (a passing check could fail)."""
    rng = random.Random(seed)
    dep = _deployment(root)
    other = _deployment(root / "other-db", name="other")
    caught: dict[str, str] = {}
    try:
        for d in (dep, other):
            d.start_daemon()
            d.wait_replicating()
            d.run_writer(*_writer_args(rng, 120, 0.01), "--blob-every", "2")
            assert d.stop_daemon() == 0
        base = dep.backups / dep.name
        objs = sorted(p for p in base.rglob("*") if p.is_file() and "/L0/" in str(p))
        foreign = sorted(
            p for p in (other.backups / other.name).rglob("*") if p.is_file() and "/L0/" in str(p)
        )
        if len(objs) < 3 or not foreign:
            raise OracleError(f"red path needs at least 3 change-sets, got {len(objs)}")
        log = dep.commits()
        pristine = {p: p.read_bytes() for p in objs}

        def attempt(name: str) -> None:
            try:
                _restore_and_grade(dep, log, f"red-{name}")
            except OracleError as e:
                caught[name] = str(e).splitlines()[0][:160]
            else:
                raise OracleError(f"corruption '{name}' was NOT caught: a restore passed the oracle")
            finally:
                for p, data in pristine.items():
                    p.write_bytes(data)

        victim = objs[len(objs) // 2]
        data = bytearray(pristine[victim])
        data[rng.randrange(len(data))] ^= 0x10
        victim.write_bytes(bytes(data))
        attempt("flip-a-byte")
        victim.unlink()
        attempt("drop-an-object")
        a, b = objs[1], objs[2]
        a.write_bytes(pristine[b])
        b.write_bytes(pristine[a])
        attempt("reorder-two")
        victim.write_bytes(foreign[len(foreign) // 2].read_bytes())
        attempt("substitute-from-another-database")
        # And the untouched replica still restores exactly.
        if _restore_and_grade(dep, log, "pristine") != log[-1].seq:
            raise OracleError("the pristine replica no longer restores exactly")
        return {"caught": caught}
    finally:
        dep.cleanup()
        other.cleanup()


def _reencrypt_with_crash(dep: Deployment, rng: random.Random, *extra: str) -> None:
    """Run ``bakelite reencrypt``, SIGKILL it part-way, then rerun it to completion."""
    args = [sys.executable, "-m", "bakelite", "reencrypt", "--db", dep.name, "--config", str(dep.config)]
    proc = subprocess.Popen([*args, *extra], env=dep.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(rng.uniform(0.3, 0.8))
    proc.kill()
    proc.communicate()
    r = subprocess.run([*args, *extra], env=dep.env(), capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise OracleError(f"reencrypt rerun failed: {r.stderr.strip()}")


def encryption_lifecycle(root: Path, seed: int, scale: float) -> Figures:
    """Plaintext history encrypted in place, a daemon killed under load, then a key rotation, each
    rewrite crashed part-way and rerun; every restore graded, old points in time included."""
    rng = random.Random(seed)
    dep = _deployment(root)
    key_a, key_b = root / "key-a.txt", root / "key-b.txt"
    try:
        dep.start_daemon()
        dep.wait_replicating()
        dep.run_writer(*_writer_args(rng, int(200 * scale), 0.003))
        assert dep.stop_daemon() == 0
        for key in (key_a, key_b):
            subprocess.run([sys.executable, "-m", "bakelite", "keygen", "--output", str(key)], check=True)
        plain_config = dep.config.read_text()
        dep.config.write_text(
            plain_config.replace(
                "[[backends]]",
                f'[defaults.encryption]\nkey_file = "{key_a}"\nrequire_encrypted = false\n\n[[backends]]',
            )
        )
        _reencrypt_with_crash(dep, rng)  # enable: plaintext -> key A
        dep.start_daemon()
        dep.wait_replicating()
        writer = dep.run_writer(*_writer_args(rng, int(600 * scale), 0.003), background=True)
        time.sleep(rng.uniform(0.5, 1.5))
        dep.stop_daemon(signal.SIGKILL)
        dep.start_daemon()
        dep.wait_replicating()
        writer.communicate(timeout=600)
        assert dep.stop_daemon() == 0
        dep.config.write_text(
            plain_config.replace(
                "[[backends]]", f'[defaults.encryption]\nkey_file = "{key_b}"\n\n[[backends]]'
            )
        )
        _reencrypt_with_crash(dep, rng, "--old-key-file", str(key_a))  # rotate: A -> B
        for obj in (dep.backups / dep.name).rglob("*"):
            if obj.is_file() and b"SQLite format 3" in obj.read_bytes():
                raise OracleError(f"plaintext database bytes left in {obj}")
        dep.start_daemon()
        dep.wait_replicating()
        return _finish_exact(dep, rng, samples=4)
    finally:
        dep.cleanup()


def multi_destination_faults(root: Path, seed: int, scale: float) -> Figures:
    """Three destinations in lock-step, each with its own faults; each restorable alone, rot survived."""
    rng = random.Random(seed)
    dirs = [root / f"dest{i}" for i in range(3)]
    dep = _deployment(root / "site")
    dep.backend_toml = "\n[[backends]]\n".join(f'type = "file"\npath = "{d}"\n' for d in dirs)
    dep.write_config()
    plans = [
        "put_stream:transient%3",  # the primary: nearly healthy
        "put_stream:transient%15,timeout%8,partial%8;put:transient%15,timeout%10",  # flaky writes
        "put_stream:timeout%10;put:timeout%10;list:lag%30;stat:transient%10",  # slow, stale listings
    ]
    try:
        dep.start_faulty_daemon("|".join(plans), seed)
        dep.wait_replicating()
        dep.run_writer(*_writer_args(rng, int(400 * scale), 0.003))
        time.sleep(1.0)
        figures = _finish_exact(dep, rng, samples=2)
        log = dep.commits()
        # Lock-step: every destination alone restores the last commit exactly.
        alone = {}
        for d in dirs:
            cfg = dep.root / f"alone-{d.name}.toml"
            cfg.write_text(
                dep.config.read_text().split("[[backends]]")[0]
                + f'[[backends]]\ntype = "file"\npath = "{d}"\n'
                + f'\n[[database]]\nname = "{dep.name}"\npath = "{dep.db}"\n'
            )
            out = dep.root / f"alone-{d.name}.db"
            r = subprocess.run(
                [sys.executable, "-m", "bakelite", "restore", "--db", dep.name, "--output", str(out),
                 "--config", str(cfg)],
                capture_output=True, text=True, env=dep.env(), timeout=300,
            )  # fmt: skip
            if r.returncode != 0:
                raise OracleError(f"{d.name} alone does not restore: {r.stderr.strip()}")
            alone[d.name] = grade(out, log).seq
            if alone[d.name] != log[-1].seq:
                raise OracleError(f"{d.name} alone restores to {alone[d.name]}, not {log[-1].seq}")
        # Asymmetric rot: a different object flipped on each of two destinations; the fan-out
        # restore still lands exactly, reading each object from a healthy sibling.
        objs = sorted(p.relative_to(dirs[0]) for p in dirs[0].rglob("*") if p.is_file() and "/L0/" in str(p))
        for d, rel in zip(dirs[:2], rng.sample(objs, 2) if len(objs) >= 2 else objs, strict=False):
            data = bytearray((d / rel).read_bytes())
            data[rng.randrange(len(data))] ^= 0x08
            (d / rel).write_bytes(bytes(data))
        if _restore_and_grade(dep, log, "rotted") != log[-1].seq:
            raise OracleError("the fan-out restore with rotted copies is not exact")
        figures["alone"] = alone
        figures["destinations"] = len(dirs)
        return figures
    finally:
        dep.cleanup()


# Small windows so compaction and pruning run many times within a bounded scenario.
_COMPACTION = (
    'compaction_levels = ["1s", "3s"]\ncompaction_keep_recent = 4\n'
    "max_segments_per_snapshot = 60\nmax_backups = 2\n"
)


def _count_objects(dep: Deployment) -> int:
    base = dep.backups / dep.name
    return sum(1 for p in base.rglob("*") if p.is_file()) if base.exists() else 0


def _compaction_crash(plan: str) -> Scenario:
    def scenario(root: Path, seed: int, scale: float) -> Figures:
        rng = random.Random(seed)
        dep = _deployment(root, _COMPACTION)
        try:
            dep.start_faulty_daemon(plan, seed)
            dep.wait_replicating()
            writer = dep.run_writer(*_writer_args(rng, int(1500 * scale), 0.004), background=True)
            assert dep.daemon is not None
            code = dep.daemon.wait(timeout=300)
            if code != -signal.SIGKILL:
                raise OracleError(f"the injected crash did not happen (exit {code})")
            dep.daemon = None
            # Killed mid-compaction or mid-prune: what is stored must restore to a committed state.
            after_crash = _restore_and_grade(dep, None, "after-crash")
            dep.start_daemon()
            dep.wait_replicating()
            writer.communicate(timeout=600)
            time.sleep(4.0)  # let a compaction pass run over the tail
            figures = _finish_exact(dep, rng, samples=int(6 * scale) + 2)
            figures.update(plan=plan, after_crash=after_crash, objects=_count_objects(dep))
            return figures
        finally:
            dep.cleanup()

    scenario.__doc__ = f"Crash injected at {plan} during compaction/pruning, then resumed"
    return scenario


crash_mid_compaction_delete = _compaction_crash("delete:crashafter@3")
crash_mid_compaction_write = _compaction_crash("put_stream:crash%4,ok")
crash_mid_prune = _compaction_crash("delete:crash@40")


def compaction_bounded(root: Path, seed: int, scale: float) -> Figures:
    """A long write workload with small windows: object count bounded, retained targets exact."""
    rng = random.Random(seed)
    dep = _deployment(root, _COMPACTION)
    try:
        dep.start_daemon()
        dep.wait_replicating()
        writer = dep.run_writer(*_writer_args(rng, int(3000 * scale), 0.004), background=True)
        peak = 0
        while writer.poll() is None:
            time.sleep(0.5)
            peak = max(peak, _count_objects(dep))
        time.sleep(4.0)
        figures = _finish_exact(dep, rng, samples=int(8 * scale) + 2)
        shipped = figures["commits"]
        if peak > 400:
            raise OracleError(f"object count not bounded: peak {peak} for {shipped} commits")
        figures.update(peak_objects=peak, objects=_count_objects(dep))
        return figures
    finally:
        dep.cleanup()


def worm_backend(root: Path, seed: int, scale: float) -> Figures:
    """Every delete refused (Object Lock): replication goes on, no crash loop, exact restore."""
    rng = random.Random(seed)
    dep = _deployment(root, _COMPACTION)
    try:
        dep.start_faulty_daemon("delete:refuse%100", seed)
        dep.wait_replicating()
        dep.run_writer(*_writer_args(rng, int(800 * scale), 0.004))
        time.sleep(3.0)
        assert dep.daemon is not None
        if dep.daemon.poll() is not None:
            raise OracleError(f"daemon died on refused deletes:\n{dep.daemon_log.read_text()[-2000:]}")
        figures = _finish_exact(dep, rng)
        refusals = dep.daemon_log.read_text().count("refused")
        figures.update(refusal_warnings=refusals)
        return figures
    finally:
        dep.cleanup()


SCENARIOS: dict[str, Scenario] = {
    "clean_drain": clean_drain,
    "unsynced_window": unsynced_window,
    "sigkill_under_load": sigkill_under_load,
    "transient_faults": transient_faults,
    "full_outage": full_outage,
    "crash_mid_snapshot": crash_mid_snapshot,
    "crash_before_object_write": crash_before_object_write,
    "crash_after_object_write": crash_after_object_write,
    "crash_after_pointer_write": crash_after_pointer_write,
    "red_path": red_path,
    "encryption_lifecycle": encryption_lifecycle,
    "multi_destination_faults": multi_destination_faults,
    "compaction_bounded": compaction_bounded,
    "crash_mid_compaction_delete": crash_mid_compaction_delete,
    "crash_mid_compaction_write": crash_mid_compaction_write,
    "crash_mid_prune": crash_mid_prune,
    "worm_backend": worm_backend,
}


def env_seed(default: int) -> int:
    """``BAKELITE_TORTURE_SEED`` if set, else ``default``."""
    return int(os.environ.get("BAKELITE_TORTURE_SEED", default))
