"""``bakelite doctor``: pre-flight checks before running the daemon."""

from __future__ import annotations

import argparse

from bakelite.cli import render

HELP = "pre-flight checks: config, database, backends, format, keys, credentials"
DESCRIPTION = """\
Checks, for each database, what would otherwise only fail mid-replication: the config, the database
file and WAL mode, room for .bakelite/, each backend with a write/read/delete probe, the replica
format version, the encryption key, cloud credentials and Object Lock. It also lists the env files
considered and the variables set (secrets redacted). Starts no daemon and writes nothing but its
probes. Exits 1 on any failure; warnings alone exit 0."""
EXAMPLES = """\
bakelite doctor --config bakelite.toml          # every database
bakelite doctor --db app --config bakelite.toml # one database
bakelite doctor --json --config bakelite.toml"""
AVAILABLE = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """doctor takes only the global flags."""


def run(args: argparse.Namespace) -> int:
    """Run the checks; exit 1 on any failure."""
    from bakelite import log
    from bakelite.config.env import EnvReport, config_path, load_env_files
    from bakelite.errors import ConfigError
    from bakelite.ops.doctor import render_doctor_text, run_doctor

    # Loaded here rather than by context.load: doctor reports what the env files contributed.
    env: EnvReport | None = None
    env_error: ConfigError | None = None
    try:
        env = load_env_files()
    except ConfigError as e:
        env_error = e
    log.refresh()
    report = run_doctor(config_path(getattr(args, "config", None)), args.db, env, env_error)
    render.emit(report, args.json, text=render_doctor_text)
    return report.exit_code
