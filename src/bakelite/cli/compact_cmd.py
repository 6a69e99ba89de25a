"""``bakelite compact``: merge older change-sets now instead of waiting for the daemon."""

from __future__ import annotations

import argparse

from bakelite.cli import context

HELP = "merge older incremental change-sets into fewer objects now"
DESCRIPTION = """\
Compaction normally runs on its own (compaction_levels); this is the manual way to trigger it.
Recent change-sets stay fine-grained (compaction_keep_recent). Backend-only and crash-safe."""
EXAMPLES = """\
bakelite compact --config bakelite.toml          # every database
bakelite compact --db app --config bakelite.toml # one database"""
AVAILABLE = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """compact takes only the global flags."""


def run(args: argparse.Namespace) -> int:
    """Compact replicas."""
    raise context.not_available("compact")
