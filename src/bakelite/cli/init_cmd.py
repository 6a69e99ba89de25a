"""``bakelite init``: guided, recipe-driven setup (config, key, systemd drop-in, then doctor)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bakelite.cli import context

HELP = "set up bakelite: write a config, a key and a systemd drop-in, then run doctor"
DESCRIPTION = """\
Walk from a fresh install to a validated, running backup. On a terminal it asks a few questions
from a recipe and confirms every step; with --yes it runs without prompts. The config is validated
before it is written, nothing existing is overwritten unless --force is given, and an existing key
file is never overwritten. --db-path makes an unattended run do the full local-backend setup."""
EXAMPLES = """\
sudo bakelite init                        # interactive wizard
sudo bakelite init --recipe s3 --yes      # no prompts: scaffold a starter config

# Unattended, complete local-backend setup (CI, Ansible, cloud-init, Dockerfile):
sudo bakelite init --yes --force \\
  --db-path /var/lib/app/app.db --db-name app \\
  --backup-dir /var/backups/bakelite \\
  --encrypt --service-user app --enable"""
AVAILABLE = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register init's flags."""
    parser.add_argument("--recipe", metavar="NAME", help="the setup recipe to start from (e.g. s3)")
    parser.add_argument("--yes", action="store_true", help="answer every prompt with its default")
    parser.add_argument(
        "--force", action="store_true", help="overwrite an existing config (never an existing key file)"
    )
    parser.add_argument(
        "--db-path", metavar="PATH", type=Path, help="database to back up; triggers the full unattended setup"
    )
    parser.add_argument("--db-name", metavar="NAME", help="name for the database in the config")
    parser.add_argument("--backup-dir", metavar="PATH", type=Path, help="directory for the local backend")
    parser.add_argument("--encrypt", action="store_true", help="generate a key and enable at-rest encryption")
    parser.add_argument("--key-file", metavar="PATH", type=Path, help="encrypt with this existing key file")
    parser.add_argument(
        "--service-user", metavar="USER", help="User= for the systemd drop-in (writes the drop-in)"
    )
    parser.add_argument("--service-group", metavar="GROUP", help="Group= for the systemd drop-in")
    parser.add_argument("--enable", action="store_true", help="enable and start the bakelite service")


def run(args: argparse.Namespace) -> int:
    """Run the setup."""
    raise context.not_available("init")
