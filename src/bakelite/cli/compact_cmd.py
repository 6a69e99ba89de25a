"""``bakelite compact``: merge older change-sets now instead of waiting for the daemon."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from bakelite.cli import context, render
from bakelite.units import format_size

if TYPE_CHECKING:  # the ops module is imported by run(): it is heavy, and every command loads this one
    from bakelite.ops.compact import CompactReport

HELP = "merge older incremental change-sets into fewer objects now"
DESCRIPTION = """\
Compaction normally runs on its own (compaction_levels); this is the manual way to trigger it.
Recent change-sets stay fine-grained (compaction_keep_recent). Backend-only and crash-safe: merged
objects are written and verified before the change-sets they replace are deleted, so it is safe to
run while the daemon is replicating (the daemon's newest change-set is never touched)."""
EXAMPLES = """\
bakelite compact --config bakelite.toml          # every database
bakelite compact --db app --config bakelite.toml # one database
bakelite compact --db app --dry-run --config bakelite.toml"""
AVAILABLE = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register compact's flags."""
    parser.add_argument("--dry-run", action="store_true", help="show what would be merged; change nothing")


def run(args: argparse.Namespace) -> int:
    """Compact each selected database on its primary destination."""
    from bakelite.ops.compact import compact_databases

    config = context.load(args)
    report = compact_databases(context.selected(args, config), context.open_primary, dry_run=args.dry_run)
    render.emit(report, args.json, text=render_compact_text)
    return report.exit_code


def render_compact_text(report: CompactReport) -> str:
    """One line per database."""
    lines = []
    for r in report.databases:
        if r.dry_run:
            lines.append(f"{r.database}: would write {r.planned_merges} merged object(s)")
        else:
            lines.append(
                f"{r.database}: {r.objects_before} -> {r.objects_after} objects, "
                f"{format_size(r.bytes_before)} -> {format_size(r.bytes_after)} "
                f"({r.merged} merged, {r.sources_deleted + r.leftovers_deleted} deleted)"
            )
        lines += [f"  ! {e}" for e in r.errors + r.skipped]
    return "\n".join(lines)
