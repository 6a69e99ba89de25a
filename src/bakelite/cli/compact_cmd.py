"""``bakelite compact``: merge older change-sets now instead of waiting for the daemon."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from bakelite.cli import context, render
from bakelite.ops.compact import CompactionReport
from bakelite.units import format_size

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


@dataclass
class CompactReport:
    """Every database compacted (``--json`` schema: a list of per-database reports)."""

    databases: list[CompactionReport] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """3 when a run hit an error (a refused delete is reported, not an error)."""
        return 3 if any(r.errors and not r.delete_refused for r in self.databases) else 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register compact's flags."""
    parser.add_argument("--dry-run", action="store_true", help="show what would be merged; change nothing")


def run(args: argparse.Namespace) -> int:
    """Compact each selected database on its primary destination."""
    import time
    from pathlib import Path

    from bakelite.crypto.keys import lazy_cipher_for
    from bakelite.ops.compact import compact_database
    from bakelite.replication.cursor import load_cursor

    config = context.load(args)
    report = CompactReport()
    for db in context.selected(args, config):
        storage = context.open_primary(db)
        try:
            # The daemon's last shipped change-set must survive: its restart resumes from it.
            cursor = load_cursor(Path(db.path), db.name)
            protect = [cursor.last_key] if cursor is not None else []
            result = compact_database(
                storage,
                db.name,
                db.compaction_levels,
                db.compaction_keep_recent,
                time.time(),
                cipher=lazy_cipher_for(db, [storage]),
                require_encrypted=db.encryption.require_encrypted if db.encryption else False,
                protect=protect,
                dry_run=args.dry_run,
            )
        finally:
            storage.close()
        report.databases.append(result)
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
