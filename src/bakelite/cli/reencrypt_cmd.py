"""``bakelite reencrypt``: rewrite a replica under the configured encryption (enable, rotate, decrypt)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bakelite.cli import context

HELP = "rewrite every stored object under the configured encryption: enable, rotate or decrypt"
DESCRIPTION = """\
Enable (plaintext to encrypted), rotate (an old key, given with --old-key-file, to the configured
key) or decrypt (remove encryption from the config, pass the current key as --old-key-file). It
takes the daemon's per-database lock, so stop the daemon first. A rerun skips objects that are
already right, so an interrupted run can simply be repeated."""
EXAMPLES = """\
# Encrypt a plaintext replica under the newly configured key.
sudo systemctl stop bakelite
bakelite reencrypt --db app --config bakelite.toml
sudo systemctl start bakelite

# Rotate from an old key to the configured one (preview first).
bakelite reencrypt --db app --old-key-file /etc/bakelite/key-old.txt --dry-run --json
bakelite reencrypt --db app --old-key-file /etc/bakelite/key-old.txt"""
AVAILABLE = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register reencrypt's flags."""
    parser.add_argument(
        "--old-key-file",
        metavar="PATH",
        type=Path,
        action="append",
        dest="old_key_files",
        default=[],
        help="a key the replica may currently be encrypted with; repeat for several (tried in order)",
    )
    parser.add_argument("--dry-run", action="store_true", help="count the work, rewrite nothing")


def run(args: argparse.Namespace) -> int:
    """Re-encrypt replicas."""
    raise context.not_available("reencrypt")
