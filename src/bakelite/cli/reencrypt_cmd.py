"""``bakelite reencrypt``: rewrite a replica under the configured encryption (enable, rotate, decrypt)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bakelite.cli import context, render

HELP = "rewrite every stored object under the configured encryption: enable, rotate or decrypt"
DESCRIPTION = """\
Enable (plaintext to encrypted), rotate (an old key, given with --old-key-file, to the configured
key) or decrypt (remove encryption from the config, pass the current key as --old-key-file). It
takes the daemon's per-database lock, so stop the daemon first. A rerun skips objects that are
already right, so an interrupted run can simply be repeated. Without --db every configured database
is rewritten in turn, on every destination it has. A passphrase-encrypted replica's old passphrase
is given with --old-passphrase-file."""
EXAMPLES = """\
# Encrypt a plaintext replica under the newly configured key.
sudo systemctl stop bakelite
bakelite reencrypt --db app --config bakelite.toml
sudo systemctl start bakelite

# Rotate from an old key to the configured one (preview first).
bakelite reencrypt --db app --old-key-file /etc/bakelite/key-old.txt --dry-run --json
bakelite reencrypt --db app --old-key-file /etc/bakelite/key-old.txt

# Skipped a rotation? List every older key, most recent first.
bakelite reencrypt --db app --old-key-file key-b.txt --old-key-file key-a.txt

# Back to plaintext: remove [encryption] from the config, pass the current key.
bakelite reencrypt --db app --old-key-file /etc/bakelite/key.txt"""
AVAILABLE = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register reencrypt's flags."""
    parser.add_argument(
        "--old-key-file",
        metavar="PATH",
        type=Path,
        action="append",
        dest="old_key_files",
        default=[],
        help="a key file the replica may currently be encrypted with; give several in the order to try",
    )
    parser.add_argument(
        "--old-passphrase-file",
        metavar="PATH",
        type=Path,
        action="append",
        dest="old_passphrase_files",
        default=[],
        help="a file holding a passphrase the replica may currently be encrypted with",
    )
    parser.add_argument("--dry-run", action="store_true", help="count the work, rewrite nothing")


def run(args: argparse.Namespace) -> int:
    """Re-encrypt replicas."""
    from bakelite.crypto.keys import open_destinations
    from bakelite.ops.reencrypt import ReencryptRun, reencrypt, render_reencrypt_text
    from bakelite.units import format_size

    config = context.load(args)
    reports = []
    for db in context.selected(args, config):
        storages = open_destinations(db, sync_only=False)
        try:
            with render.Progress(f"reencrypting {db.name}", as_json=args.json, unit=format_size) as bar:
                reports.append(
                    reencrypt(
                        db,
                        storages,
                        old_key_files=args.old_key_files,
                        old_passphrase_files=args.old_passphrase_files,
                        dry_run=args.dry_run,
                        progress=bar.update,
                    )
                )
        finally:
            for storage in storages:
                storage.close()
    render.emit(ReencryptRun(tuple(reports)), args.json, text=render_reencrypt_text)
    return 0
