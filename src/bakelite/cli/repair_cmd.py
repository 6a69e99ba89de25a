"""``bakelite repair``: heal corrupt or missing objects from a healthy destination."""

from __future__ import annotations

import argparse

from bakelite.cli import context, render

HELP = "heal bit-rot: copy a healthy object over a corrupt or missing one on another destination"
DESCRIPTION = """\
For a database with two or more destinations, scan every backup object on each and rewrite a good
copy over any that is corrupt or missing. Safe with the daemon running. A single-destination
database is skipped. Exits 1 if an object is bad everywhere or a bad copy could not be overwritten
(e.g. an Object Lock bucket, reported as a degraded destination)."""
EXAMPLES = """\
bakelite repair --db app --config bakelite.toml             # heal one database
bakelite repair --db app --dry-run --config bakelite.toml   # report, change nothing
bakelite repair --config bakelite.toml                      # every database
bakelite repair --db app --json --config bakelite.toml"""
AVAILABLE = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register repair's flags."""
    parser.add_argument("--dry-run", action="store_true", help="report what would be healed, change nothing")


def run(args: argparse.Namespace) -> int:
    """Repair replicas; exit 1 when an object is bad everywhere or a bad copy could not be healed."""
    from bakelite.crypto.keys import lazy_cipher_for
    from bakelite.ops.repair import render_repair_text, repair_databases
    from bakelite.storage.registry import open_storage
    from bakelite.storage.retry import RetryingStorage

    config = context.load(args)
    report = repair_databases(
        context.selected(args, config),
        lambda db: [(RetryingStorage(open_storage(b)), b.mode == "sync") for b in db.backends],
        dry_run=args.dry_run,
        # AEAD tags are checked too when a key is configured; without one, CRCs and BLAKE3 still are.
        cipher_for=lambda db, storages: lazy_cipher_for(db, storages),
    )
    render.emit(report, args.json, text=render_repair_text)
    return report.exit_code
