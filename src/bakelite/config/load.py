"""Read the TOML config into the model: strict keys, units, inheritance and env overrides.

Unknown keys are errors (with the nearest valid name) because a silently ignored typo is how a peer
tool lost two days of retention.  Everything a model cannot hold -- unknown keys, TOML types, unit
spelling -- is checked here; value rules are left to ``validate.py`` so Python-built configs get them
too.  All problems are collected and raised as one ConfigError.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import tomllib
from collections.abc import Mapping
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, cast

from bakelite.config.model import (
    Backend,
    BackendBase,
    Config,
    DaemonSettings,
    Database,
    Encryption,
    FileBackend,
    Tunables,
)
from bakelite.config.validate import (
    BACKEND_CLASSES,
    DAEMON_SPECS,
    ENCRYPTION_SPECS,
    TUNABLE_SPECS,
    FieldSpec,
    Problem,
    Provenance,
    check,
    database_label,
    did_you_mean,
    field_specs,
    problems_error,
)
from bakelite.errors import ConfigError
from bakelite.units import parse_duration, parse_size

logger = logging.getLogger(__name__)

TOP_LEVEL_KEYS: tuple[str, ...] = ("defaults", "database", "backends", "daemon")
DATABASE_KEYS: tuple[str, ...] = ("name", "path", "backends", "encryption", *TUNABLE_SPECS)
DEFAULTS_KEYS: tuple[str, ...] = (*TUNABLE_SPECS, "encryption")
# Env variables that replace the key source of every database; at most one may be set.
ENV_KEY_VARIABLES: tuple[str, ...] = (
    "BAKELITE_KEY",
    "BAKELITE_KEY_FILE",
    "BAKELITE_PASSPHRASE",
    "BAKELITE_PASSPHRASE_FILE",
)
_BACKEND_KEYS_BY_TYPE: dict[str, tuple[str, ...]] = {
    name: ("type", *field_specs(cls)) for name, cls in BACKEND_CLASSES.items()
}
_ALL_BACKEND_KEYS: frozenset[str] = frozenset(k for keys in _BACKEND_KEYS_BY_TYPE.values() for k in keys)
_TOML_LINE_RE = re.compile(r"at line (\d+)")


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, parse and validate the TOML config at ``path`` (env key overrides from ``environ``)."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError(
            f"config file {source} not found",
            hint="pass --config PATH (or set BAKELITE_CONFIG), or run `bakelite init` to create one",
        ) from e
    except IsADirectoryError as e:
        raise ConfigError(
            f"config file {source} is a directory", hint="pass the path of the .toml file"
        ) from e
    except PermissionError as e:
        raise ConfigError(
            f"cannot read config file {source}: permission denied",
            hint="run as a user that can read it (e.g. with sudo), or fix its permissions",
        ) from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {source} is not UTF-8 text", detail=str(e)) from e
    except OSError as e:
        raise ConfigError(f"cannot read config file {source}: {e.strerror or e}") from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        detail = None
        m = _TOML_LINE_RE.search(str(e))
        if m:
            lines = text.splitlines()
            n = int(m.group(1))
            if 1 <= n <= len(lines):
                detail = f"line {n}: {lines[n - 1].strip()}"
        raise ConfigError(f"{source}: invalid TOML: {e}", detail=detail) from e
    logger.debug("config read: path=%s", source)
    return parse_config(data, source=source, environ=environ)


def parse_config(
    data: Mapping[str, Any], source: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Build and validate a Config from parsed TOML ``data``; relative paths are relative to ``source``."""
    env = os.environ if environ is None else environ
    src = Path(source) if source is not None else None
    base_dir = Path(os.path.abspath(src.parent)) if src is not None else None
    parser = _Parser(base_dir, env)
    config, provenance = parser.parse(data, src)
    problems = list(parser.problems)
    # Value rules run even when structure is wrong, so one run reports everything.
    for problem in check(config, provenance):
        if problem not in problems:
            problems.append(problem)
    if problems:
        raise problems_error(problems, src)
    return config


def env_key_source(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """The one env variable overriding the key source, as (name, value); ConfigError if several are set."""
    env = os.environ if environ is None else environ
    # An empty value counts as unset: a placeholder line in an env file must not mean "no key".
    found = [(name, env[name]) for name in ENV_KEY_VARIABLES if env.get(name)]
    if len(found) > 1:
        raise ConfigError(
            f"more than one encryption key variable is set: {', '.join(n for n, _ in found)}",
            hint=f"set only one of {', '.join(ENV_KEY_VARIABLES)}: it overrides [encryption] everywhere",
        )
    return found[0] if found else None


def env_encryption(base: Encryption | None, variable: str, value: str) -> Encryption:
    """The encryption block ``variable=value`` yields, keeping ``base``'s require_encrypted."""
    require = base.require_encrypted if base is not None else True
    if variable == "BAKELITE_KEY":
        return Encryption(key=value, require_encrypted=require)
    if variable == "BAKELITE_KEY_FILE":
        return Encryption(key_file=Path(value).expanduser(), require_encrypted=require)
    if variable == "BAKELITE_PASSPHRASE":
        return Encryption(passphrase=value, require_encrypted=require)
    if variable == "BAKELITE_PASSPHRASE_FILE":
        return Encryption(passphrase_file=Path(value).expanduser(), require_encrypted=require)
    raise ValueError(f"not an encryption key variable: {variable}")


def apply_env_overrides(config: Config, environ: Mapping[str, str] | None = None) -> Config:
    """``config`` with every database's key source replaced by BAKELITE_KEY* from the environment, if set."""
    found = env_key_source(environ)
    if found is None:
        return config
    variable, value = found
    databases = tuple(
        dataclasses.replace(db, encryption=env_encryption(db.encryption, variable, value))
        for db in config.databases
    )
    return dataclasses.replace(config, databases=databases)


def _describe(value: object) -> str:
    """A TOML-flavoured name and value for a type error."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value}"
    if isinstance(value, str):
        return f'string "{value}"'
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime | date | time):
        return f"date-time {value.isoformat()}"
    return type(value).__name__


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Parser:
    """One pass over the TOML document, collecting problems instead of stopping at the first."""

    def __init__(self, base_dir: Path | None, environ: Mapping[str, str]) -> None:
        self.base_dir = base_dir
        self.environ = environ
        self.problems: list[Problem] = []
        self.env_key: tuple[str, str] | None = None

    def problem(self, path: str, message: str, hint: str | None = None) -> None:
        self.problems.append(Problem(path, message, hint))

    # -- generic helpers ---------------------------------------------------------------------------

    def table(self, value: object, path: str, spelling: str) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.problem(path, f"expected a table ({spelling}), got {_describe(value)}")
        return None

    def tables(self, value: object, path: str, spelling: str) -> list[Any] | None:
        if isinstance(value, list):
            return value
        hint = f"write each entry as {spelling}" if isinstance(value, dict) else None
        self.problem(path, f"expected an array of tables ({spelling}), got {_describe(value)}", hint)
        return None

    def unknown_keys(self, table: Mapping[str, Any], valid: tuple[str, ...], path: str, where: str) -> None:
        for key in table:
            if key in valid:
                continue
            hint = _misplaced_hint(key, where)
            what = "top-level key" if where == "top" else "key"
            self.problem(path, f"unknown {what} {key!r}{did_you_mean(key, valid)}", hint)

    def convert(self, spec: FieldSpec, value: object, path: str) -> tuple[bool, Any]:
        """(ok, model value) for one TOML value; a problem is recorded when not ok."""
        kind = spec.kind
        try:
            if kind == "duration":
                return True, parse_duration(value, key=path)
            if kind == "size":
                return True, parse_size(value, key=path)
            if kind == "durations":
                if not isinstance(value, list):
                    self.problem(
                        path,
                        f"expected an array of durations, got {_describe(value)}",
                        hint='e.g. ["30s", "5m", "1h"]; [] disables',
                    )
                    return False, None
                windows: list[float] = []
                ok = True
                for i, item in enumerate(value):
                    item_ok, window = self.convert(
                        FieldSpec(spec.name, "duration", False, False), item, f"{path}[{i}]"
                    )
                    ok = ok and item_ok
                    windows.append(window)
                return ok, tuple(windows)
        except ConfigError as e:
            # units.py prefixes its message with the key path we passed; keep one prefix only.
            message = e.message.removeprefix(f"{path}: ")
            self.problem(path, message, e.hint)
            return False, None
        if kind == "int":
            if _is_int(value):
                return True, value
            hint = "remove the quotes" if isinstance(value, str) and value.strip().isdigit() else None
            self.problem(path, f"expected an integer, got {_describe(value)}", hint)
            return False, None
        if kind == "bool":
            if isinstance(value, bool):
                return True, value
            self.problem(path, f"expected true or false, got {_describe(value)}")
            return False, None
        if kind in ("str", "choice"):
            if isinstance(value, str):
                return True, value
            hint = None
            if kind == "choice":
                hint = "one of " + ", ".join(f'"{c}"' for c in spec.choices)
            self.problem(path, f"expected a string, got {_describe(value)}", hint)
            return False, None
        if kind == "path":
            if not isinstance(value, str):
                self.problem(path, f"expected a path string, got {_describe(value)}")
                return False, None
            if not value.strip():
                self.problem(path, "must not be empty")
                return False, None
            return True, self.local_path(value)
        raise AssertionError(f"unhandled kind {kind}")

    def local_path(self, value: str) -> Path:
        p = Path(value).expanduser()
        # Relative paths mean "next to the config file", not "wherever the daemon was started".
        if not p.is_absolute() and self.base_dir is not None:
            p = self.base_dir / p
        return p

    def fields(self, table: Mapping[str, Any], specs: Mapping[str, FieldSpec], path: str) -> dict[str, Any]:
        """Converted values for every key of ``table`` that ``specs`` knows (unknown keys are not here)."""
        out: dict[str, Any] = {}
        for key, value in table.items():
            spec = specs.get(key)
            if spec is None:
                continue
            ok, converted = self.convert(spec, value, f"{path}.{key}")
            if ok:
                out[key] = converted
        return out

    # -- tables ------------------------------------------------------------------------------------

    def parse(self, data: Mapping[str, Any], source: Path | None) -> tuple[Config, Provenance]:
        if not isinstance(data, Mapping):
            self.problem("", f"expected a TOML document (a table), got {_describe(data)}")
            return Config(source=source), Provenance()
        self.unknown_keys(data, TOP_LEVEL_KEYS, "", "top")
        try:
            self.env_key = env_key_source(self.environ)
        except ConfigError as e:
            self.problem("environment", e.message, e.hint)

        shared: list[tuple[str, Backend | Encryption]] = []

        defaults_table = self.table(data.get("defaults", {}), "defaults", "[defaults]") or {}
        self.unknown_keys(defaults_table, DEFAULTS_KEYS, "defaults", "defaults")
        default_values = self.fields(defaults_table, TUNABLE_SPECS, "defaults")
        defaults = Tunables(**default_values)
        default_encryption: Encryption | None = None
        if "encryption" in defaults_table:
            default_encryption = self.encryption(defaults_table["encryption"], "defaults.encryption")
            if default_encryption is not None and self.env_key is None:
                shared.append(("defaults.encryption", default_encryption))

        shared_backends: tuple[Backend, ...] = ()
        if "backends" in data:
            shared_entries = self.tables(data["backends"], "backends", "[[backends]]") or []
            built = [self.backend(entry, f"backends[{i}]") for i, entry in enumerate(shared_entries)]
            shared_backends = tuple(b for b in built if b is not None)
            shared.extend((f"backends[{i}]", b) for i, b in enumerate(built) if b is not None)

        databases: list[Database] = []
        own_keys: list[frozenset[str]] = []
        entries = self.tables(data.get("database", []), "database", "[[database]]")
        if entries is None:
            entries = []
        elif not entries:
            self.problem(
                "database",
                "the config defines no database",
                hint='add a [[database]] table with name = "..." and path = "/path/to.db"',
            )
        for index, entry in enumerate(entries):
            parsed = self.database(entry, index, default_values, default_encryption, shared_backends)
            if parsed is not None:
                databases.append(parsed[0])
                own_keys.append(parsed[1])

        daemon = DaemonSettings()
        if "daemon" in data:
            daemon_table = self.table(data["daemon"], "daemon", "[daemon]")
            if daemon_table is not None:
                self.unknown_keys(daemon_table, tuple(DAEMON_SPECS), "daemon", "daemon")
                daemon = DaemonSettings(**self.fields(daemon_table, DAEMON_SPECS, "daemon"))

        config = Config(databases=tuple(databases), daemon=daemon, source=source)
        provenance = Provenance(defaults=defaults, own_keys=tuple(own_keys), shared=tuple(shared))
        return config, provenance

    def database(
        self,
        entry: object,
        index: int,
        default_values: Mapping[str, Any],
        default_encryption: Encryption | None,
        shared_backends: tuple[Backend, ...],
    ) -> tuple[Database, frozenset[str]] | None:
        table = self.table(entry, f"database[{index}]", "[[database]]")
        if table is None:
            return None
        raw_name = table.get("name")
        label = database_label(raw_name, index)
        self.unknown_keys(table, DATABASE_KEYS, label, "database")

        name = f"database-{index}"  # placeholder so later checks still run; the problem is recorded
        if "name" not in table:
            self.problem(label, "missing required key 'name'", hint='e.g. name = "app"')
        elif not isinstance(raw_name, str):
            self.problem(f"{label}.name", f"expected a string, got {_describe(raw_name)}")
        else:
            name = raw_name

        path = Path("/")
        if "path" not in table:
            self.problem(
                label,
                "missing required key 'path' (the SQLite database file)",
                hint='e.g. path = "/srv/app.db"',
            )
        else:
            ok, converted = self.convert(
                FieldSpec("path", "path", False, True), table["path"], f"{label}.path"
            )
            if ok:
                path = converted

        own_values = self.fields(table, TUNABLE_SPECS, label)
        values = {**default_values, **own_values}

        backends = shared_backends
        if "backends" in table:
            entries = self.tables(table["backends"], f"{label}.backends", "[[database.backends]]")
            # An empty list names no destination of its own, so the shared set still applies.
            if entries:
                built = [self.backend(e, f"{label}.backends[{i}]") for i, e in enumerate(entries)]
                backends = tuple(b for b in built if b is not None)

        encryption = default_encryption
        if "encryption" in table:
            encryption = self.encryption(table["encryption"], f"{label}.encryption")
        if self.env_key is not None:
            encryption = env_encryption(encryption, *self.env_key)

        db = Database(name=name, path=path, backends=backends, encryption=encryption, **values)
        return db, frozenset(k for k in table if k in TUNABLE_SPECS)

    def encryption(self, value: object, path: str) -> Encryption | None:
        spelling = "[defaults.encryption]" if path.startswith("defaults") else "[database.encryption]"
        table = self.table(value, path, spelling)
        if table is None:
            return None
        self.unknown_keys(table, tuple(ENCRYPTION_SPECS), path, "encryption")
        values = self.fields(table, ENCRYPTION_SPECS, path)
        sources = [k for k in ("key_file", "passphrase", "passphrase_file") if k in table]
        if self.env_key is not None and len(sources) > 1:
            # The env variable replaces the block's key source, so validate() never sees this
            # ambiguity; report it anyway: it resurfaces the day the variable is unset.
            self.problem(
                path,
                f"more than one key source is set ({', '.join(sources)})",
                hint="set exactly one of key_file, passphrase or passphrase_file",
            )
        return Encryption(**values)

    def backend(self, entry: object, path: str) -> Backend | None:
        table = self.table(
            entry, path, "[[backends]]" if path.startswith("backends") else "[[database.backends]]"
        )
        if table is None:
            return None
        types = tuple(BACKEND_CLASSES)
        backend_type = table.get("type")
        if "type" not in table:
            self.problem(path, "missing required key 'type'", hint=f"one of {', '.join(types)}")
            self.unknown_keys(table, tuple(sorted(_ALL_BACKEND_KEYS)), path, "backend")
            return _placeholder(FileBackend, {"mode": _mode_or_sync(table)})
        if not isinstance(backend_type, str) or backend_type not in BACKEND_CLASSES:
            shown = f"{backend_type!r}" if isinstance(backend_type, str) else _describe(backend_type)
            extra = did_you_mean(backend_type, types) if isinstance(backend_type, str) else ""
            self.problem(
                f"{path}.type", f"unknown backend type {shown}{extra}", hint=f"one of {', '.join(types)}"
            )
            return _placeholder(FileBackend, {"mode": _mode_or_sync(table)})
        cls = BACKEND_CLASSES[backend_type]
        specs = field_specs(cls)
        valid = _BACKEND_KEYS_BY_TYPE[backend_type]
        for key in table:
            if key in valid:
                continue
            if key in _ALL_BACKEND_KEYS:
                owners = [t for t, keys in _BACKEND_KEYS_BY_TYPE.items() if key in keys]
                self.problem(
                    path,
                    f"unknown key {key!r} for a {backend_type} backend (it applies to {', '.join(owners)})",
                )
            else:
                self.problem(path, f"unknown key {key!r}{did_you_mean(key, valid)}")
        values = self.fields(table, specs, path)
        ok = True
        for spec in specs.values():
            if spec.required and spec.name not in table:
                self.problem(path, f"missing required key {spec.name!r} for a {backend_type} backend")
                ok = False
            elif spec.required and spec.name not in values:
                ok = False
        if not ok:
            return _placeholder(cls, values)
        return _build_backend(cls, values)


def _build_backend(cls: type[BackendBase], values: Mapping[str, Any]) -> Backend:
    return cast(Backend, cls(**values))


def _mode_or_sync(table: Mapping[str, Any]) -> str:
    """The table's mode if it is a valid one, so a placeholder keeps the sync/async balance."""
    mode = table.get("mode")
    return mode if mode in ("sync", "async") else "sync"


def _placeholder(cls: type[BackendBase], values: Mapping[str, Any]) -> Backend:
    """A stand-in for a backend missing required keys (already reported), so later checks still run."""
    filled = dict(values)
    for spec in field_specs(cls).values():
        if spec.required and spec.name not in filled:
            filled[spec.name] = Path("/") if spec.kind == "path" else "placeholder"
    return _build_backend(cls, filled)


def _misplaced_hint(key: str, where: str) -> str | None:
    """Where a key that is valid somewhere else belongs, for an unknown-key problem."""
    if where == "top":
        if key == "encryption":
            return "encryption goes in [defaults.encryption] or a [database.encryption] table"
        if key in TUNABLE_SPECS:
            return "tunables go in [defaults] or in a [[database]] table"
        if key in _ALL_BACKEND_KEYS:
            return "backend keys go in a [[backends]] or [[database.backends]] table"
        return f"top-level tables are {', '.join(TOP_LEVEL_KEYS)}"
    if where == "defaults":
        if key == "backends":
            return "shared destinations are a top-level [[backends]] table, not part of [defaults]"
        if key in ("name", "path"):
            return f"{key} is set per [[database]]"
    if where == "database" and key in _ALL_BACKEND_KEYS and key not in DATABASE_KEYS:
        return "backend keys go in a [[database.backends]] table"
    if where == "encryption" and key == "key":
        return "an inline key can only come from the BAKELITE_KEY environment variable; use key_file"
    if where == "daemon" and key in TUNABLE_SPECS:
        return "per-database tunables go in [defaults] or a [[database]] table"
    return None


__all__ = [
    "ENV_KEY_VARIABLES",
    "apply_env_overrides",
    "env_encryption",
    "env_key_source",
    "load_config",
    "parse_config",
]
