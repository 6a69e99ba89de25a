"""``bakelite keygen``: a new at-rest encryption key."""

from __future__ import annotations

import argparse
from pathlib import Path

from bakelite.cli import context

HELP = "generate a new BAKELITE-KEY-V1 encryption key"
DESCRIPTION = """\
Prints a fresh key, or writes it to --output with mode 0600 (an existing file is never
overwritten). The key is symmetric: it both encrypts and decrypts, and without it the backups it
protects cannot be read. Keep a copy away from both the database host and the backup storage."""
EXAMPLES = """\
bakelite keygen --output /etc/bakelite/key.txt   # to a file, mode 0600
bakelite keygen                                  # to stdout"""
AVAILABLE = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register keygen's flags."""
    parser.add_argument(
        "--output",
        metavar="PATH",
        type=Path,
        help="write the key to a new file (mode 0600) instead of stdout",
    )


def run(args: argparse.Namespace) -> int:
    """Generate a key."""
    raise context.not_available("keygen")
