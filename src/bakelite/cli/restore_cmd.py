"""``bakelite restore``: rebuild a database file from its replica."""

from __future__ import annotations

import argparse
from pathlib import Path

from bakelite.cli import context, render

HELP = "rebuild a database from its replica: the latest state or a point in time"
DESCRIPTION = """\
Writes the restored database to --output (default: the configured database path). It never
overwrites an existing file. --timestamp picks the newest commit at or before T, given as RFC 3339
or as a relative time such as "90s ago" or "2 days ago". The two --if-* guards make an in-place
restore safe to run on every boot: they turn it into a no-op (exit 0) when the database already
exists or nothing has been backed up yet."""
EXAMPLES = """\
# Latest state, to a scratch path.
bakelite restore --db app --output /tmp/restored.db --config bakelite.toml

# A point in time, as RFC 3339 ...
bakelite restore --db app --output /tmp/at.db \\
  --timestamp 2026-05-25T12:00:00Z --config bakelite.toml

# ... or relative.
bakelite restore --db app --output /tmp/an-hour-ago.db \\
  --timestamp "1 hour ago" --config bakelite.toml

# On boot: restore in place on an empty volume, otherwise do nothing.
bakelite restore --db app --if-db-not-exists --if-replica-exists --config /etc/bakelite/bakelite.toml"""
AVAILABLE = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register restore's flags."""
    parser.add_argument(
        "--output", metavar="PATH", type=Path, help="where to write (default: the configured database path)"
    )
    parser.add_argument(
        "--timestamp", metavar="T", help='restore to a point in time: RFC 3339 or "<N> <unit> ago"'
    )
    parser.add_argument(
        "--if-db-not-exists", action="store_true", help="do nothing (exit 0) if the output file exists"
    )
    parser.add_argument(
        "--if-replica-exists", action="store_true", help="do nothing (exit 0) if there is no backup yet"
    )


def run(args: argparse.Namespace) -> int:
    """Restore a database."""
    from bakelite.crypto.keys import lazy_cipher_for
    from bakelite.ops.restore import restore
    from bakelite.ops.restore_text import render_restore_text
    from bakelite.units import format_size

    config = context.load(args)
    db = context.single(args, config, "restore")
    storage = context.open_read(db)
    try:
        # Built on first use: a restore the --if-* guards make a no-op needs no key.
        cipher = lazy_cipher_for(db, [storage])
        with render.Progress("restoring", as_json=args.json, unit=format_size) as progress:
            report = restore(
                db,
                storage,
                output=args.output,
                timestamp=args.timestamp,
                if_db_not_exists=args.if_db_not_exists,
                if_replica_exists=args.if_replica_exists,
                cipher=cipher,
                progress=progress.update,
            )
    finally:
        storage.close()
    render.emit(report, args.json, text=render_restore_text)
    return 0
