"""Fleet: N small databases under one replicator process.

For each N: generate N small WAL-mode databases (a few hundred KiB each, spread over a handful of
shard directories the way a per-tenant service lays them out), start one replicator for all of
them and measure, from ``/proc/<pid>``:

- **bootstrap**: start → every database has a first restorable backup (bakelite: its cursor file
  exists; Litestream: the first LTX file is in its replica);
- **idle CPU**: ``utime + stime`` over 60 s with no writes, as % of one core, from 40 s after the
  last bootstrap (past the first safety poll);
- **RSS** (``VmRSS`` at the end of the idle window) and **open descriptors** (``/proc/<pid>/fd``);
- **lag with 1% active**: a writer process commits to 1% of the databases (one commit per database
  per second, staggered) and each commit's time until it is durable on the replica is recorded
  through inotify on the cursor files (bakelite) or on the ``ltx/0`` directories (Litestream).

One contender's fleets of every N run at once, to share the idle minute: each bootstraps, and later
writes, with the others paused by SIGSTOP; they idle side by side, each process's CPU read apart,
with the other contender's fleets paused.

Run alone: ``python bench/fleet.py --counts 100,1000 --runs 1`` (``--keep`` keeps the work tree).
The writer is this file too: ``python bench/fleet.py write OUT.json INTERVAL DURATION DB...``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import (
    PY,
    Proc,
    Table,
    fresh_dir,
    litestream_bin,
    make_small_db,
    percentile,
    read_cursor_seq,
)

IDLE_SECONDS = 60.0
# After the bootstrap, wait past the first safety poll (30 s), which syncs every database once
# more (its first sync created the -wal) and runs its first compaction pass: idle is what follows.
SETTLE_SECONDS = 40.0
# Before the second contender's idle window: time to catch up on what fell due while paused.
RESETTLE_SECONDS = 20.0
LAG_DURATION = 30.0
LAG_INTERVAL = 1.0  # each active database commits once per this many seconds
DB_ROWS = 2_500  # ≈ 300 KiB per database
STALL_SECONDS = 60.0  # a bootstrap that makes no progress this long has failed
PROJECT_AFTER = 30.0  # from then on, a bootstrap whose pace projects past twice its timeout has too
# SIGTERM, then SIGKILL after this long: bakelite stops 2,000 databases in about 2 s, while a
# Litestream stalled at 10,000 was still running 210 s after SIGTERM (a full run waited 600 s).
STOP_SECONDS = 15.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def daemons_needed(n: int) -> int:
    """How many bakelite daemons ``n`` databases need under this process's hard open-file limit."""
    import math
    import resource

    from bakelite.daemon.limits import fd_budget

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or fd_budget(n, 8) <= hard:
        return 1
    per_daemon = max(1, next(m for m in range(n, 0, -1) if fd_budget(m, 8) <= hard))
    return math.ceil(n / per_daemon)


def bootstrap_timeout(n: int) -> float:
    """A bootstrap of ``n`` databases not done by then has failed (Litestream at 10,000 creeps on)."""
    return 120 + 0.01 * n


# -- the fleet -----------------------------------------------------------------------------------


def shard_count(n: int) -> int:
    """A handful of directories: about 50 databases per shard for small fleets, 16 at most."""
    return max(1, min(16, n // 50))


def db_path(root: Path, i: int, shards: int) -> Path:
    """Database ``i`` of the fleet: ``tenants/shard-SS/tNNNNN.db``."""
    return root / "tenants" / f"shard-{i % shards:02d}" / f"t{i:05d}.db"


def make_fleet(root: Path, n: int) -> list[Path]:
    """N WAL-mode databases copied from one small template (a fresh checkpointed file, no -wal)."""
    template = root / "template.db"
    if not template.exists():
        make_small_db(template, rows=DB_ROWS)
    shards = shard_count(n)
    paths = [db_path(root, i, shards) for i in range(n)]
    for d in {p.parent for p in paths}:
        d.mkdir(parents=True, exist_ok=True)
    for p in paths:
        shutil.copyfile(template, p)
    return paths


def name_of(db: Path) -> str:
    return db.stem


def bakelite_fleet_config(root: Path, dbs: list[Path], backups: Path) -> Path:
    """One shared ``file`` backend and a ``[[database]]`` per database (default tunables)."""
    cfg = root / "bakelite.toml"
    parts = [f'[[backends]]\ntype = "file"\npath = "{backups}"\n']
    parts += [f'[[database]]\nname = "{name_of(db)}"\npath = "{db}"\n' for db in dbs]
    cfg.write_text("\n".join(parts))
    return cfg


def litestream_fleet_config(root: Path, dbs: list[Path], replicas: Path) -> Path:
    """A Litestream 0.5 config with one ``file`` replica per database."""
    cfg = root / "litestream.yml"
    lines = ["dbs:"]
    for db in dbs:
        lines += [
            f"  - path: {db}",
            "    replica:",
            "      type: file",
            f"      path: {replicas / name_of(db)}",
        ]
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def config_load_seconds(cfg: Path) -> float | None:
    """How long bakelite takes to load and validate the fleet's config (in a fresh process)."""
    code = (
        "import time,sys;t=time.perf_counter();from bakelite.config.load import load_config;"
        "c=load_config(sys.argv[1]);print(time.perf_counter()-t, len(c.databases))"
    )
    p = subprocess.run([PY, "-c", code, str(cfg)], capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        return None
    return float(p.stdout.split()[0])


# -- /proc ---------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def status_kib(pid: int, key: str) -> int | None:
    """A ``kB`` field (VmRSS, VmHWM) of ``/proc/<pid>/status``."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def fd_kinds(pid: int) -> dict[str, int]:
    """Open descriptors of ``pid`` by what they point at (db, -wal, -shm, lock, other)."""
    kinds: dict[str, int] = {}
    base = f"/proc/{pid}/fd"
    for fd in os.listdir(base):
        try:
            target = os.readlink(f"{base}/{fd}")
        except OSError:
            continue
        if target.endswith("-wal"):
            k = "wal"
        elif target.endswith("-shm"):
            k = "shm"
        elif target.endswith(".db"):
            k = "db"
        elif target.endswith(".lock"):
            k = "lock"
        elif "inotify" in target:
            k = "inotify"
        else:
            k = "other"
        kinds[k] = kinds.get(k, 0) + 1
    return kinds


# -- durability watchers (inotify) ---------------------------------------------------------------


@dataclass(eq=False)
class Durable(threading.Thread):
    """Records when each active database's shipped position moves, from inotify events.

    ``who(directory, file name)`` names the database a file belongs to (or None to ignore it) and
    ``read(path)`` reads its position: bakelite's cursor seq, or an LTX file's header time.
    """

    dirs: list[Path]
    who: Callable[[Path, str], str | None]
    read: Callable[[Path], float | None]
    seen: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    stop_flag: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, daemon=True)
        import inotify_simple

        self.ino = inotify_simple.INotify()
        flags = inotify_simple.flags
        self.wds = {self.ino.add_watch(str(d), flags.MOVED_TO | flags.CLOSE_WRITE): d for d in self.dirs}

    def run(self) -> None:
        while not self.stop_flag.is_set():
            for ev in self.ino.read(timeout=100):
                now = time.time()
                d = self.wds.get(ev.wd)
                db = None if d is None else self.who(d, ev.name)
                if d is None or db is None:
                    continue
                value = self.read(d / ev.name)
                if value is not None:
                    self.seen.setdefault(db, []).append((value, now))
        self.ino.close()


def ltx_timestamp(path: Path) -> float | None:
    """The Timestamp of an LTX v1 header, in seconds."""
    try:
        with open(path, "rb") as f:
            head = f.read(48)
    except FileNotFoundError:
        return None
    if len(head) < 48 or head[:4] != b"LTX1":
        return None
    return float(struct.unpack_from(">q", head, 32)[0]) / 1000.0


def write_main(argv: list[str]) -> int:
    """The writer process: one commit per database per ``interval``, staggered, for ``duration``."""
    out, interval, duration, dbs = argv[0], float(argv[1]), float(argv[2]), argv[3:]
    cons = []
    for db in dbs:
        con = sqlite3.connect(db, isolation_level=None, timeout=10)
        con.execute("PRAGMA busy_timeout=10000")
        con.execute("PRAGMA synchronous=NORMAL")
        cons.append(con)
    times: dict[str, list[float]] = {db: [] for db in dbs}
    step = interval / len(dbs)
    t0 = time.perf_counter()
    k = 0
    while time.perf_counter() - t0 < duration:
        at = t0 + k * step
        now = time.perf_counter()
        if at > now:
            time.sleep(at - now)
        i = k % len(dbs)
        cons[i].execute("BEGIN IMMEDIATE")
        cons[i].execute("INSERT INTO kv(k, v, t) VALUES (?, ?, ?)", (f"w{k}", "x" * 64, time.time()))
        cons[i].execute("COMMIT")
        times[dbs[i]].append(time.time())
        k += 1
    for con in cons:
        con.close()
    Path(out).write_text(json.dumps(times))
    return 0


def run_writer(root: Path, active: list[Path], duration: float) -> dict[str, list[float]]:
    out = root / "writer.json"
    args = [PY, __file__, "write", str(out), str(LAG_INTERVAL), str(duration), *map(str, active)]
    subprocess.run(args, check=True, timeout=duration + 600)
    data: dict[str, list[float]] = json.loads(out.read_text())
    return data


def lags_by_seq(commits: dict[str, list[float]], seen: dict[str, list[tuple[float, float]]]) -> list[float]:
    """bakelite: commit k of a database is durable when its cursor first shows seq ≥ k."""
    lags: list[float] = []
    for db, times in commits.items():
        s = sorted(seen.get(name_of(Path(db)), []), key=lambda x: x[1])
        for k, t in enumerate(times, start=1):
            when = next((at for seq, at in s if seq >= k), None)
            lags.append(when - t if when is not None else float("inf"))
    return lags


def lags_by_time(commits: dict[str, list[float]], seen: dict[str, list[tuple[float, float]]]) -> list[float]:
    """Litestream: a commit is durable when an L0 file whose header time is ≥ the commit appears."""
    lags: list[float] = []
    for db, times in commits.items():
        s = seen.get(name_of(Path(db)), [])
        for t in times:
            when = min((at for ts, at in s if ts >= t), default=None)
            lags.append(when - t if when is not None else float("inf"))
    return lags


# -- one contender at one N ----------------------------------------------------------------------


@dataclass
class FleetResult:
    """What one run at one N measured (None: not reached)."""

    bootstrap: float | None = None
    idle_cpu: float | None = None
    rss_mib: float | None = None
    hwm_mib: float | None = None
    fds: int | None = None
    fd_kinds: dict[str, int] = field(default_factory=dict)
    lag: list[float] = field(default_factory=list)
    error: str | None = None


@dataclass
class Timing:
    """How long each phase of one measurement lasts (seconds)."""

    idle: float = IDLE_SECONDS
    settle: float = SETTLE_SECONDS
    lag: float = LAG_DURATION


def _wait_all(pending: set[Path], ready: Callable[[Path], bool], procs: list[Proc], timeout: float) -> float:
    """Seconds from start until every database is ready; TimeoutError at ``timeout`` or a stall."""
    started = min(p.started for p in procs)
    total = len(pending)
    step = min(0.5, max(0.02, total / 20_000))
    deadline = time.perf_counter() + timeout
    progress_at = time.perf_counter()
    while pending:
        before = len(pending)
        pending -= {p for p in list(pending) if ready(p)}
        if not pending:
            break
        for proc in procs:
            proc.check()
        now = time.perf_counter()
        if len(pending) < before:
            progress_at = now
        done, elapsed = total - len(pending), now - started
        if now > deadline or now - progress_at > STALL_SECONDS:
            raise TimeoutError(
                f"{done:,} of {total:,} databases had a first backup after {elapsed:.0f} s "
                f"(no progress for {now - progress_at:.0f} s)"
            )
        # Creeping on at a pace that would need more than twice the timeout: it has failed.
        if elapsed > PROJECT_AFTER and done and elapsed * total / done > 2 * timeout:
            raise TimeoutError(
                f"{done:,} of {total:,} databases had a first backup after {elapsed:.0f} s "
                f"(at that pace all would take {elapsed * total / done / 60:.0f} min)"
            )
        time.sleep(step)
    return time.perf_counter() - started


def _say(msg: str) -> None:
    """A progress line on stderr, so a slow phase shows in the log of a long run."""
    print(f"fleet {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def _reason(e: Exception) -> str:
    """The first line of an error, with the last line of the process's log when it exited."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if len(lines) < 2 else f"{lines[0]} {lines[-1][-400:]}"


class Fleet:
    """The replicator processes for N databases (one unless ``commands`` splits them), phase by phase.

    The phases are separate so that all the fleets can share the idle minute: each
    bootstraps alone (the others paused with SIGSTOP), then all idle side by side, then each
    writes alone again.  With several processes, CPU, RSS and descriptors are their sums.
    """

    def __init__(self, root: Path, dbs: list[Path]) -> None:
        self.root, self.dbs = root, dbs
        self.res = FleetResult()
        self.procs: list[Proc] = []
        self._cpu0 = self._t0 = 0.0

    def commands(self) -> list[list[str]]:
        raise NotImplementedError

    def ready(self, db: Path) -> bool:
        raise NotImplementedError

    def measure_lag(self, duration: float) -> list[float]:
        raise NotImplementedError

    @property
    def ok(self) -> bool:
        return self.res.error is None and bool(self.procs) and all(p.alive() for p in self.procs)

    def check(self) -> None:
        """RuntimeError (with its log) if a process has exited."""
        for proc in self.procs:
            proc.check()

    def bootstrap(self, timeout: float) -> None:
        cmds = self.commands()
        logs = ["replicator.log"] if len(cmds) == 1 else [f"replicator-{i}.log" for i in range(len(cmds))]
        self.procs = [Proc(cmd, self.root / log) for cmd, log in zip(cmds, logs, strict=True)]
        try:
            self.res.bootstrap = _wait_all(set(self.dbs), self.ready, self.procs, timeout)
        except (TimeoutError, RuntimeError) as e:
            self.fail(e)

    def fail(self, e: Exception) -> None:
        self.res.error = _reason(e)
        self.stop()

    def pause(self, paused: bool) -> None:
        if self.ok:
            for proc in self.procs:
                proc.p.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)

    def idle_begin(self) -> None:
        if self.ok:
            self._cpu0 = sum(cpu_seconds(p.p.pid) for p in self.procs)
            self._t0 = time.perf_counter()

    def idle_end(self) -> None:
        if not self.ok:
            return
        try:
            self.check()
        except RuntimeError as e:
            self.fail(e)
            return
        pids = [p.p.pid for p in self.procs]
        c1, t1 = sum(cpu_seconds(pid) for pid in pids), time.perf_counter()
        self.res.idle_cpu = 100 * (c1 - self._cpu0) / (t1 - self._t0)
        kinds: dict[str, int] = {}
        for pid in pids:
            for k, v in fd_kinds(pid).items():
                kinds[k] = kinds.get(k, 0) + v
        self.res.fd_kinds = kinds
        self.res.fds = sum(kinds.values())
        self.res.rss_mib = sum(status_kib(pid, "VmRSS") or 0 for pid in pids) / 1024
        self.res.hwm_mib = sum(status_kib(pid, "VmHWM") or 0 for pid in pids) / 1024

    def lag(self, duration: float) -> None:
        if not self.ok:
            return
        try:
            self.res.lag = self.measure_lag(duration)
        except (TimeoutError, RuntimeError) as e:
            self.fail(e)

    def stop(self) -> None:
        if not self.procs:
            return
        running = [p for p in self.procs if p.alive()]
        if running:
            t0 = time.perf_counter()
            for proc in running:
                proc.p.send_signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
                proc.p.send_signal(signal.SIGTERM)
            for proc in running:
                proc.stop(timeout=max(0.1, STOP_SECONDS - (time.perf_counter() - t0)))
            _say(f"{type(self).__name__} of {len(self.dbs):,} stopped in {time.perf_counter() - t0:.1f} s")
        if len(running) < len(self.procs) and self.res.error is None:
            codes = ", ".join(str(p.p.returncode) for p in self.procs if not p.alive())
            self.res.error = f"exited {codes}"


class BakeliteFleet(Fleet):
    """One bakelite daemon for the whole fleet, or ``daemons`` of them each with a share of it."""

    def __init__(self, root: Path, dbs: list[Path], daemons: int = 1) -> None:
        super().__init__(root, dbs)
        self.daemons = daemons

    def commands(self) -> list[list[str]]:
        if self.daemons == 1:
            cfgs = [bakelite_fleet_config(self.root, self.dbs, self.root / "backups")]
        else:
            cfgs = []
            for i in range(self.daemons):
                (self.root / f"daemon-{i}").mkdir(exist_ok=True)
                share = self.dbs[i :: self.daemons]
                cfgs.append(bakelite_fleet_config(self.root / f"daemon-{i}", share, self.root / "backups"))
        return [[PY, "-m", "bakelite", "daemon", "--config", str(cfg)] for cfg in cfgs]

    def ready(self, db: Path) -> bool:
        return read_cursor_seq(db.parent / ".bakelite" / f"{db.stem}.cursor") == 0

    def measure_lag(self, duration: float) -> list[float]:
        active = _active(self.dbs)
        dirs = sorted({db.parent / ".bakelite" for db in active})
        cursors = {f"{db.stem}.cursor": db.stem for db in active}
        watch = Durable(
            dirs,
            lambda _d, name: cursors.get(name),
            lambda p: None if (s := read_cursor_seq(p)) is None else float(s),
        )
        watch.start()
        commits = run_writer(self.root, active, duration)
        deadline = time.time() + 60
        while time.time() < deadline and any(
            not watch.seen.get(name_of(Path(db))) or watch.seen[name_of(Path(db))][-1][0] < len(ts)
            for db, ts in commits.items()
        ):
            self.check()
            time.sleep(0.1)
        watch.stop_flag.set()
        watch.join()
        return lags_by_seq(commits, watch.seen)


class LitestreamFleet(Fleet):
    """One ``litestream replicate`` for the whole fleet."""

    def commands(self) -> list[list[str]]:
        exe = litestream_bin()
        assert exe is not None
        cfg = litestream_fleet_config(self.root, self.dbs, self.replicas)
        return [[exe, "replicate", "-config", str(cfg)]]

    @property
    def replicas(self) -> Path:
        return self.root / "replicas"

    def ready(self, db: Path) -> bool:
        for level in ("0", "9"):
            try:
                if any(n.endswith(".ltx") for n in os.listdir(self.replicas / db.stem / "ltx" / level)):
                    return True
            except FileNotFoundError:
                pass
        return False

    def measure_lag(self, duration: float) -> list[float]:
        active = _active(self.dbs)
        dirs = []
        for db in active:
            d = self.replicas / db.stem / "ltx" / "0"
            d.mkdir(parents=True, exist_ok=True)
            dirs.append(d)
        # Every .ltx file in replicas/<name>/ltx/0 belongs to database <name>.
        watch = Durable(
            dirs, lambda d, name: d.parent.parent.name if name.endswith(".ltx") else None, ltx_timestamp
        )
        watch.start()
        commits = run_writer(self.root, active, duration)
        time.sleep(3.0)  # Litestream syncs every second
        watch.stop_flag.set()
        watch.join()
        return lags_by_time(commits, watch.seen)


# -- the table -----------------------------------------------------------------------------------


def _active(dbs: list[Path]) -> list[Path]:
    """1% of the fleet (at least one), spread over the shards."""
    k = max(1, len(dbs) // 100)
    return dbs[:: len(dbs) // k][:k]


def _row(who: str, n: int, daemons: int) -> str:
    """The table row of a fleet: ``bakelite, 1,000 dbs`` or ``bakelite, 10,000 dbs in 5 daemons``."""
    return f"{who}, {n:,} dbs" + (f" in {daemons} daemons" if daemons > 1 else "")


def _record(t: Table, row: str, who: str, n: int, res: FleetResult) -> None:
    """One fleet's figures and its notes in the table."""
    t.add(row, "bootstrap", res.bootstrap)
    t.add(row, "idle CPU", res.idle_cpu)
    t.add(row, "RSS", res.rss_mib)
    t.add(row, "peak RSS", res.hwm_mib)
    t.add(row, "fds", res.fds)
    if res.lag:
        t.add(row, "lag p50", percentile(res.lag, 50))
        t.add(row, "lag p99", percentile(res.lag, 99))
        t.add(row, "lag max", max(res.lag))
    detail = []
    if res.fd_kinds:
        kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(res.fd_kinds.items()))
        detail.append(f"fds by kind: {kinds}")
    if res.rss_mib is not None:
        detail.append(
            f"RSS {res.rss_mib:,.0f} MiB (peak {res.hwm_mib or 0:,.0f}), "
            f"{res.rss_mib * 1024 / n:,.1f} KiB per database"
        )
    if res.fds is not None:
        detail.append(f"{res.fds / n:.2f} fds per database")
    if who == "bakelite" and (m := t.rows[row].get("config load")) is not None:
        detail.append(f"config with {n:,} databases loads in {m.values[-1]:.2f} s")
    if res.error:
        detail.append(f"FAILED: {res.error}")
    t.notes.append(f"{row}: " + "; ".join(detail))


def fleet_table(
    work: Path,
    counts: list[int],
    runs: int,
    with_litestream: bool,
    idle: float = IDLE_SECONDS,
    settle: float = SETTLE_SECONDS,
    lag: float = LAG_DURATION,
) -> Table:
    """Bootstrap, idle CPU, RSS, descriptors and 1%-active lag for N databases in one process."""
    timing = Timing(idle, settle, lag)
    t = Table(
        f"fleet: N small databases in one process, or K where noted (idle CPU over {idle:g} s; "
        "lag with 1% active)",
        [
            ("bootstrap", "s"),
            ("idle CPU", "%"),
            ("RSS", "MiB"),
            ("fds", ""),
            ("lag p50", "s"),
            ("lag p99", "s"),
            ("lag max", "s"),
        ],
        baseline=f"bakelite, {counts[0]:,} dbs",
    )
    # (contender, N, daemons): where one bakelite daemon cannot hold N databases under this
    # machine's hard open-file limit (it refuses to start, naming the fix), the same N also runs
    # split over as many daemons as the limit needs, measured as one (sums of CPU, RSS and fds).
    entries: list[tuple[str, int, int]] = []
    for n in counts:
        entries.append(("bakelite", n, 1))
        if (k := daemons_needed(n)) > 1:
            entries.append(("bakelite", n, k))
    if with_litestream and litestream_bin() is not None:
        entries += [("litestream", n, 1) for n in counts]
    for _ in range(runs):
        fleets: dict[tuple[str, int, int], Fleet] = {}
        try:
            for who, n, k in entries:
                root = fresh_dir(work / (f"fleet-{who}-{n}" + (f"-x{k}" if k > 1 else "")))
                dbs = make_fleet(root, n)
                if who == "bakelite" and k == 1:
                    load = config_load_seconds(bakelite_fleet_config(root, dbs, root / "backups"))
                    if load is not None:
                        t.add(_row(who, n, k), "config load", load)
                fleet: Fleet = (
                    LitestreamFleet(root, dbs) if who == "litestream" else BakeliteFleet(root, dbs, k)
                )
                fleets[who, n, k] = fleet
                _say(f"{_row(who, n, k)}: generated, bootstrapping")
                fleet.bootstrap(bootstrap_timeout(n))
                _say(f"{_row(who, n, k)}: bootstrap {fleet.res.bootstrap or 0:.1f} s {fleet.res.error or ''}")
                fleet.pause(True)  # so the next bootstrap has the machine to itself
            # A contender's fleets idle side by side (one shared minute, CPU read per process),
            # the other contender's paused: Litestream's idle fleets use a fifth to a half of a
            # core, and on two cores that load inflated bakelite's idle CPU fivefold.
            for i, who in enumerate(dict.fromkeys(w for w, _, _ in fleets)):
                mine = [f for (w, _, _), f in fleets.items() if w == who]
                for (w, _, _), fleet in fleets.items():
                    fleet.pause(w != who)
                # The first settle is past the first safety poll; later ones only let a
                # resumed process catch up on what fell due while it was paused.
                time.sleep(timing.settle if i == 0 else min(timing.settle, RESETTLE_SECONDS))
                for fleet in mine:
                    fleet.idle_begin()
                time.sleep(timing.idle)
                for fleet in mine:
                    fleet.idle_end()
                _say(f"{who}: idle done")
            for (who, n, k), fleet in fleets.items():
                for other in fleets.values():
                    other.pause(other is not fleet)  # each writer's lag with the machine to itself
                fleet.lag(timing.lag)
                _say(f"{_row(who, n, k)}: lag done")
        finally:
            for fleet in fleets.values():
                fleet.stop()
        for (who, n, k), fleet in fleets.items():
            _record(t, _row(who, n, k), who, n, fleet.res)
            if os.environ.get("BENCH_KEEP") != "1":
                shutil.rmtree(fleet.root, ignore_errors=True)
    t.notes.append(
        "each fleet bootstraps and writes with every other fleet paused (SIGSTOP); each contender's "
        "fleets then idle side by side for the idle window, the other contender's paused, their CPU "
        "read per process"
    )
    if any(k > 1 for _, _, k in entries):
        t.notes.append(
            "'in K daemons': the same databases split evenly over K bakelite daemons (each with its "
            "own config and the shared backend), because one daemon would need more open files than "
            "this machine's hard limit allows; CPU, RSS and fds are the sums over the K processes"
        )
    return t


def main(argv: list[str] | None = None) -> int:
    import argparse

    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "write":
        return write_main(args[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", default="100,1000", help="fleet sizes, comma-separated")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--idle", type=float, default=IDLE_SECONDS, help="idle window in seconds")
    ap.add_argument("--settle", type=float, default=SETTLE_SECONDS, help="wait before the idle window")
    ap.add_argument("--lag", type=float, default=LAG_DURATION, help="seconds the 1%% writer runs")
    ap.add_argument("--no-litestream", action="store_true")
    ap.add_argument("--work", default="/tmp/bakelite-bench/fleet")
    a = ap.parse_args(args)
    t = fleet_table(
        Path(a.work),
        [int(c) for c in a.counts.split(",")],
        a.runs,
        not a.no_litestream,
        a.idle,
        a.settle,
        a.lag,
    )
    print(t.render(), flush=True)
    print(json.dumps(t.as_dict(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
