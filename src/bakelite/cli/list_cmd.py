"""``bakelite list``: what is restorable, read from the backend."""

from __future__ import annotations

import argparse

from bakelite.cli import context

HELP = "list what is restorable: databases, restore points, backup structure"
DESCRIPTION = """\
Without --db, one row per database; with --db, that database's restore points (UTC spans you can
pass to restore --timestamp); add --verbose for every backup and change-set. It reads only the
backend, so it is safe while the daemon runs."""
EXAMPLES = """\
bakelite list --config bakelite.toml                    # one row per database
bakelite list --db app --config bakelite.toml           # the database's restore points
bakelite list --db app --verbose --config bakelite.toml # + the full backup structure"""
AVAILABLE = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register list's flags."""
    parser.add_argument("--verbose", action="store_true", help="also show every backup and change-set")


def run(args: argparse.Namespace) -> int:
    """List restorable state."""
    raise context.not_available("list")
