"""``bakelite verify``: prove a replica is intact and restorable."""

from __future__ import annotations

import argparse

from bakelite.cli import context

HELP = "check that a replica is intact and restorable (exit 1 if not)"
DESCRIPTION = """\
The default check downloads every object, checks its integrity and walks the lineage chain from the
full backup forward, so a corrupt, missing, reordered or substituted object is found. --deep also
restores each backup to a temporary file and runs PRAGMA integrity_check. The live database is never
touched. Each run records its result in .bakelite/<name>.verify.json, which status and the metrics
report."""
EXAMPLES = """\
bakelite verify --config bakelite.toml             # every database
bakelite verify --db app --config bakelite.toml    # one database
bakelite verify --db app --deep --config bakelite.toml
bakelite verify --db app --json --config bakelite.toml

# cron: a nightly restore drill that alerts through its exit code
0 4 * * * bakelite verify --db app --deep --config /etc/bakelite/bakelite.toml"""
AVAILABLE = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register verify's flags."""
    parser.add_argument(
        "--deep", action="store_true", help="also restore each backup and run PRAGMA integrity_check"
    )


def run(args: argparse.Namespace) -> int:
    """Verify replicas."""
    raise context.not_available("verify")
