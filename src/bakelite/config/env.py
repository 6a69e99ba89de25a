"""Environment loading: env files, the config path, and the report ``doctor`` prints.

bakelite reads its own env files so an interactive ``bakelite status`` sees the same secrets as the
systemd unit (whose ``EnvironmentFile=`` has already populated the daemon's environment, making the
loader a no-op there).  Sources, first one wins per variable, and a variable already set always wins:

1. ``$BAKELITE_ENV_FILE`` (explicit: a missing file is an error),
2. ``/etc/bakelite/bakelite.env`` (skipped if absent),
3. ``$XDG_CONFIG_HOME/bakelite/bakelite.env`` (default ``~/.config/bakelite/bakelite.env``).

The file format is the one systemd's ``EnvironmentFile=`` reads, plus a tolerated ``export`` prefix.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bakelite.errors import ConfigError

logger = logging.getLogger(__name__)

# Module constants so tests (and packagers) can point discovery elsewhere.
SYSTEM_ENV_FILE = Path("/etc/bakelite/bakelite.env")
DEFAULT_CONFIG_PATH = Path("/etc/bakelite/bakelite.toml")

REDACTED = "<redacted>"

# Every variable bakelite (or an SDK it drives) reads, in the order doctor lists them.
KNOWN_VARIABLES: tuple[str, ...] = (
    "BAKELITE_CONFIG",
    "BAKELITE_LOG",
    "BAKELITE_ENV_FILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "BAKELITE_AWS_USE_DEFAULT_CREDENTIAL_CHAIN",
    "GOOGLE_SERVICE_ACCOUNT",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_CLIENT_ID",
    "AZURE_STORAGE_CLIENT_SECRET",
    "AZURE_STORAGE_TENANT_ID",
    "BAKELITE_SFTP_PASSWORD",
    "BAKELITE_SFTP_KEY_PASSPHRASE",
    "BAKELITE_KEY",
    "BAKELITE_KEY_FILE",
    "BAKELITE_PASSPHRASE",
    "BAKELITE_PASSPHRASE_FILE",
)

# Values that grant access on their own.  Paths to secret files (BAKELITE_KEY_FILE,
# GOOGLE_APPLICATION_CREDENTIALS, ...) are shown: knowing where a key lives is what doctor is for.
# The access-key id is redacted too: the spec treats it as a credential that must not travel in clear.
SECRET_VARIABLES: frozenset[str] = frozenset(
    {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "GOOGLE_SERVICE_ACCOUNT_KEY",
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_ACCESS_KEY",
        "AZURE_STORAGE_SAS_TOKEN",
        "AZURE_STORAGE_CLIENT_SECRET",
        "BAKELITE_SFTP_PASSWORD",
        "BAKELITE_SFTP_KEY_PASSPHRASE",
        "BAKELITE_KEY",
        "BAKELITE_PASSPHRASE",
    }
)

_SECRET_WORDS = ("SECRET", "PASSWORD", "PASSPHRASE", "TOKEN", "_KEY", "CREDENTIAL")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EXPORT_RE = re.compile(r"^export[ \t]+")

EnvFileRole = Literal["BAKELITE_ENV_FILE", "system", "user"]
EnvFileStatus = Literal["loaded", "absent", "unreadable", "duplicate"]


def is_secret(name: str) -> bool:
    """Whether the value of the variable ``name`` must never be printed."""
    if name in SECRET_VARIABLES:
        return True
    if name in KNOWN_VARIABLES:
        return False
    # An unlisted name (e.g. one a backend's password_env points at): redact on any hint of a secret.
    upper = name.upper()
    return any(word in upper for word in _SECRET_WORDS) or upper.endswith("KEY")


@dataclass(frozen=True)
class EnvFileReport:
    """One env file that discovery considered, and what it contributed."""

    path: Path
    role: EnvFileRole
    status: EnvFileStatus
    # Names this file set (they were not set before).
    applied: tuple[str, ...] = ()
    # Names the file also holds but an earlier source (or the process environment) already set.
    shadowed: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class EnvReport:
    """Which env files were considered and loaded, and which known variables are now set."""

    files: tuple[EnvFileReport, ...]
    # name -> value for every known variable that is set; repr=False keeps secrets out of logs.
    values: Mapping[str, str] = field(repr=False)
    # name -> "environment" (already set) or the path of the env file that provided it.
    sources: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def considered(self) -> tuple[Path, ...]:
        """Every env file discovery looked at, in load order."""
        return tuple(f.path for f in self.files)

    @property
    def loaded(self) -> tuple[Path, ...]:
        """The env files that were read."""
        return tuple(f.path for f in self.files if f.status == "loaded")

    @property
    def set_variables(self) -> tuple[str, ...]:
        """Names of the known variables that are set."""
        return tuple(self.values)

    def redacted(self) -> dict[str, str]:
        """Known variables that are set, name -> value, with secret values replaced by ``<redacted>``."""
        return {name: REDACTED if is_secret(name) else value for name, value in self.values.items()}


def parse_env_text(text: str, origin: str = "<env file>") -> tuple[dict[str, str], list[str]]:
    """Parse env-file text as systemd's EnvironmentFile= does; returns (variables, warnings)."""
    parser = _EnvParser(origin)
    parser.feed(text)
    return parser.values, parser.warnings


class _EnvParser:
    """A character state machine mirroring systemd's env-file reader (quotes, escapes, continuations)."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.values: dict[str, str] = {}
        self.warnings: list[str] = []

    def feed(self, text: str) -> None:
        state = "pre_key"
        key: list[str] = []
        value: list[str] = []
        # Index in ``value`` where a run of trailing unquoted whitespace starts (systemd chomps it).
        trailing_ws: int | None = None
        line = 1
        key_line = 1

        def push() -> None:
            nonlocal key, value, trailing_ws
            if state == "value" and trailing_ws is not None:
                del value[trailing_ws:]
            self._assign("".join(key).rstrip(" \t"), "".join(value), key_line)
            key, value, trailing_ws = [], [], None

        for c in text:
            newline = c in "\n\r"
            if state == "pre_key":
                if c in "#;":
                    state = "comment"
                elif c not in " \t\n\r":
                    state, key, key_line = "key", [c], line
            elif state == "key":
                if newline:
                    self._warn(key_line, f"ignoring line without '=': {''.join(key).strip()!r}")
                    state, key = "pre_key", []
                elif c == "=":
                    state, value, trailing_ws = "pre_value", [], None
                else:
                    key.append(c)
            elif state == "pre_value":
                if newline:
                    push()
                    state = "pre_key"
                elif c == "'":
                    state = "single"
                elif c == '"':
                    state = "double"
                elif c == "\\":
                    state = "value_escape"
                elif c not in " \t":
                    state = "value"
                    value.append(c)
            elif state == "value":
                if newline:
                    push()
                    state = "pre_key"
                elif c == "\\":
                    state, trailing_ws = "value_escape", None
                else:
                    if c not in " \t":
                        trailing_ws = None
                    elif trailing_ws is None:
                        trailing_ws = len(value)
                    value.append(c)
            elif state == "value_escape":
                state = "value"
                if not newline:  # backslash-newline is a continuation: both vanish
                    value.append(c)
            elif state == "single":
                if c == "'":
                    state = "pre_value"
                else:
                    value.append(c)
            elif state == "double":
                if c == '"':
                    state = "pre_value"
                elif c == "\\":
                    state = "double_escape"
                else:
                    value.append(c)
            elif state == "double_escape":
                state = "double"
                if c in '"\\`$':
                    value.append(c)
                elif c != "\n":
                    # Like a shell: an unneeded escape keeps its backslash.
                    value.extend(("\\", c))
            elif state == "comment" and newline:
                state = "pre_key"
            if c == "\n":
                line += 1

        if state in ("single", "double", "double_escape"):
            self._warn(key_line, f"unterminated quote in the value of {''.join(key).strip()!r}")
        if state in ("pre_value", "value", "value_escape", "single", "double", "double_escape"):
            push()
        elif state == "key":
            self._warn(key_line, f"ignoring line without '=': {''.join(key).strip()!r}")

    def _assign(self, raw_key: str, value: str, line: int) -> None:
        name = _EXPORT_RE.sub("", raw_key, count=1)
        if not _NAME_RE.match(name):
            self._warn(line, f"ignoring invalid variable name {raw_key!r}")
            return
        # Later assignments in one file replace earlier ones, as in systemd.
        self.values[name] = value

    def _warn(self, line: int, text: str) -> None:
        message = f"{self.origin}:{line}: {text}"
        logger.warning("env file problem: %s", message)
        self.warnings.append(message)


def _user_env_file(environ: Mapping[str, str]) -> Path:
    xdg = environ.get("XDG_CONFIG_HOME", "")
    # The XDG spec says relative values are invalid and must be ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "bakelite" / "bakelite.env"
    home = environ.get("HOME") or str(Path.home())
    return Path(home) / ".config" / "bakelite" / "bakelite.env"


def load_env_files(
    environ: MutableMapping[str, str] = os.environ,
    *,
    system_file: Path | None = None,
    user_file: Path | None = None,
) -> EnvReport:
    """Load the env files into ``environ`` (set variables win) and report what was considered and set."""
    initially_set = set(environ)
    candidates: list[tuple[Path, EnvFileRole]] = []
    explicit = environ.get("BAKELITE_ENV_FILE", "")
    if explicit:
        candidates.append((Path(explicit).expanduser(), "BAKELITE_ENV_FILE"))
    candidates.append((system_file if system_file is not None else SYSTEM_ENV_FILE, "system"))
    candidates.append((user_file if user_file is not None else _user_env_file(environ), "user"))

    files: list[EnvFileReport] = []
    warnings: list[str] = []
    sources: dict[str, str] = {}
    seen: set[Path] = set()
    for path, role in candidates:
        resolved = Path(os.path.abspath(path))
        if resolved in seen:
            files.append(EnvFileReport(path=path, role=role, status="duplicate"))
            continue
        seen.add(resolved)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as e:
            if role == "BAKELITE_ENV_FILE":
                raise ConfigError(
                    f"env file {path} (from BAKELITE_ENV_FILE) not found",
                    hint="fix or unset BAKELITE_ENV_FILE",
                ) from e
            files.append(EnvFileReport(path=path, role=role, status="absent"))
            continue
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            if role == "BAKELITE_ENV_FILE":
                raise ConfigError(
                    f"cannot read env file {path} (from BAKELITE_ENV_FILE): {reason}",
                    hint="fix its permissions or unset BAKELITE_ENV_FILE",
                ) from e
            # A root-only system file is normal for an unprivileged CLI user: report, don't fail.
            files.append(EnvFileReport(path=path, role=role, status="unreadable", error=reason))
            warnings.append(f"{path}: not readable ({reason})")
            logger.warning("env file not readable: path=%s reason=%s", path, reason)
            continue
        parsed, file_warnings = parse_env_text(text, origin=str(path))
        warnings.extend(file_warnings)
        applied: list[str] = []
        shadowed: list[str] = []
        for name, value in parsed.items():
            if name in environ:
                shadowed.append(name)
                continue
            environ[name] = value
            sources[name] = str(path)
            applied.append(name)
        files.append(
            EnvFileReport(
                path=path, role=role, status="loaded", applied=tuple(applied), shadowed=tuple(shadowed)
            )
        )
        logger.debug("env file loaded: path=%s applied=%d shadowed=%d", path, len(applied), len(shadowed))

    values = {name: environ[name] for name in KNOWN_VARIABLES if name in environ}
    for name in values:
        if name in initially_set:
            sources[name] = "environment"
    return EnvReport(
        files=tuple(files),
        values=values,
        sources={name: sources[name] for name in values},
        warnings=tuple(warnings),
    )


def config_path(cli_value: str | Path | None, environ: Mapping[str, str] | None = None) -> Path:
    """The config file to read: ``--config``, else ``$BAKELITE_CONFIG``, else the system default."""
    if cli_value:
        return Path(cli_value).expanduser()
    env = os.environ if environ is None else environ
    from_env = env.get("BAKELITE_CONFIG", "")
    if from_env:
        return Path(from_env).expanduser()
    return DEFAULT_CONFIG_PATH
