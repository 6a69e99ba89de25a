"""``bakelite status``: what the running daemon is doing, from its local status files."""

from __future__ import annotations

import argparse

from bakelite.cli import context, render

HELP = "show whether replication is healthy and current (from the daemon's status files)"
DESCRIPTION = """\
Reads the status files the daemon keeps beside each database (.bakelite/<name>.status.json), not the
backend: state, freshness, when the replica was last caught up, change-sets and bytes shipped, the
last error when stuck, and the last verify result. A daemon that died or went quiet shows as
`not running` or `stale`. --check turns it into a silent probe: exit 1 when any selected database is
not replicating or a threshold is exceeded (with --json the full report is still printed)."""
EXAMPLES = """\
bakelite status --config bakelite.toml          # one row per database
bakelite status --db app --config bakelite.toml # just one
bakelite status --json --config bakelite.toml   # machine-readable
bakelite status --check --config bakelite.toml  # exit non-zero if anything is unhealthy

# cron: liveness, RPO and verify freshness; silent unless unhealthy
*/5 * * * * bakelite status --check --max-lag 10m --max-verify-age 36h --config /etc/bakelite/bakelite.toml"""
AVAILABLE = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register status's flags."""
    parser.add_argument(
        "--check", action="store_true", help="print nothing when healthy; exit 1 and say why when not"
    )
    parser.add_argument(
        "--max-lag",
        metavar="DUR",
        type=context.duration,
        help="with --check: fail when a replica is further behind than this (e.g. 10m)",
    )
    parser.add_argument(
        "--max-verify-age",
        metavar="DUR",
        type=context.duration,
        help="with --check: fail when the last clean verify is older than this (e.g. 36h)",
    )


def run(args: argparse.Namespace) -> int:
    """Show replication status (exit 1 with --check when anything is unhealthy)."""
    from bakelite.ops.status import render_check_text, render_status_text, status_report

    config = context.load(args)
    report = status_report(
        context.selected(args, config),
        check=args.check,
        max_lag=args.max_lag,
        max_verify_age=args.max_verify_age,
    )
    render.emit(report, args.json, text=render_check_text if args.check else render_status_text)
    return report.exit_code
