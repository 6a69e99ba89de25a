"""``bakelite usage``: stored bytes per database against its limits."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from bakelite.cli import context, render
from bakelite.cli.render import table
from bakelite.units import format_age, format_size

if TYPE_CHECKING:
    from bakelite.ops.usage import UsageReport

HELP = "report stored bytes per database, usage against limits, and S3 hidden overhead"
DESCRIPTION = """\
One line per database, or a per-backup breakdown (full vs incremental) with --db. Shows usage
against max_total_size and max_backups when configured (146 KiB / 1.00 MiB (14%)) and flags a
database over a cap (exit 1), and on S3 the noncurrent-version and incomplete-multipart bytes that
a plain listing does not show."""
EXAMPLES = """\
bakelite usage --config bakelite.toml             # one line per database
bakelite usage --db app --config bakelite.toml    # per-backup breakdown
bakelite usage --db app --json --config bakelite.toml"""
AVAILABLE = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """usage takes only the global flags."""


def run(args: argparse.Namespace) -> int:
    """Report storage usage; exit 1 when a database is over a configured cap."""
    from bakelite.ops.usage import usage

    config = context.load(args)
    databases = context.selected(args, config)
    report = usage(databases, context.open_primary, detail=getattr(args, "db", None) is not None)
    render.emit(report, args.json, text=render_usage_text)
    return report.exit_code


def render_usage_text(report: UsageReport) -> str:
    """One line per database, then a per-backup table for each database with detail."""
    rows = []
    for d in report.databases:
        caps = ", ".join(c.text + (" OVER" if c.over else "") for c in d.caps) or "no cap"
        age = format_age(d.oldest_age_seconds) if d.oldest_age_seconds is not None else "-"
        rows.append((d.database, format_size(d.total_bytes), d.backups, age, caps))
    parts = [table(("database", "stored", "backups", "oldest", "limits"), rows)]
    for d in report.databases:
        if d.detail is not None:
            detail_rows = [
                (
                    b.backup + (" (current)" if b.current else "") + ("" if b.complete else " (incomplete)"),
                    format_age(b.age_seconds),
                    format_size(b.full_bytes),
                    f"{format_size(b.incremental_bytes)} in {b.changesets}"
                    + (f" ({b.compacted} compacted)" if b.compacted else ""),
                    format_size(b.total_bytes),
                )
                for b in d.detail
            ]
            parts.append(
                f"\n{d.database} on {d.backend}:\n"
                + table(("backup", "age", "full", "incremental", "total"), detail_rows)
            )
        if d.s3 is not None:
            if d.s3.inspected:
                parts.append(
                    f"{d.database}: S3 hidden overhead {format_size(d.s3.hidden_bytes)} "
                    f"({format_size(d.s3.noncurrent_bytes)} in noncurrent versions, "
                    f"{d.s3.delete_markers} delete markers, "
                    f"{d.s3.incomplete_uploads} incomplete multipart uploads)"
                )
            else:
                parts.append(f"{d.database}: S3 overhead not inspected: {d.s3.reason}")
        for c in d.caps:
            if c.over:
                why = (
                    "only the current backup is left and it is never pruned: raise the cap"
                    if d.backups <= 1
                    else "the daemon prunes the oldest backups on its next pass"
                )
                parts.append(f"{d.database}: over {c.cap} ({c.text}); {why}")
    return "\n".join(parts)
