"""``bakelite daemon``: continuous replication of every configured database."""

from __future__ import annotations

import argparse
from dataclasses import replace

from bakelite.cli import context

HELP = "replicate every configured database continuously (what the systemd unit runs)"
DESCRIPTION = """\
Watch each database's WAL and ship every commit to its destinations until stopped. --db limits it
to one database. The three flags below can also be set under [daemon] in the config; a flag wins
over the config. With --metrics-addr the daemon also serves Prometheus metrics at GET /metrics,
each series labelled with its `database` (metrics are part of the daemon, not a command of their
own). With --json its log lines are JSON objects."""
EXAMPLES = """\
bakelite daemon --config bakelite.toml
bakelite daemon --config bakelite.toml --max-concurrent-snapshots 4
bakelite daemon --config bakelite.toml --metrics-addr 127.0.0.1:9090"""
AVAILABLE = True
# A daemon is observed through its logs, so it logs at info unless told otherwise.
LOG_LEVEL_DEFAULT = "info"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the daemon's flags."""
    parser.add_argument(
        "--max-concurrent-snapshots",
        metavar="N",
        type=context.count,
        help="how many databases may take a full snapshot at once (0: automatic)",
    )
    parser.add_argument(
        "--snapshot-workers",
        metavar="N",
        type=context.count,
        help="threads that compress and upload one snapshot (0: automatic)",
    )
    parser.add_argument(
        "--metrics-addr",
        metavar="HOST:PORT",
        type=context.host_port,
        help="serve Prometheus metrics at http://HOST:PORT/metrics",
    )


def run(args: argparse.Namespace) -> int:
    """Run the daemon until it is stopped (SIGTERM/SIGINT drain every database, then exit 0)."""
    from bakelite.daemon.runner import run_daemon

    config = context.load(args)
    databases = context.selected(args, config)
    settings = config.daemon
    overrides = {
        "max_concurrent_snapshots": args.max_concurrent_snapshots,
        "snapshot_workers": args.snapshot_workers,
        "metrics_addr": args.metrics_addr,
    }
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    return run_daemon(databases, settings)
