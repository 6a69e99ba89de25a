"""``bakelite verify``: prove a replica is intact and restorable."""

from __future__ import annotations

import argparse
import contextlib

from bakelite.cli import context, render

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
AVAILABLE = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register verify's flags."""
    parser.add_argument(
        "--deep", action="store_true", help="also restore each backup and run PRAGMA integrity_check"
    )


def run(args: argparse.Namespace) -> int:
    """Verify replicas; exit 1 when any is corrupt or unrestorable."""
    from bakelite.ops.verify import ProgressFn, render_verify_text, verify_databases
    from bakelite.units import format_size

    config = context.load(args)
    databases = context.selected(args, config)
    with contextlib.ExitStack() as stack:

        def progress(name: str) -> ProgressFn:
            bar = stack.enter_context(
                render.Progress(f"verifying {name}", as_json=args.json, unit=format_size)
            )
            return bar.update

        from bakelite.crypto.keys import lazy_cipher_for

        report = verify_databases(
            databases,
            lambda db: context.open_read(db, exhaustive=True),
            deep=args.deep,
            progress=progress,
            cipher_for=lambda db, storage: lazy_cipher_for(db, [storage]),
        )
    render.emit(report, args.json, text=render_verify_text)
    return report.exit_code
