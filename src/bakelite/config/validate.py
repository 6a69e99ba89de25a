"""Semantic checks on a built :class:`Config`, the same for TOML and for configs built in Python.

Every check names the key's full path (``database[app].backends[1].storage_class``) and all problems
are collected, so one run of ``bakelite doctor`` shows everything wrong rather than one per edit.
Structural problems a model cannot hold (unknown keys, TOML types) are found by ``load.py``, which
reuses :class:`Problem` and :func:`problems_error` so both render alike.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
import math
import re
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bakelite.config.model import (
    AzureBackend,
    Backend,
    BackendBase,
    Config,
    DaemonSettings,
    Database,
    Encryption,
    FileBackend,
    GCSBackend,
    S3Backend,
    SFTPBackend,
    Tunables,
)
from bakelite.errors import ConfigError
from bakelite.units import format_duration

logger = logging.getLogger(__name__)

BACKEND_CLASSES: dict[str, type[BackendBase]] = {
    cls.type: cls for cls in (FileBackend, S3Backend, GCSBackend, AzureBackend, SFTPBackend)
}

# Byte sizes among the integer tunables (they accept "16MiB"); every other int is a plain count.
SIZE_FIELDS: frozenset[str] = frozenset({"max_wal_size", "max_total_size"})
# Durations where zero would mean a busy loop or nonsense rather than "disabled".
POSITIVE_DURATIONS: frozenset[str] = frozenset(
    {
        "max_batch_delay",
        "safety_poll",
        "manifest_flush",
        "snapshot_interval",
        "mirror_interval",
        "request_timeout",
        "connect_timeout",
    }
)
POSITIVE_SIZES: frozenset[str] = frozenset({"max_wal_size"})
# Encryption.key holds inline key material from BAKELITE_KEY only; TOML never sets it.
INTERNAL_FIELDS: frozenset[tuple[type, str]] = frozenset({(Encryption, "key")})

# Instant-read storage classes per provider.  Thaw-requiring tiers are listed apart so the message
# can say why they are refused rather than just "unknown".
STORAGE_CLASSES: dict[str, tuple[str, ...]] = {
    "s3": ("STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR"),
    "gcs": ("STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"),
    "azure": ("Hot", "Cool", "Cold"),
}
THAW_STORAGE_CLASSES: dict[str, dict[str, str]] = {
    "s3": {"GLACIER": "S3 Glacier Flexible Retrieval", "DEEP_ARCHIVE": "S3 Glacier Deep Archive"},
    "azure": {"Archive": "the Azure Archive tier"},
}

MAX_NAME_LENGTH = 128
_NAME_CHARS_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Kind = Literal["duration", "durations", "size", "int", "bool", "str", "path", "choice"]


@dataclass(frozen=True)
class FieldSpec:
    """How one model field is written in TOML and checked."""

    name: str
    kind: Kind
    optional: bool
    required: bool
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration, at one key path."""

    path: str
    message: str
    hint: str | None = None

    @property
    def text(self) -> str:
        """``path: message``, the line a user reads."""
        return f"{self.path}: {self.message}" if self.path else self.message

    @property
    def full_text(self) -> str:
        """The text with its hint, for listing several problems on one line."""
        return f"{self.text} ({self.hint})" if self.hint else self.text


@dataclass(frozen=True)
class Provenance:
    """Where a TOML-built config's values came from, so each problem is reported once, where written.

    ``shared`` objects (top-level backends, the ``[defaults.encryption]`` block) are checked once under
    their own path and skipped inside each database; ``own_keys`` limits per-database tunable checks to
    the keys that database set itself, the rest being checked once under ``defaults``.
    """

    defaults: Tunables | None = None
    own_keys: tuple[frozenset[str], ...] = ()
    shared: tuple[tuple[str, Backend | Encryption], ...] = ()


def suggest(word: str, options: Iterable[str]) -> str | None:
    """The closest valid spelling of ``word`` among ``options``, if any is close."""
    opts = list(options)
    for opt in opts:
        if opt.lower() == word.lower():
            return opt
    matches = difflib.get_close_matches(word, opts, n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` or an empty string."""
    best = suggest(word, options)
    return f" (did you mean {best!r}?)" if best else ""


@functools.cache
def field_specs(cls: type) -> dict[str, FieldSpec]:
    """The TOML-settable fields of a model dataclass, derived from its type hints."""
    hints = typing.get_type_hints(cls)
    specs: dict[str, FieldSpec] = {}
    for f in dataclasses.fields(cls):
        if any(issubclass(cls, owner) and f.name == name for owner, name in INTERNAL_FIELDS):
            continue
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = type(None) in args
        if optional:
            non_none = [a for a in args if a is not type(None)]
            hint = non_none[0] if len(non_none) == 1 else hint
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        origin = typing.get_origin(hint)
        choices: tuple[str, ...] = ()
        kind: Kind
        if origin is Literal:
            kind, choices = "choice", tuple(str(a) for a in typing.get_args(hint))
        elif origin is tuple:
            kind = "durations"
        elif hint is bool:
            kind = "bool"
        elif hint is int:
            kind = "size" if f.name in SIZE_FIELDS else "int"
        elif hint is float:
            kind = "duration"
        elif hint is str:
            kind = "str"
        elif hint is Path:
            kind = "path"
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no config kind for type {hint!r}")
        specs[f.name] = FieldSpec(f.name, kind, optional, required, choices)
    return specs


TUNABLE_SPECS: dict[str, FieldSpec] = field_specs(Tunables)
ENCRYPTION_SPECS: dict[str, FieldSpec] = field_specs(Encryption)
DAEMON_SPECS: dict[str, FieldSpec] = field_specs(DaemonSettings)


def database_label(name: object, index: int) -> str:
    """``database[<name>]``, or ``database[<index>]`` (0-based) when the name is not a valid one."""
    if name_problem(name) is None:
        return f"database[{name}]"
    return f"database[{index}]"


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a database name (it becomes a file and object-key component), or None."""
    if not isinstance(name, str):
        return f"the name must be a string, got {type(name).__name__}"
    if not name:
        return "the name must not be empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"the name is {len(name)} characters long; at most {MAX_NAME_LENGTH} are allowed"
    if "\x00" in name or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return f"the name {name!r} contains a NUL or control character"
    if "/" in name or "\\" in name:
        return f"the name {name!r} contains a path separator"
    if ".." in name:
        return f"the name {name!r} contains '..'"
    if name.startswith("."):
        return f"the name {name!r} starts with '.'"
    if not _NAME_CHARS_RE.match(name):
        bad = sorted({c for c in name if not re.match(r"[A-Za-z0-9._-]", c)})
        return f"the name {name!r} contains {', '.join(repr(c) for c in bad)}"
    return None


NAME_RULE = "use letters, digits, '.', '_' and '-' only (at most 128, not starting with '.')"


def _show_duration(seconds: float) -> str:
    try:
        return format_duration(seconds)
    except (ValueError, OverflowError):
        return f"{seconds}s"


def _check_value(spec: FieldSpec, value: Any, path: str, out: list[Problem]) -> None:
    """Type and range of one model value (not its TOML spelling, which load.py checks)."""
    if value is None:
        if not spec.optional:
            out.append(Problem(path, "must be set"))
        return
    kind = spec.kind
    if kind == "bool":
        if not isinstance(value, bool):
            out.append(Problem(path, f"expected true or false, got {value!r}"))
    elif kind in ("int", "size"):
        if isinstance(value, bool) or not isinstance(value, int):
            out.append(Problem(path, f"expected an integer, got {value!r}"))
        elif value < 0:
            out.append(Problem(path, f"must not be negative, got {value}"))
        elif value == 0 and spec.name in POSITIVE_SIZES:
            out.append(Problem(path, "must be greater than 0"))
    elif kind == "duration":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            out.append(Problem(path, f"expected a duration in seconds, got {value!r}"))
        elif value < 0:
            out.append(Problem(path, f"must not be negative, got {value}"))
        elif value == 0 and spec.name in POSITIVE_DURATIONS:
            out.append(Problem(path, "must be greater than 0s"))
    elif kind == "durations":
        _check_windows(value, path, out)
    elif kind == "choice":
        if value not in spec.choices:
            allowed = ", ".join(f'"{c}"' for c in spec.choices)
            extra = did_you_mean(str(value), spec.choices) if isinstance(value, str) else ""
            out.append(Problem(path, f"{value!r} is not one of {allowed}{extra}"))
    elif kind == "str":
        if not isinstance(value, str):
            out.append(Problem(path, f"expected a string, got {value!r}"))
    elif kind == "path":
        if not isinstance(value, Path):
            out.append(Problem(path, f"expected a pathlib.Path, got {type(value).__name__}"))
        elif str(value) in ("", "."):
            out.append(Problem(path, "must not be empty"))


def _check_windows(value: Any, path: str, out: list[Problem]) -> None:
    if not isinstance(value, tuple | list):
        out.append(Problem(path, f"expected a list of durations, got {value!r}"))
        return
    previous: float | None = None
    for i, window in enumerate(value):
        if isinstance(window, bool) or not isinstance(window, int | float) or not math.isfinite(window):
            out.append(Problem(f"{path}[{i}]", f"expected a duration in seconds, got {window!r}"))
            return
        if window <= 0:
            out.append(Problem(f"{path}[{i}]", "a compaction window must be greater than 0s"))
            return
        if previous is not None and window <= previous:
            out.append(
                Problem(
                    path,
                    f"windows must strictly increase, but {_show_duration(previous)} is followed by "
                    f"{_show_duration(window)}",
                    hint='e.g. ["30s", "5m", "1h"]; [] disables compaction',
                )
            )
            return
        previous = window


def check_tunables(t: Tunables, path: str, keys: Iterable[str] | None = None) -> list[Problem]:
    """Problems in the tunables ``keys`` (all by default) of ``t``, under ``path``."""
    out: list[Problem] = []
    for name in keys if keys is not None else TUNABLE_SPECS:
        spec = TUNABLE_SPECS.get(name)
        if spec is not None:
            _check_value(spec, getattr(t, name), f"{path}.{name}", out)
    return out


def check_encryption(enc: Encryption, path: str) -> list[Problem]:
    """Problems in one encryption block: exactly one key source, well-typed."""
    if not isinstance(enc, Encryption):
        return [Problem(path, f"expected an Encryption, got {type(enc).__name__}")]
    out: list[Problem] = []
    for spec in ENCRYPTION_SPECS.values():
        _check_value(spec, getattr(enc, spec.name), f"{path}.{spec.name}", out)
    sources = [n for n in ("key", "key_file", "passphrase", "passphrase_file") if getattr(enc, n) is not None]
    if len(sources) > 1:
        names = ", ".join("key (BAKELITE_KEY)" if n == "key" else n for n in sources)
        out.append(
            Problem(
                path,
                f"more than one key source is set ({names})",
                hint="set exactly one of key_file, passphrase or passphrase_file",
            )
        )
    elif not sources:
        out.append(
            Problem(
                path,
                "no key source: the block sets none of key_file, passphrase or passphrase_file",
                hint="set one (or BAKELITE_KEY_FILE / BAKELITE_PASSPHRASE in the environment), "
                "or remove the block to leave the database unencrypted",
            )
        )
    for name in ("key", "passphrase"):
        value = getattr(enc, name)
        if isinstance(value, str) and not value.strip():
            out.append(Problem(f"{path}.{name}", "must not be empty"))
    return out


def check_backend(backend: Backend, path: str) -> list[Problem]:
    """Problems in one destination: types, ranges and the provider-specific rules."""
    cls = type(backend)
    if cls not in BACKEND_CLASSES.values():
        return [Problem(path, f"expected a backend (FileBackend, S3Backend, ...), got {cls.__name__}")]
    out: list[Problem] = []
    for spec in field_specs(cls).values():
        _check_value(spec, getattr(backend, spec.name), f"{path}.{spec.name}", out)
    if out:
        # Provider rules below assume well-typed values.
        return out

    for required in ("bucket", "account", "container", "host"):
        if required in field_specs(cls) and not str(getattr(backend, required)).strip():
            out.append(Problem(f"{path}.{required}", "must not be empty"))
    endpoint = getattr(backend, "endpoint", None)
    if endpoint is not None and not re.match(r"^https?://[^/\s]+", endpoint):
        out.append(
            Problem(
                f"{path}.endpoint",
                f"{endpoint!r} is not an http:// or https:// URL",
                hint="e.g. https://host:9000",
            )
        )
    storage_class = getattr(backend, "storage_class", None)
    if storage_class is not None:
        out.extend(_check_storage_class(backend.type, storage_class, f"{path}.storage_class"))

    if isinstance(backend, S3Backend):
        if backend.sse == "aws:kms" and not backend.sse_kms_key_id:
            out.append(
                Problem(
                    f"{path}.sse_kms_key_id",
                    'is required with sse = "aws:kms"',
                    hint='set it to the KMS key ARN or id, or use sse = "aes256"',
                )
            )
        if backend.sse_kms_key_id is not None and backend.sse != "aws:kms":
            out.append(
                Problem(
                    f"{path}.sse_kms_key_id",
                    'is only used with sse = "aws:kms"',
                    hint='set sse = "aws:kms" or remove sse_kms_key_id',
                )
            )
    elif isinstance(backend, SFTPBackend):
        if not 1 <= backend.port <= 65535:
            out.append(Problem(f"{path}.port", f"{backend.port} is not a TCP port (1-65535)"))
        if not backend.path.strip():
            out.append(Problem(f"{path}.path", "must not be empty", hint='use "." for the login directory'))
        for name in ("passphrase_env", "password_env"):
            var = getattr(backend, name)
            if var is not None and not _ENV_NAME_RE.match(var):
                out.append(
                    Problem(
                        f"{path}.{name}",
                        f"{var!r} is not an environment variable name",
                        hint='it names the variable that holds the secret, e.g. "SFTP_PASSWORD"',
                    )
                )
    return out


def _check_storage_class(provider: str, value: str, path: str) -> list[Problem]:
    allowed = STORAGE_CLASSES.get(provider, ())
    if value in allowed:
        return []
    instant = ", ".join(c for c in allowed if c != "STANDARD" or provider == "gcs")
    thaw = THAW_STORAGE_CLASSES.get(provider, {})
    known = [*allowed, *thaw]
    if value in thaw:
        verb = "rehydrated" if provider == "azure" else "thawed (restored)"
        return [
            Problem(
                path,
                f"{value!r} ({thaw[value]}) needs a thaw: objects must be {verb} asynchronously, for minutes "
                "to hours, before they can be read, which would break bakelite restore",
                hint=f"use an instant-retrieval class: {instant}",
            )
        ]
    return [
        Problem(
            path,
            f"unknown storage class {value!r} for a {provider} backend{did_you_mean(value, known)}",
            hint=f"allowed: {', '.join(allowed)}",
        )
    ]


def _check_metrics_addr(addr: str, path: str) -> list[Problem]:
    hint = 'write it as host:port, e.g. "127.0.0.1:9090", or ":9090" for every interface'
    host, sep, port = addr.rpartition(":")
    # An empty host (":9090") means every interface, as the --metrics-addr flag accepts.
    if not sep:
        return [Problem(path, f"{addr!r} is not host:port", hint=hint)]
    if host.startswith("[") != host.endswith("]") or (":" in host and not host.startswith("[")):
        return [Problem(path, f'{addr!r}: an IPv6 host must be in brackets, e.g. "[::1]:9090"')]
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return [Problem(path, f"{addr!r}: port {port!r} is not a TCP port (1-65535)", hint=hint)]
    return []


def check_daemon(daemon: DaemonSettings, path: str = "daemon") -> list[Problem]:
    """Problems in the ``[daemon]`` settings."""
    if not isinstance(daemon, DaemonSettings):
        return [Problem(path, f"expected DaemonSettings, got {type(daemon).__name__}")]
    out: list[Problem] = []
    for spec in DAEMON_SPECS.values():
        _check_value(spec, getattr(daemon, spec.name), f"{path}.{spec.name}", out)
    if isinstance(daemon.metrics_addr, str):
        out.extend(_check_metrics_addr(daemon.metrics_addr, f"{path}.metrics_addr"))
    return out


def check(config: Config, provenance: Provenance | None = None) -> list[Problem]:
    """Every problem in ``config``, each at the key path where it was written."""
    out: list[Problem] = []
    prov = provenance or Provenance()
    checked: set[int] = set()
    if prov.defaults is not None:
        out.extend(check_tunables(prov.defaults, "defaults"))
    for path, obj in prov.shared:
        checked.add(id(obj))
        if isinstance(obj, Encryption):
            out.extend(check_encryption(obj, path))
        else:
            out.extend(check_backend(obj, path))

    if not isinstance(config.databases, tuple | list):
        return [*out, Problem("database", "expected a tuple of Database")]
    names: dict[str, int] = {}
    for index, db in enumerate(config.databases):
        if not isinstance(db, Database):
            out.append(Problem(f"database[{index}]", f"expected a Database, got {type(db).__name__}"))
            continue
        label = database_label(db.name, index)
        bad_name = name_problem(db.name)
        if bad_name:
            out.append(Problem(f"{label}.name", bad_name, hint=NAME_RULE))
        elif db.name in names:
            out.append(
                Problem(
                    label,
                    f"duplicate database name {db.name!r} (databases #{names[db.name] + 1} and #{index + 1})",
                    hint="every [[database]] needs its own name: it namespaces the backups",
                )
            )
        else:
            names[db.name] = index
        if not isinstance(db.path, Path):
            out.append(Problem(f"{label}.path", f"expected a pathlib.Path, got {type(db.path).__name__}"))
        elif str(db.path) in ("", "."):
            out.append(Problem(f"{label}.path", "is required: the SQLite database file to back up"))
        own = prov.own_keys[index] if index < len(prov.own_keys) else None
        out.extend(check_tunables(db, label, own))
        if db.encryption is not None and id(db.encryption) not in checked:
            out.extend(check_encryption(db.encryption, f"{label}.encryption"))
        out.extend(_check_destinations(db, label, checked))
    out.extend(check_daemon(config.daemon))
    return out


def _check_destinations(db: Database, label: str, checked: set[int]) -> list[Problem]:
    if not isinstance(db.backends, tuple | list):
        return [
            Problem(f"{label}.backends", f"expected a tuple of backends, got {type(db.backends).__name__}")
        ]
    if not db.backends:
        return [
            Problem(
                label,
                "no backend: it has no [[database.backends]] and there is no top-level [[backends]]",
                hint='add one, e.g. [[database.backends]] type = "file" path = "/var/backups/bakelite"',
            )
        ]
    out: list[Problem] = []
    for i, backend in enumerate(db.backends):
        if id(backend) not in checked:
            out.extend(check_backend(backend, f"{label}.backends[{i}]"))
    modes = [getattr(b, "mode", None) for b in db.backends]
    if all(m == "async" for m in modes):
        out.append(
            Problem(
                f"{label}.backends",
                'every destination is mode = "async"; at least one must be "sync" (the first sync one is the '
                "primary that replication waits on)",
                hint='remove mode = "async" from one destination',
            )
        )
    return out


def problems_error(problems: Sequence[Problem], source: Path | str | None = None) -> ConfigError:
    """One ConfigError for a list of problems: the first is the message, the rest are in the detail."""
    first = problems[0]
    where = f" in {source}" if source else ""
    if len(problems) == 1:
        return ConfigError(first.text, detail=where.strip() or None, hint=first.hint)
    # Each hint stays next to its own problem: a trailing hint would read as the fix for all of them.
    others = "; ".join(p.full_text for p in problems[1:])
    detail = f"{len(problems)} problems{where}; also: {others}"
    return ConfigError(first.full_text, detail=detail)


def validate(config: Config, provenance: Provenance | None = None) -> Config:
    """Return ``config`` unchanged if it is valid; raise one ConfigError listing every problem otherwise."""
    problems = check(config, provenance)
    if problems:
        logger.debug("config invalid: source=%s problems=%d", config.source, len(problems))
        raise problems_error(problems, config.source)
    return config
