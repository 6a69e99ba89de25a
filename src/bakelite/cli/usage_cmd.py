"""``bakelite usage``: stored bytes per database against its limits."""

from __future__ import annotations

import argparse

from bakelite.cli import context

HELP = "report stored bytes per database, usage against limits, and S3 hidden overhead"
DESCRIPTION = """\
One line per database, or a per-backup breakdown with --db. Shows usage against max_total_size and
max_backups when configured, and on S3 the noncurrent-version and incomplete-multipart bytes that
a plain listing does not show."""
EXAMPLES = """\
bakelite usage --config bakelite.toml             # one line per database
bakelite usage --db app --config bakelite.toml    # per-backup breakdown
bakelite usage --db app --json --config bakelite.toml"""
AVAILABLE = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """usage takes only the global flags."""


def run(args: argparse.Namespace) -> int:
    """Report storage usage."""
    raise context.not_available("usage")
