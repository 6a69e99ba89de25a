"""``init``: set a host up -- config, key, credentials file, systemd units and drop-ins (or cron), doctor.

Three entry points, one set of steps:

- ``starter``: ``--recipe NAME --yes`` writes a validated starter config with placeholders to edit;
- ``unattended``: ``--yes --db-path ...`` performs the whole local-backend setup with no questions;
- ``wizard``: asks through a ``Prompter`` (the CLI's terminal one, or a test's) and confirms each step.

Every filesystem location init invents lives under a root (``$BAKELITE_INIT_ROOT``, default ``/``) so
tests and image builds can run it in a scratch tree: ``<root>/etc/systemd/system``, ``<root>/etc/cron.d``,
``<root>/etc/bakelite``, and systemd counts as running only when ``<root>/run/systemd/system`` exists
(the check ``sd_booted()`` makes) and ``systemctl`` is on ``PATH``.  Paths the user gives (database,
backup directory, key file, ``--config``) are used as given.  Nothing existing is replaced without
``--force`` or a confirmation (init's own drop-ins excepted: re-running init updates them), and a key
file is never replaced at all.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal, Protocol

from bakelite.config.env import DEFAULT_CONFIG_PATH, SYSTEM_ENV_FILE, EnvReport
from bakelite.config.load import parse_config
from bakelite.config.model import Config
from bakelite.config.validate import validate
from bakelite.errors import EXIT_OK, EXIT_RUNTIME, ConfigError, OutputExistsError, UsageError
from bakelite.fsutil import atomic_write
from bakelite.ops.doctor import DoctorReport, run_doctor

logger = logging.getLogger(__name__)

ROOT_ENV = "BAKELITE_INIT_ROOT"
RECIPES: tuple[str, ...] = ("local", "s3", "gcs", "azure", "sftp")
SERVICE_UNITS: tuple[str, ...] = (
    "bakelite.service",
    "bakelite-check.service",
    "bakelite-verify.service",
    "bakelite-verify-deep.service",
    "bakelite-repair.service",
)
TIMER_UNITS: tuple[str, ...] = (
    "bakelite-check.timer",
    "bakelite-verify.timer",
    "bakelite-verify-deep.timer",
    "bakelite-repair.timer",
)
UNIT_FILES: tuple[str, ...] = SERVICE_UNITS + TIMER_UNITS
CRON_FILE = "bakelite.cron"
PACKAGED_FILES: tuple[str, ...] = (*UNIT_FILES, CRON_FILE)
# What --enable turns on: the daemon and the three checks. Repair only matters with 2+ destinations.
ENABLE_UNITS: tuple[str, ...] = (
    "bakelite.service",
    "bakelite-check.timer",
    "bakelite-verify.timer",
    "bakelite-verify-deep.timer",
)
DROPIN_NAME = "bakelite-init.conf"
DEFAULT_BACKUP_DIR = Path("/var/backups/bakelite")
KEY_FILE_NAME = "bakelite.key"
_UNIT_CONFIG_ARG = f"--config {DEFAULT_CONFIG_PATH}"
_NAME_RE = re.compile(r"[^A-Za-z0-9_.-]+")

StepStatus = Literal["done", "unchanged", "skipped", "failed"]


def packaged_file(name: str) -> str:
    """The text of a unit or cron file shipped inside the package (``bakelite/data``)."""
    if name not in PACKAGED_FILES:
        raise ValueError(f"not a packaged file: {name}")
    return (resources.files("bakelite") / "data" / name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Host:
    """Where init writes: a root prefix for every system location, and how to reach systemd."""

    root: Path = Path("/")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Host:
        """The host rooted at ``$BAKELITE_INIT_ROOT`` (default ``/``)."""
        env = os.environ if environ is None else environ
        return cls(Path(env.get(ROOT_ENV) or "/"))

    def path(self, absolute: str | Path) -> Path:
        """``absolute`` under the root."""
        return self.root / str(absolute).lstrip("/")

    @property
    def unit_dir(self) -> Path:
        """Where unit files and drop-ins go."""
        return self.path("/etc/systemd/system")

    @property
    def cron_dir(self) -> Path:
        """Where the cron.d file goes."""
        return self.path("/etc/cron.d")

    @property
    def env_file(self) -> Path:
        """The credentials env file the units and the CLI read."""
        return self.path(SYSTEM_ENV_FILE)

    @property
    def default_config(self) -> Path:
        """The config path when ``--config`` is not given."""
        return self.path(DEFAULT_CONFIG_PATH)

    def systemctl(self) -> str | None:
        """The ``systemctl`` to run, or None when systemd is not running this host."""
        if not self.path("/run/systemd/system").is_dir():
            return None
        return shutil.which("systemctl")


@dataclass(frozen=True)
class Step:
    """One thing init did, found already done, skipped (and why), or failed at."""

    name: str
    status: StepStatus
    message: str


@dataclass(frozen=True)
class InitReport:
    """What ``bakelite init`` did: the steps in order, doctor's verdict, and what to do next."""

    config: Path
    recipe: str
    steps: tuple[Step, ...]
    doctor: DoctorReport | None = None
    next_steps: tuple[str, ...] = ()
    exit_code: int = EXIT_OK


@dataclass(frozen=True)
class InitOptions:
    """The command-line answers (``None`` means: ask, or use the default)."""

    config: Path
    recipe: str | None = None
    db_path: Path | None = None
    db_name: str | None = None
    backup_dir: Path | None = None
    encrypt: bool = False
    key_file: Path | None = None
    service_user: str | None = None
    service_group: str | None = None
    enable: bool = False
    force: bool = False


class Prompter(Protocol):
    """How the wizard talks to a person."""

    def say(self, text: str) -> None:
        """Show ``text``."""

    def ask(self, question: str, default: str | None = None) -> str:
        """A free-text answer; Enter gives ``default`` (None: an answer is required)."""

    def secret(self, question: str) -> str:
        """A secret answer, not echoed; may be empty."""

    def confirm(self, question: str, default: bool) -> bool:
        """A yes/no answer; Enter gives ``default``."""


# -- the config -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Everything the config and the credentials file will hold."""

    recipe: str
    db_name: str
    db_path: Path
    backend: Mapping[str, str | int | bool]
    key_file: Path | None = None
    credentials: Mapping[str, str] = field(default_factory=dict)
    comments: tuple[str, ...] = ()


def _toml_value(value: str | int | bool | Path) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    # A JSON string is a valid TOML basic string (same escapes, \uXXXX included).
    return json.dumps(str(value))


def render_config(plan: Plan) -> str:
    """The TOML text of ``plan``."""
    lines = [f"# bakelite config written by `bakelite init` (recipe: {plan.recipe}).", *plan.comments]
    lines += [
        "# Reference: the Configuration page of the docs. Check it: bakelite doctor --config <this file>",
        "",
        "[[database]]",
        f"name = {_toml_value(plan.db_name)}",
        f"path = {_toml_value(plan.db_path)}",
        "",
        "  [[database.backends]]",
    ]
    lines += [f"  {k} = {_toml_value(v)}" for k, v in plan.backend.items()]
    if plan.key_file is not None:
        lines += ["", "  [database.encryption]", f"  key_file = {_toml_value(plan.key_file)}"]
    return "\n".join(lines) + "\n"


def check_config_text(text: str, source: Path) -> Config:
    """Parse and validate config text exactly as the daemon will; ConfigError on any problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:  # a bug in render_config, not the user's fault
        raise ConfigError(f"init produced invalid TOML: {e}") from e
    # No environment: the file itself must be valid, whatever variables the shell happens to set.
    return validate(parse_config(data, source=source, environ={}))


def default_db_name(db_path: Path) -> str:
    """A config name for a database file: its stem, with anything unusual replaced."""
    name = _NAME_RE.sub("-", db_path.stem).strip("-.")
    return name or "db"


def starter_plan(recipe: str, host: Host) -> Plan:
    """A placeholder config for ``recipe``: valid as written, meant to be edited."""
    db_path = Path("/var/lib/app/app.db")
    backend: dict[str, str | int | bool]
    notes: tuple[str, ...]
    if recipe == "local":
        backend = {"type": "file", "path": str(DEFAULT_BACKUP_DIR)}
        notes = ("# Edit the database path and the backup directory.",)
    elif recipe == "s3":
        backend = {"type": "s3", "bucket": "my-bucket", "prefix": "app", "region": "us-east-1"}
        notes = (
            "# Edit the bucket; credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in",
            f"# {SYSTEM_ENV_FILE} (mode 0600), or an instance role. Add endpoint = ... for R2, B2, MinIO.",
        )
    elif recipe == "gcs":
        backend = {"type": "gcs", "bucket": "my-bucket", "prefix": "app"}
        notes = ("# Edit the bucket; credentials: service_account_path, or Application Default Credentials.",)
    elif recipe == "azure":
        backend = {"type": "azure", "account": "myaccount", "container": "backups", "prefix": "app"}
        notes = (
            f"# Edit account and container; credentials: AZURE_STORAGE_ACCOUNT_KEY in {SYSTEM_ENV_FILE}.",
        )
    elif recipe == "sftp":
        backend = {
            "type": "sftp",
            "host": "backup.example.com",
            "user": "bakelite",
            "path": "backups/app",
            "identity_file": "/etc/bakelite/id_ed25519",
            "known_hosts": "/etc/bakelite/known_hosts",
        }
        notes = ("# Edit host, user and path; the server's host key must be in known_hosts.",)
    else:
        raise UsageError(f"unknown recipe {recipe!r}", hint=f"choose one of: {', '.join(RECIPES)}")
    return Plan(recipe=recipe, db_name="app", db_path=db_path, backend=backend, comments=notes)


# -- small file steps -----------------------------------------------------------------------------


def _mkdir(path: Path, mode: int = 0o755) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=mode)


def write_text(path: Path, text: str, *, mode: int, replace: bool, name: str) -> Step:
    """Write ``text`` to ``path`` (atomically); an existing different file only when ``replace``."""
    if path.exists():
        if path.read_text(encoding="utf-8", errors="replace") == text:
            return Step(name, "unchanged", f"{path} already up to date")
        if not replace:
            return Step(name, "skipped", f"{path} exists and differs; left as it is")
    _mkdir(path.parent)
    atomic_write(path, text.encode("utf-8"), mode)
    os.chmod(path, mode)
    return Step(name, "done", f"wrote {path} (mode {mode:04o})")


def render_env_file(credentials: Mapping[str, str]) -> str:
    """A systemd ``EnvironmentFile=`` holding ``credentials``, double-quoted and escaped."""
    lines = ["# Credentials for bakelite, written by `bakelite init`. Keep this file mode 0600."]
    for name, value in credentials.items():
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'{name}="{escaped}"')
    return "\n".join(lines) + "\n"


def make_key(path: Path) -> Step:
    """Generate a key at ``path`` (mode 0600); an existing valid key is kept, never replaced."""
    from bakelite.crypto.keys import format_key, generate_key, read_key_file, write_key_file

    if path.exists():
        read_key_file(path)  # raises EncryptionError if it is not a key
        return Step("key", "unchanged", f"kept the existing key {path} (a key file is never overwritten)")
    _mkdir(path.parent)
    write_key_file(path, format_key(generate_key()))
    return Step("key", "done", f"generated {path} (mode 0600); keep a copy off this host")


@dataclass(frozen=True)
class Account:
    """The user and group the service runs as."""

    user: str
    group: str
    uid: int
    gid: int


def lookup_account(user: str, group: str | None) -> Account:
    """Resolve ``user`` (and ``group``, default the user's primary group); UsageError if unknown."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise UsageError(
            f"no such user: {user}", hint="create it first, or pass another --service-user"
        ) from None
    if group is None:
        try:
            group = grp.getgrgid(pw.pw_gid).gr_name
        except KeyError:
            group = str(pw.pw_gid)
        return Account(user, group, pw.pw_uid, pw.pw_gid)
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise UsageError(
            f"no such group: {group}", hint="create it first, or pass another --service-group"
        ) from None
    return Account(user, group, pw.pw_uid, gid)


def proposed_user(db_path: Path) -> str:
    """The owner of the database file (or of its directory while the file does not exist yet)."""
    target = db_path if db_path.exists() else db_path.parent
    uid = target.stat().st_uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def chown(path: Path, account: Account, name: str) -> Step:
    """Give ``path`` to the service account (only root can; otherwise say what to run)."""
    st = path.stat()
    if (st.st_uid, st.st_gid) == (account.uid, account.gid):
        return Step(name, "unchanged", f"{path} already owned by {account.user}:{account.group}")
    if os.geteuid() != 0:
        return Step(
            name,
            "skipped",
            f"not root: could not give {path} to {account.user}:{account.group}; "
            f"run: sudo chown {account.user}:{account.group} {shlex.quote(str(path))}",
        )
    os.chown(path, account.uid, account.gid)
    return Step(name, "done", f"{path} now owned by {account.user}:{account.group}")


def backup_dir_step(path: Path, account: Account | None) -> list[Step]:
    """Create the local backup directory (mode 0700) and give it to the service account."""
    steps = []
    if path.is_dir():
        steps.append(Step("backup dir", "unchanged", f"{path} exists"))
    else:
        _mkdir(path, 0o700)
        os.chmod(path, 0o700)
        steps.append(Step("backup dir", "done", f"created {path} (mode 0700)"))
    if account is not None:
        steps.append(chown(path, account, "backup dir owner"))
    return steps


# -- systemd and cron -----------------------------------------------------------------------------


def _systemd_quote(path: Path) -> str:
    text = str(path)
    return f'"{text}"' if any(c.isspace() or c in "\"'\\" for c in text) else text


def _unit_exec_start(unit: str) -> str:
    for line in packaged_file(unit).splitlines():
        if line.startswith("ExecStart="):
            return line.removeprefix("ExecStart=")
    raise ValueError(f"{unit} has no ExecStart=")


def render_dropin(
    unit: str,
    account: Account | None,
    writable: Sequence[Path],
    config: Path,
    env_file: Path,
) -> str:
    """The ``<unit>.d/bakelite-init.conf`` drop-in: who the unit runs as and what it may write."""
    lines = [
        "# Written by `bakelite init`: the account bakelite runs as and the paths it may write",
        "# (each database's directory, for its .bakelite/ state and checkpoints, and a local backup",
        "# directory). The other units get the same drop-in: they read the daemon's status files and",
        "# write the verify marker beside each database.",
        "[Service]",
    ]
    if account is not None:
        lines += [f"User={account.user}", f"Group={account.group}"]
    unique = list(dict.fromkeys(str(p) for p in writable))
    lines.append("ReadWritePaths=" + " ".join(_systemd_quote(Path(p)) for p in unique))
    if any(p == "/home" or p.startswith(("/home/", "/root")) for p in unique):
        lines.append("# A path under /home or /root: the unit's ProtectHome=yes would hide it.")
        lines.append("ProtectHome=no")
    if Path(os.path.abspath(env_file)) != SYSTEM_ENV_FILE:
        lines.append(f"EnvironmentFile=-{_systemd_quote(env_file)}")
    if Path(os.path.abspath(config)) != DEFAULT_CONFIG_PATH:
        command = _unit_exec_start(unit).replace(_UNIT_CONFIG_ARG, f"--config {_systemd_quote(config)}")
        lines += ["# The config is not at the default path: the same command, pointed at it.", "ExecStart="]
        lines.append(f"ExecStart={command}")
    return "\n".join(lines) + "\n"


def render_cron(user: str, config: Path) -> str:
    """The shipped cron.d file with its user column set to ``user`` and the config path filled in."""
    out = []
    for line in packaged_file(CRON_FILE).splitlines():
        fields = line.split(None, 6)
        if line and not line.startswith("#") and "=" not in fields[0] and len(fields) == 7:
            fields[5] = user
            line = "  ".join(fields)
        out.append(line.replace(_UNIT_CONFIG_ARG, f"--config {shlex.quote(str(config))}"))
    return "\n".join(out) + "\n"


def install_units(host: Host, force: bool) -> list[Step]:
    """Copy the shipped unit files into the unit directory (disabled); a local edit needs ``force``."""
    steps = []
    for unit in UNIT_FILES:
        step = write_text(host.unit_dir / unit, packaged_file(unit), mode=0o644, replace=force, name="unit")
        if step.status == "skipped":
            step = Step("unit", "skipped", f"{step.message} (--force replaces it)")
        steps.append(step)
    return steps


def write_dropins(
    host: Host, account: Account | None, writable: Sequence[Path], config: Path, replace: bool
) -> list[Step]:
    """Write the drop-in for every service unit."""
    steps = []
    for unit in SERVICE_UNITS:
        text = render_dropin(unit, account, writable, config, host.env_file)
        path = host.unit_dir / f"{unit}.d" / DROPIN_NAME
        steps.append(write_text(path, text, mode=0o644, replace=replace, name="drop-in"))
    return steps


def run_systemctl(systemctl: str, *args: str) -> Step:
    """Run one ``systemctl`` command; a failure is a failed step carrying its stderr."""
    command = [systemctl, *args]
    shown = "systemctl " + " ".join(args)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return Step("systemctl", "failed", f"{shown}: {e}")
    if result.returncode != 0:
        return Step("systemctl", "failed", f"{shown}: exit {result.returncode}: {result.stderr.strip()}")
    return Step("systemctl", "done", shown)


NO_SYSTEMD = (
    "systemd is not running here (no /run/systemd/system or no systemctl): skipped the unit files, "
    "the drop-ins and enabling"
)


def doctor_step(config: Path) -> tuple[Step, DoctorReport]:
    """Run doctor against the written config."""
    from bakelite.config.env import load_env_files

    env: EnvReport | None = None
    env_error: ConfigError | None = None
    try:
        env = load_env_files()
    except ConfigError as e:
        env_error = e
    report = run_doctor(config, None, env, env_error)
    status: StepStatus = "done" if report.failures == 0 else "failed"
    message = f"{report.failures} failure(s), {report.warnings} warning(s)"
    return Step("doctor", status, message), report


def _exit_code(steps: Sequence[Step], doctor: DoctorReport | None) -> int:
    if any(s.status == "failed" and s.name != "doctor" for s in steps):
        return EXIT_RUNTIME
    return doctor.exit_code if doctor is not None else EXIT_OK


# -- the three entry points -----------------------------------------------------------------------


def starter(host: Host, opts: InitOptions) -> InitReport:
    """``--recipe NAME --yes``: write a validated starter config to edit, nothing else."""
    recipe = opts.recipe or "local"
    plan = starter_plan(recipe, host)
    text = render_config(plan)
    check_config_text(text, opts.config)
    step = write_text(opts.config, text, mode=0o644, replace=opts.force, name="config")
    if step.status == "skipped":
        raise OutputExistsError(
            f"{opts.config} already exists; init does not overwrite it without --force",
            hint="pass --force to replace it, or --config PATH to write elsewhere",
        )
    next_steps = (
        f"edit {opts.config}: the placeholders (database path, destination) are examples",
        f"then check it: bakelite doctor --config {opts.config}",
    )
    return InitReport(config=opts.config, recipe=recipe, steps=(step,), next_steps=next_steps)


def unattended(host: Host, opts: InitOptions) -> InitReport:
    """``--yes --db-path ...``: the whole local-backend setup with no questions."""
    if opts.db_path is None:
        raise UsageError("the unattended setup needs --db-path")
    if opts.recipe not in (None, "local"):
        raise UsageError(
            f"--db-path sets up the local recipe only, not {opts.recipe!r}",
            hint="for a cloud destination, write the config (init --recipe NAME --yes scaffolds one) "
            "and use --service-user/--enable against it",
        )
    if opts.encrypt and opts.key_file is not None:
        raise UsageError("--encrypt and --key-file are alternatives", hint="give one of them")
    db_path = Path(os.path.abspath(opts.db_path))
    if not db_path.parent.is_dir():
        raise UsageError(f"the directory of --db-path does not exist: {db_path.parent}")
    config = Path(os.path.abspath(opts.config))
    backup_dir = Path(os.path.abspath(opts.backup_dir or host.path(DEFAULT_BACKUP_DIR)))
    account = lookup_account(opts.service_user or proposed_user(db_path), opts.service_group)

    key_file: Path | None = None
    if opts.encrypt:
        key_file = config.parent / KEY_FILE_NAME
    elif opts.key_file is not None:
        key_file = Path(os.path.abspath(opts.key_file))
        if not key_file.is_file():
            raise UsageError(
                f"--key-file {key_file} does not exist", hint="make one: bakelite keygen --output PATH"
            )
    plan = Plan(
        recipe="local",
        db_name=opts.db_name or default_db_name(db_path),
        db_path=db_path,
        backend={"type": "file", "path": str(backup_dir)},
        key_file=key_file,
    )
    text = render_config(plan)
    check_config_text(text, config)
    if config.exists() and not opts.force and config.read_text(encoding="utf-8", errors="replace") != text:
        raise OutputExistsError(
            f"{config} already exists; init does not overwrite it without --force",
            hint="pass --force to replace it (an existing key file is never replaced)",
        )

    steps: list[Step] = []
    if opts.encrypt and key_file is not None:
        steps.append(make_key(key_file))
        steps.append(chown(key_file, account, "key owner"))
    elif key_file is not None:
        from bakelite.crypto.keys import read_key_file

        read_key_file(key_file)
        steps.append(Step("key", "unchanged", f"using the existing key {key_file}"))
    steps.append(write_text(config, text, mode=0o644, replace=True, name="config"))
    steps += backup_dir_step(backup_dir, account)
    steps += _service_steps(host, opts, account, [db_path.parent, backup_dir], config, replace_dropins=True)
    doctor_result, doctor = doctor_step(config)
    steps.append(doctor_result)
    return InitReport(
        config=config,
        recipe="local",
        steps=tuple(steps),
        doctor=doctor,
        next_steps=_next_steps(host, config, plan.db_name, opts.enable),
        exit_code=_exit_code(steps, doctor),
    )


def _service_steps(
    host: Host,
    opts: InitOptions,
    account: Account,
    writable: Sequence[Path],
    config: Path,
    *,
    replace_dropins: bool,
) -> list[Step]:
    """Units, drop-ins and enabling under systemd; the cron file (with --enable) without it."""
    systemctl = host.systemctl()
    if systemctl is None:
        steps = [Step("systemd", "skipped", NO_SYSTEMD)]
        if opts.enable and host.cron_dir.is_dir():
            steps.append(
                write_text(
                    host.cron_dir / "bakelite",
                    render_cron(account.user, config),
                    mode=0o644,
                    replace=opts.force,
                    name="cron",
                )
            )
        elif opts.enable:
            steps.append(Step("cron", "skipped", f"no {host.cron_dir}: install the schedules yourself"))
        return steps
    steps = install_units(host, opts.force)
    steps += write_dropins(host, account, writable, config, replace_dropins)
    steps.append(run_systemctl(systemctl, "daemon-reload"))
    if opts.enable:
        steps.append(run_systemctl(systemctl, "unmask", "bakelite.service"))
        steps.append(run_systemctl(systemctl, "enable", "--now", *ENABLE_UNITS))
    return steps


def _next_steps(host: Host, config: Path, db_name: str, enabled: bool) -> tuple[str, ...]:
    cfg = shlex.quote(str(config))
    running = host.systemctl() is not None
    steps = []
    if not running:
        steps.append(f"start the daemon under your supervisor: bakelite daemon --config {cfg}")
    elif not enabled:
        steps.append("start it: sudo systemctl enable --now " + " ".join(ENABLE_UNITS))
    steps += [
        f"watch it: bakelite status --config {cfg}",
        f"prove a restore: bakelite verify --deep --db {db_name} --config {cfg}",
    ]
    return tuple(steps)


# -- the wizard -----------------------------------------------------------------------------------


def _ask_path(ui: Prompter, question: str, default: str | None) -> Path:
    while True:
        answer = ui.ask(question, default)
        if answer.startswith("/"):
            return Path(answer)
        ui.say("  please give an absolute path (starting with /)")


def _ask_int(ui: Prompter, question: str, default: int) -> int:
    while True:
        answer = ui.ask(question, str(default))
        if answer.isdigit():
            return int(answer)
        ui.say("  please give a number")


def _ask_backend(
    ui: Prompter, recipe: str, db_name: str, host: Host, opts: InitOptions
) -> tuple[dict[str, str | int | bool], dict[str, str]]:
    """The destination table and the credentials for ``recipe``."""
    creds: dict[str, str] = {}
    if recipe == "local":
        default = str(opts.backup_dir or host.path(DEFAULT_BACKUP_DIR))
        return {"type": "file", "path": str(_ask_path(ui, "Backup directory", default))}, creds
    if recipe == "s3":
        backend: dict[str, str | int | bool] = {"type": "s3", "bucket": ui.ask("S3 bucket")}
        backend["prefix"] = ui.ask("Key prefix in the bucket", db_name)
        backend["region"] = ui.ask("Region", "us-east-1")
        endpoint = ui.ask("Endpoint URL (blank for AWS; set it for R2, B2, MinIO)", "")
        if endpoint:
            backend["endpoint"] = endpoint
        access = ui.ask("AWS_ACCESS_KEY_ID (blank: use the instance role / default chain)", "")
        if access:
            creds["AWS_ACCESS_KEY_ID"] = access
            creds["AWS_SECRET_ACCESS_KEY"] = ui.secret("AWS_SECRET_ACCESS_KEY")
        return backend, creds
    if recipe == "gcs":
        backend = {"type": "gcs", "bucket": ui.ask("GCS bucket"), "prefix": ui.ask("Object prefix", db_name)}
        account = ui.ask("Service-account JSON key file (blank: Application Default Credentials)", "")
        if account:
            backend["service_account_path"] = account
        return backend, creds
    if recipe == "azure":
        backend = {
            "type": "azure",
            "account": ui.ask("Storage account"),
            "container": ui.ask("Container", "backups"),
            "prefix": ui.ask("Blob prefix", db_name),
        }
        key = ui.secret("AZURE_STORAGE_ACCOUNT_KEY (blank: set credentials yourself)")
        if key:
            creds["AZURE_STORAGE_ACCOUNT_KEY"] = key
        return backend, creds
    if recipe == "sftp":
        backend = {"type": "sftp", "host": ui.ask("SFTP host")}
        port = _ask_int(ui, "Port", 22)
        if port != 22:
            backend["port"] = port
        backend["user"] = ui.ask("Login user", "bakelite")
        backend["path"] = ui.ask("Directory on the server", f"backups/{db_name}")
        identity = ui.ask("Private key file (blank: password)", str(host.path("/etc/bakelite/id_ed25519")))
        if identity:
            backend["identity_file"] = identity
        else:
            password = ui.secret("BAKELITE_SFTP_PASSWORD")
            if password:
                creds["BAKELITE_SFTP_PASSWORD"] = password
        known = ui.ask("known_hosts file (blank: ~/.ssh/known_hosts)", "")
        if known:
            backend["known_hosts"] = known
        return backend, creds
    raise UsageError(f"unknown recipe {recipe!r}", hint=f"choose one of: {', '.join(RECIPES)}")


def _confirm_write(ui: Prompter, path: Path, text: str, *, mode: int, name: str, what: str) -> Step:
    """Ask before writing ``path``, and again before replacing an existing different file."""
    if path.exists() and path.read_text(encoding="utf-8", errors="replace") == text:
        return Step(name, "unchanged", f"{path} already up to date")
    if not ui.confirm(f"Write {what} to {path}?", True):
        return Step(name, "skipped", f"{path}: not written (declined)")
    replace = False
    if path.exists():
        replace = ui.confirm(f"{path} exists and differs. Overwrite it?", False)
        if not replace:
            return Step(name, "skipped", f"{path} exists; kept it")
    return write_text(path, text, mode=mode, replace=replace, name=name)


def wizard(host: Host, opts: InitOptions, ui: Prompter) -> InitReport:
    """The interactive setup: every answer has a default, every write is confirmed."""
    ui.say(
        "bakelite init: a few questions, then each step is shown and confirmed before it is done.\n"
        "Press Enter to take the [default]. Nothing is overwritten without asking."
    )
    recipe = ""
    while recipe not in RECIPES:
        recipe = ui.ask(f"Recipe ({' / '.join(RECIPES)})", opts.recipe or "local").strip().lower()
    db_path = _ask_path(ui, "Database file to back up", str(opts.db_path) if opts.db_path else None)
    db_name = ui.ask("Name for it in the config", opts.db_name or default_db_name(db_path))
    backend, creds = _ask_backend(ui, recipe, db_name, host, opts)
    config = Path(os.path.abspath(opts.config))
    key_path = Path(os.path.abspath(opts.key_file)) if opts.key_file else config.parent / KEY_FILE_NAME
    key_file = key_path if ui.confirm("Encrypt backups at rest (a key file, mode 0600)?", True) else None
    plan = Plan(recipe, db_name, db_path, backend, key_file, creds)
    text = render_config(plan)
    try:
        check_config_text(text, config)
    except ConfigError as e:
        ui.say(f"That config is not valid: {e.one_line()}")
        raise
    ui.say(f"The config (validated):\n\n{text}")

    steps: list[Step] = []
    if key_file is not None:
        if key_file.exists() or ui.confirm(f"Generate a new key at {key_file}?", True):
            steps.append(make_key(key_file))
        else:
            steps.append(Step("key", "skipped", f"no key generated: create {key_file} before starting"))
    config_step = _confirm_write(ui, config, text, mode=0o644, name="config", what="the config")
    steps.append(config_step)
    if creds:
        env_text = render_env_file(creds)
        ui.say(f"Credentials ({', '.join(creds)}) go in an env file only root and the unit can read.")
        steps.append(
            _confirm_write(
                ui, host.env_file, env_text, mode=0o600, name="credentials", what="the credentials"
            )
        )

    owner = proposed_user(db_path) if db_path.parent.exists() else "root"
    user = ui.ask(
        f"Run bakelite as user (the owner of {db_path.name} is {owner})", opts.service_user or owner
    )
    account = lookup_account(user, None)
    group = ui.ask("... and group", opts.service_group or account.group)
    account = lookup_account(user, group)
    writable = [db_path.parent]
    if recipe == "local":
        backup_dir = Path(str(backend["path"]))
        writable.append(backup_dir)
        if backup_dir.is_dir() or ui.confirm(f"Create {backup_dir} (mode 0700, owned by {user})?", True):
            steps += backup_dir_step(backup_dir, account)
    if (
        key_file is not None
        and key_file.exists()
        and ui.confirm(f"Give {key_file} to {user} so the daemon can read it?", True)
    ):
        steps.append(chown(key_file, account, "key owner"))

    systemctl = host.systemctl()
    if systemctl is None:
        ui.say(NO_SYSTEMD + ".")
        steps.append(Step("systemd", "skipped", NO_SYSTEMD))
        cron = host.cron_dir / "bakelite"
        if host.cron_dir.is_dir():
            steps.append(
                _confirm_write(
                    ui, cron, render_cron(user, config), mode=0o644, name="cron", what="the cron schedules"
                )
            )
    else:
        if ui.confirm(f"Install the bakelite units into {host.unit_dir} (disabled)?", True):
            for unit in UNIT_FILES:
                steps.append(
                    _confirm_write(
                        ui, host.unit_dir / unit, packaged_file(unit), mode=0o644, name="unit", what=unit
                    )
                    if (host.unit_dir / unit).exists()
                    else write_text(
                        host.unit_dir / unit, packaged_file(unit), mode=0o644, replace=False, name="unit"
                    )
                )
        dropin = render_dropin("bakelite.service", account, writable, config, host.env_file)
        ui.say(f"The drop-in for the bakelite units:\n\n{dropin}")
        if ui.confirm("Write this drop-in for all five bakelite services?", True):
            for unit in SERVICE_UNITS:
                path = host.unit_dir / f"{unit}.d" / DROPIN_NAME
                unit_text = render_dropin(unit, account, writable, config, host.env_file)
                if path.exists() and path.read_text(encoding="utf-8") != unit_text:
                    replace = ui.confirm(f"{path} exists and differs. Overwrite it?", False)
                else:
                    replace = True
                steps.append(write_text(path, unit_text, mode=0o644, replace=replace, name="drop-in"))
            steps.append(run_systemctl(systemctl, "daemon-reload"))
        if ui.confirm("Enable and start the daemon and the check/verify timers now?", False):
            steps.append(run_systemctl(systemctl, "unmask", "bakelite.service"))
            steps.append(run_systemctl(systemctl, "enable", "--now", *ENABLE_UNITS))

    doctor: DoctorReport | None = None
    if config.exists() and ui.confirm("Run doctor now (probes the destination)?", True):
        step, doctor = doctor_step(config)
        steps.append(step)
    return InitReport(
        config=config,
        recipe=recipe,
        steps=tuple(steps),
        doctor=doctor,
        next_steps=_next_steps(host, config, db_name, enabled=False),
        exit_code=_exit_code(steps, doctor),
    )


def render_init_text(report: InitReport) -> str:
    """One line per step, then doctor's report and the next steps."""
    width = max((len(s.name) for s in report.steps), default=0)
    lines = [f"  {s.status:<9}  {s.name:<{width}}  {s.message}" for s in report.steps]
    if report.doctor is not None:
        from bakelite.ops.doctor import render_doctor_text

        lines += ["", "doctor:", render_doctor_text(report.doctor)]
    if report.next_steps:
        lines += ["", "next:"] + [f"  {s}" for s in report.next_steps]
    return "\n".join([f"bakelite init ({report.recipe}) -> {report.config}", *lines])
