"""The ``bakelite`` command: the parser built from the command modules, and the one error boundary.

Each subcommand lives in ``cli/<name>_cmd.py`` and exports ``HELP`` (one line), ``DESCRIPTION``,
``EXAMPLES``, ``AVAILABLE``, ``add_arguments(parser)`` and ``run(args) -> int``; a module may also set
``LOG_LEVEL_DEFAULT``.  ``main`` maps what ``run`` raises to an exit code, here and nowhere else:

    BakeliteError      -> "bakelite: error: ..." on stderr (+ JSON on stdout with --json), e.exit_code
    KeyboardInterrupt  -> 130
    anything else      -> a bug: traceback on stderr, 70
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Protocol

from bakelite import __version__, log
from bakelite.cli import (
    compact_cmd,
    context,
    daemon_cmd,
    doctor_cmd,
    init_cmd,
    keygen_cmd,
    list_cmd,
    reclaim_cmd,
    reencrypt_cmd,
    render,
    repair_cmd,
    restore_cmd,
    status_cmd,
    usage_cmd,
    verify_cmd,
)
from bakelite.errors import EXIT_INTERNAL, EXIT_USAGE, BakeliteError

EXIT_INTERRUPTED = 130
DEFAULT_LOG_LEVEL = "warning"


class Command(Protocol):
    """What a ``<name>_cmd`` module provides."""

    HELP: str
    DESCRIPTION: str
    EXAMPLES: str
    AVAILABLE: bool

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


# Order is the order of `bakelite --help` and of the CLI reference: set up, run, inspect, act, keys.
COMMANDS: tuple[Command, ...] = (
    init_cmd,
    daemon_cmd,
    list_cmd,
    status_cmd,
    usage_cmd,
    reclaim_cmd,
    restore_cmd,
    compact_cmd,
    verify_cmd,
    repair_cmd,
    keygen_cmd,
    reencrypt_cmd,
    doctor_cmd,
)

GLOBAL_FLAGS = ("--config", "--db", "--json", "--log-level")

ROOT_DESCRIPTION = "Continuous backup and point-in-time restore for live SQLite databases."
ROOT_EPILOG = """\
The global options may be given before or after the command; a value given after it wins.
Run `bakelite <command> --help` for a command's options and examples.

exit codes: 0 ok, 1 a check failed, 2 usage or configuration error, 3 operational error,
            70 internal error (a bug), 130 interrupted"""


def command_name(command: Command) -> str:
    """The subcommand name of a command module (``restore_cmd`` -> ``restore``)."""
    module_name: str = getattr(command, "__name__", type(command).__name__)
    return module_name.rsplit(".", 1)[-1].removesuffix("_cmd")


def _global_flags(suppress: bool) -> argparse.ArgumentParser:
    """The four global flags, as a parent parser.

    The root parser gets real defaults; every subparser gets them with ``SUPPRESS`` defaults, so a
    subparser only sets an attribute when the flag is actually given after the subcommand, and a
    value given before the subcommand (or the root default) survives otherwise.
    """

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parent = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    group = parent.add_argument_group("global options")
    group.add_argument(
        "--config",
        metavar="PATH",
        default=default(None),
        help="config file (default: $BAKELITE_CONFIG, else /etc/bakelite/bakelite.toml)",
    )
    group.add_argument(
        "--db", metavar="NAME", default=default(None), help="act on this configured database only"
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="machine-readable output: one JSON document on stdout (daemon: JSON log lines)",
    )
    group.add_argument(
        "--log-level",
        metavar="LEVEL",
        type=context.log_filter,
        default=default(None),
        help="log filter, e.g. debug or bakelite=debug (overrides $BAKELITE_LOG)",
    )
    return parent


def examples_epilog(command: Command) -> str:
    """The ``examples:`` block shown at the end of a subcommand's help."""
    lines = [f"  {line}" if line else "" for line in command.EXAMPLES.splitlines()]
    return "examples:\n" + "\n".join(lines)


def build_parser(commands: Sequence[Command] = COMMANDS) -> argparse.ArgumentParser:
    """The full ``bakelite`` parser: global flags, ``--version`` and one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="bakelite",
        description=ROOT_DESCRIPTION,
        epilog=ROOT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_global_flags(suppress=False)],
        # Abbreviations would make `--db` and `--db-name` (init) or future flags collide silently.
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"bakelite {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="<command>", required=True)
    suppressed = _global_flags(suppress=True)
    for command in commands:
        sub = subparsers.add_parser(
            command_name(command),
            help=command.HELP,
            description=f"{command.HELP[0].upper()}{command.HELP[1:]}.\n\n{command.DESCRIPTION}",
            epilog=examples_epilog(command),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[suppressed],
            allow_abbrev=False,
        )
        command.add_arguments(sub)
    return parser


def _exit_status(code: object) -> int:
    """The integer status of a ``SystemExit`` raised by argparse."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the command, and turn what it raises into an exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        # argparse already printed the usage error (exit 2), --help or --version (exit 0).
        return _exit_status(e.code)

    commands = {command_name(c): c for c in COMMANDS}
    command = commands[args.command]
    as_json = bool(args.json)
    try:
        log.setup_logging(
            args.log_level,
            json_lines=as_json,
            default=getattr(command, "LOG_LEVEL_DEFAULT", DEFAULT_LOG_LEVEL),
        )
        return int(command.run(args))
    except BakeliteError as e:
        render.error(e, as_json=as_json)
        return e.exit_code
    except KeyboardInterrupt:
        render.interrupted()
        return EXIT_INTERRUPTED
    except Exception as e:
        render.internal_error(e, as_json=as_json)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
