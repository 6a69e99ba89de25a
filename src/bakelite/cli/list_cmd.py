"""``bakelite list``: what is restorable, read from the backend."""

from __future__ import annotations

import argparse

from bakelite.cli import context, render

HELP = "list what is restorable: databases, restore points, backup structure"
DESCRIPTION = """\
Without --db, one row per database; with --db, that database's restore points (UTC spans you can
pass to restore --timestamp); add --verbose for every backup and change-set. It reads only the
backend, so it is safe while the daemon runs."""
EXAMPLES = """\
bakelite list --config bakelite.toml                    # one row per database
bakelite list --db app --config bakelite.toml           # the database's restore points
bakelite list --db app --verbose --config bakelite.toml # + the full backup structure"""
AVAILABLE = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register list's flags."""
    parser.add_argument("--verbose", action="store_true", help="also show every backup and change-set")


def run(args: argparse.Namespace) -> int:
    """List restorable state."""
    from bakelite.ops.listing import (
        list_databases,
        list_restore_points,
        render_fleet_text,
        render_listing_text,
    )

    config = context.load(args)
    if args.db:
        db = config.database(args.db)
        storage = context.open_read(db)
        try:
            listing = list_restore_points(db, storage, verbose=args.verbose)
        finally:
            storage.close()
        render.emit(listing, args.json, text=render_listing_text)
        return 0
    storages = {d.name: context.open_read(d) for d in context.selected(args, config)}
    try:
        fleet = list_databases(config, storages)
    finally:
        for storage in storages.values():
            storage.close()
    render.emit(fleet, args.json, text=render_fleet_text)
    return fleet.exit_code
