"""``bakelite doctor``: pre-flight checks before running the daemon."""

from __future__ import annotations

import argparse

from bakelite.cli import context

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
AVAILABLE = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """doctor takes only the global flags."""


def run(args: argparse.Namespace) -> int:
    """Run the checks."""
    raise context.not_available("doctor")
