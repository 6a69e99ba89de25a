"""``bakelite reclaim``: abort orphaned S3 multipart uploads."""

from __future__ import annotations

import argparse

from bakelite.cli import context, render

HELP = "abort orphaned incomplete S3 multipart uploads (billed but invisible)"
DESCRIPTION = """\
A crash mid-snapshot can leave an unfinished multipart upload behind. The daemon sweeps these on
its own; this runs the sweep now. Only uploads older than --min-age are aborted, so an upload in
flight is never touched and it is safe with the daemon running. Does nothing on non-S3 backends,
nor without static AWS credentials in the environment (it says so). bakelite never deletes object
versions: expire those with a bucket lifecycle policy."""
EXAMPLES = """\
bakelite reclaim --config bakelite.toml                  # every database
bakelite reclaim --db app --dry-run --config bakelite.toml
bakelite reclaim --db app --min-age 0s --config bakelite.toml   # force-abort all"""
AVAILABLE = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register reclaim's flags."""
    parser.add_argument("--dry-run", action="store_true", help="list what would be aborted, abort nothing")
    parser.add_argument(
        "--min-age",
        metavar="DUR",
        type=context.duration,
        help="only abort uploads older than this (default: multipart_min_age from the config)",
    )


def run(args: argparse.Namespace) -> int:
    """Abort orphaned uploads on every S3 destination of the selected databases."""
    from bakelite.ops import reclaim

    config = context.load(args)
    reports = []
    for db in context.selected(args, config):
        reports.extend(reclaim.run(db, min_age=args.min_age, dry_run=args.dry_run))
    result = reclaim.summarize(reports)
    render.emit(result, args.json, text=reclaim.render_text)
    return result.exit_code
