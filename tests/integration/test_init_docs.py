"""Every command in the operations pages of the docs is run, or checked, for real.

The ``sh`` blocks of getting-started, operations, versioning and project-status are extracted and
executed in order against a temp root (paths under /etc/bakelite, /var/lib/app, /var/backups and /tmp
are moved into it). What cannot run in a test container is named here one by one: the install steps,
and ``systemctl`` (whose unit names are checked against packaging/ and whose ``enable`` of the daemon
starts the real daemon instead). A new command in those pages fails this test until it is classified.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bakelite.cli.main import COMMANDS, build_parser, command_name
from bakelite.ops import init

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
BIN = Path(sys.executable).parent
PAGES = ("getting-started.md", "operations.md", "versioning.md", "project-status.md")

# Shown for a real host, not runnable here (they install software system-wide).
INSTALL_STEPS = {
    "apt-get install -y python3-venv sqlite3",
    "python3 -m venv /opt/bakelite",
    "/opt/bakelite/bin/pip install ./bakelite",
    "ln -s /opt/bakelite/bin/bakelite /usr/local/bin/bakelite",
}
AVAILABLE = {command_name(c): c.AVAILABLE for c in COMMANDS}


def sh_commands(page: str) -> list[str]:
    """The commands of a page's ``sh`` blocks: continuation lines joined, comments dropped."""
    text = (DOCS / page).read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def bare(argv: list[str]) -> list[str]:
    while argv and argv[0] in ("sudo", "time"):
        argv = argv[1:]
    return argv


@pytest.mark.parametrize("page", PAGES)
def test_every_bakelite_command_in_the_page_parses(page: str) -> None:
    for command in sh_commands(page):
        argv = bare(shlex.split(command))
        if argv[0] != "bakelite":
            continue
        if argv[1:] == ["--version"]:
            continue
        args = build_parser().parse_args(argv[1:])
        assert args.command in AVAILABLE, command


def test_yaml_probes_in_operations_are_exec_form_bakelite_commands() -> None:
    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```yaml\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert blocks
    for block in blocks:
        test = yaml.safe_load(block)["healthcheck"]["test"]
        assert test[:2] == ["CMD", "bakelite"]
        assert build_parser().parse_args(test[2:]).check is True


class Site:
    """A temp root standing in for the host the docs talk about, with the daemon init enabled."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "root"
        self.scratch = tmp / "scratch"
        self.scratch.mkdir()
        self.daemon: subprocess.Popen[bytes] | None = None
        self.log = tmp / "daemon.log"
        self.env = dict(
            os.environ,
            BAKELITE_INIT_ROOT=str(self.root),
            BAKELITE_ENV_FILE=os.devnull,
            HOME=str(tmp / "home"),
            PATH=f"{BIN}:{os.environ['PATH']}",
        )
        self.env.pop("BAKELITE_CONFIG", None)
        self.config = self.root / "etc/bakelite/bakelite.toml"

    def localize(self, argv: list[str]) -> list[str]:
        """Move the documented host paths into the temp root; the service user becomes root."""
        out = []
        for i, arg in enumerate(argv):
            if i > 0 and argv[i - 1] == "--service-user":
                arg = "root"
            if arg.startswith(("/etc/bakelite", "/var/lib/app", "/var/backups/bakelite")):
                arg = str(self.root) + arg
            elif arg.startswith("/tmp/"):
                arg = str(self.scratch / arg.removeprefix("/tmp/"))
            out.append(arg)
        return out

    def run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=120, check=False)

    def start_daemon(self) -> None:
        """What systemd does for `enable --now bakelite.service`: run the daemon, wait until it is healthy."""
        if self.daemon is not None:
            return
        with self.log.open("wb") as log:
            self.daemon = subprocess.Popen(
                [str(BIN / "bakelite"), "daemon", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        deadline = time.monotonic() + 30
        check = [str(BIN / "bakelite"), "status", "--check", "--config", str(self.config)]
        while self.run(check).returncode != 0:
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.2)
        con = sqlite3.connect(self.root / "var/lib/app/app.db")
        con.execute("CREATE TABLE IF NOT EXISTS t (v TEXT)")
        con.executemany("INSERT INTO t VALUES (?)", [("row",)] * 20)
        con.commit()
        con.close()

    def systemctl(self, argv: list[str]) -> None:
        """Check the units a systemctl line names exist; `enable --now bakelite.service` starts the daemon."""
        units = [a for a in argv[1:] if a.startswith("bakelite")]
        assert units, argv
        for unit in units:
            pattern = unit.replace("*", ".*")
            assert any(re.fullmatch(pattern, u) for u in init.UNIT_FILES), f"no such unit: {unit}"
        if argv[1] in ("enable", "status", "start") and "bakelite.service" in units:
            self.start_daemon()

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.send_signal(signal.SIGTERM)
            assert self.daemon.wait(60) == 0, self.log.read_text()


def test_the_pages_commands_run_in_order(tmp_path: Path) -> None:
    site = Site(tmp_path)
    (site.root / "var/lib/app").mkdir(parents=True)
    ran: list[str] = []
    try:
        for page in PAGES:
            for command in sh_commands(page):
                argv = bare(shlex.split(command))
                if " ".join(argv) in INSTALL_STEPS:
                    continue
                if argv[0] == "systemctl":
                    site.systemctl(argv)
                    continue
                assert argv[0] in ("bakelite", "sqlite3"), f"{page}: unclassified command: {command}"
                if argv[0] == "bakelite" and argv[1] in AVAILABLE and not AVAILABLE[argv[1]]:
                    continue  # parsed above; the command has not landed in this build yet
                if argv[:2] == ["bakelite", "daemon"]:
                    continue  # the unit's command; start_daemon runs it
                result = site.run(site.localize(argv))
                assert result.returncode == 0, f"{page}: {command}\n{result.stdout}{result.stderr}"
                if "integrity_check" in command:
                    assert result.stdout.strip() == "ok", result.stdout
                ran.append(command)
                if argv[:2] == ["bakelite", "init"] and "--enable" in argv:
                    # systemd is not running here: do what enabling the unit would have done.
                    site.start_daemon()
    finally:
        site.stop()
    assert any(c.startswith("sudo bakelite init --yes") for c in ran)
    assert any("verify --deep" in c for c in ran)
    assert any("--if-db-not-exists" in c for c in ran)
