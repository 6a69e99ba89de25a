"""Test harness: a real daemon subprocess, a separate writer process, restores graded by an oracle.

Shared by the integration tests and the torture harness.  Nothing here is mocked: the daemon is
``python -m bakelite daemon`` in its own process, the writer is ``tests/workload.py`` in another.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKLOAD = HERE / "workload.py"
sys.path.insert(0, str(HERE))

import workload  # noqa: E402


@dataclass
class Commit:
    """One line of the writer's ground-truth log."""

    seq: int
    t: float
    digest: str | None


def read_log(path: Path) -> list[Commit]:
    """The writer's log (complete lines only: a killed writer may leave a partial last line)."""
    out: list[Commit] = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            continue
        out.append(Commit(int(d["seq"]), float(d["t"]), d.get("digest")))
    return out


@dataclass
class Verdict:
    """What the oracle found in a restored database."""

    seq: int
    integrity: str
    digest: str


class OracleError(AssertionError):
    """A restore that is not exactly a committed state."""


def grade(restored: Path, log: list[Commit] | Callable[[], list[Commit]]) -> Verdict:
    """The oracle: integrity ok, markers exactly {1..m}, digest equal to the one recorded at m.

    ``log`` may be a function re-reading a running writer's log: a commit can be shipped before
    the writer has logged it, so the grade waits (briefly) for the log to catch up.
    """
    con = sqlite3.connect(f"file:{restored}?immutable=1", uri=True)
    try:
        integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
        if integrity != "ok":
            raise OracleError(f"integrity_check: {integrity}")
        marks = workload.markers(con)
        m = marks[-1] if marks else 0
        if marks != list(range(1, m + 1)):
            missing = sorted(set(range(1, m + 1)) - set(marks))
            raise OracleError(f"markers are not a gap-free prefix: missing {missing[:10]}")
        digest = workload.content_digest(con)
    finally:
        con.close()
    commits = log() if callable(log) else log
    deadline = time.time() + 10
    while callable(log) and m and (not commits or commits[-1].seq < m) and time.time() < deadline:
        time.sleep(0.05)
        commits = log()
    by_seq = {c.seq: c for c in commits}
    if m and m not in by_seq:
        raise OracleError(f"restored seq {m} is not a commit the workload made (log ends at {len(log)})")
    expected = by_seq[m].digest if m else None
    if expected is not None and digest != expected:
        raise OracleError(f"content digest at seq {m} differs from the one recorded at that commit")
    return Verdict(m, integrity, digest)


@dataclass
class Deployment:
    """A database, its backup directory, a config, and the processes that act on them."""

    root: Path
    name: str = "app"
    extra_config: str = ""
    debounce: str = "50ms"
    max_batch_delay: str = "200ms"
    safety_poll: str = "2s"
    # The [[backends]] body (TOML lines after the header); empty means a file backend in root/backups.
    backend_toml: str = ""
    # Extra environment for every bakelite subprocess (backend credentials).
    extra_env: dict[str, str] = field(default_factory=dict)
    daemon: subprocess.Popen[bytes] | None = None
    daemon_started: float = 0.0
    daemon_log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.db = self.root / f"{self.name}.db"
        self.backups = self.root / "backups"
        self.config = self.root / "bakelite.toml"
        self.log = self.root / f"{self.name}.commits.jsonl"
        self.daemon_log = self.root / "daemon.log"
        self.write_config()

    def write_config(self, databases: list[tuple[str, Path]] | None = None) -> None:
        """(Re)write the config: by default this deployment's one database."""
        dbs = databases or [(self.name, self.db)]
        text = (
            f'[defaults]\ndebounce = "{self.debounce}"\nmax_batch_delay = "{self.max_batch_delay}"\n'
            f'safety_poll = "{self.safety_poll}"\n'
            + self.extra_config
            + "\n[[backends]]\n"
            + (self.backend_toml or f'type = "file"\npath = "{self.backups}"\n')
        )
        for name, path in dbs:
            text += f'\n[[database]]\nname = "{name}"\npath = "{path}"\n'
        self.config.write_text(text)

    def env(self) -> dict[str, str]:
        """Environment for bakelite subprocesses (no host env files)."""
        return dict(os.environ, BAKELITE_ENV_FILE=os.devnull, PYTHONUNBUFFERED="1", **self.extra_env)

    def bakelite(
        self, *args: str, check: bool = False, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run the CLI to completion."""
        return subprocess.run(
            [sys.executable, "-m", "bakelite", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=check,
        )

    def init_db(self) -> None:
        """Create the database in WAL mode with the workload's schema."""
        con = sqlite3.connect(self.db)
        con.execute("PRAGMA journal_mode=WAL")
        con.executescript(workload.SCHEMA)
        con.commit()
        con.close()

    def start_daemon(self, *args: str) -> subprocess.Popen[bytes]:
        """Start ``bakelite daemon`` and wait until its first backup exists."""
        self.daemon_started = time.time()
        with open(self.daemon_log, "ab") as logf:
            self.daemon = subprocess.Popen(
                [sys.executable, "-m", "bakelite", "daemon", "--config", str(self.config), *args],
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=self.env(),
            )
        return self.daemon

    def start_faulty_daemon(
        self, plan: str, seed: int = 0, outage_file: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start the daemon with a fault-injecting wrapper around its destination."""
        script = HERE / "torture" / "faulty_daemon.py"
        args = [sys.executable, str(script), str(self.config), plan, str(seed)]
        if outage_file is not None:
            args.append(str(outage_file))
        self.daemon_started = time.time()
        with open(self.daemon_log, "ab") as logf:
            self.daemon = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, env=self.env())
        return self.daemon

    def wait_replicating(self, name: str | None = None, timeout: float = 30) -> None:
        """Wait until the current daemon holds the database's lock and has (re)written its cursor."""
        state = self.root / ".bakelite"
        cursor = state / f"{name or self.name}.cursor"
        lock = state / f"{name or self.name}.lock"
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                holder = lock.read_text().strip()
                fresh = cursor.stat().st_mtime >= self.daemon_started - 0.05
            except FileNotFoundError:
                holder, fresh = "", False
            if fresh and self.daemon is not None and holder == str(self.daemon.pid):
                return
            if self.daemon is not None and self.daemon.poll() is not None:
                raise AssertionError(
                    f"daemon exited {self.daemon.returncode}:\n{self.daemon_log.read_text()}"
                )
            time.sleep(0.05)
        raise AssertionError(f"daemon did not start replicating:\n{self.daemon_log.read_text()}")

    def stop_daemon(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Signal the daemon and wait for it; returns its exit code."""
        assert self.daemon is not None
        self.daemon.send_signal(sig)
        code = self.daemon.wait(timeout=timeout)
        self.daemon = None
        return code

    def run_writer(self, *args: str, background: bool = False) -> subprocess.Popen[str]:
        """Run the marked workload against the database (blocking unless ``background``)."""
        proc = subprocess.Popen(
            [sys.executable, str(WORKLOAD), str(self.db), str(self.log), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if not background:
            _out, err = proc.communicate(timeout=600)
            if proc.returncode != 0:
                raise AssertionError(f"writer failed: {err}")
        return proc

    def restore(self, output: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        """``bakelite restore --db <name> --output <output> …``."""
        return self.bakelite("restore", "--db", self.name, "--output", str(output), *extra)

    def commits(self) -> list[Commit]:
        """The writer's ground truth so far."""
        return read_log(self.log)

    def cleanup(self) -> None:
        """Kill anything still running."""
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.kill()
            self.daemon.wait()


def rfc3339(t: float) -> str:
    """UTC RFC3339 with milliseconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1000):03d}Z"
