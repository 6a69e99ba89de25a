"""The parser: every documented command and flag, global flags in either position, help, version."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bakelite.cli.main import COMMANDS, build_parser, command_name, main

# Every subcommand the CLI reference of the product documents (metrics is part of `daemon`).
SPEC_COMMANDS = (
    "init",
    "daemon",
    "list",
    "status",
    "usage",
    "reclaim",
    "restore",
    "compact",
    "verify",
    "repair",
    "keygen",
    "reencrypt",
    "doctor",
)

# Every documented flag per command, besides the four global ones.
SPEC_FLAGS: dict[str, tuple[str, ...]] = {
    "init": (
        "--recipe",
        "--yes",
        "--force",
        "--db-path",
        "--db-name",
        "--backup-dir",
        "--encrypt",
        "--key-file",
        "--service-user",
        "--service-group",
        "--enable",
    ),
    "daemon": ("--max-concurrent-snapshots", "--snapshot-workers", "--metrics-addr"),
    "list": ("--verbose",),
    "status": ("--check", "--max-lag", "--max-verify-age"),
    "usage": (),
    "reclaim": ("--dry-run", "--min-age"),
    "restore": ("--output", "--timestamp", "--if-db-not-exists", "--if-replica-exists"),
    # Beyond cli.txt: a destructive command previews with --dry-run (style.md).
    "compact": ("--dry-run",),
    "verify": ("--deep",),
    "repair": ("--dry-run",),
    "keygen": ("--output",),
    # Beyond cli.txt: rotating away from a passphrase needs the old passphrase.
    "reencrypt": ("--old-key-file", "--old-passphrase-file", "--dry-run"),
    "doctor": (),
}
GLOBALS = ("--config", "--db", "--json", "--log-level")


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub: argparse.ArgumentParser = action.choices[name]
            return sub
    raise AssertionError("no subparsers")


def test_commands_are_exactly_the_documented_ones() -> None:
    assert tuple(command_name(c) for c in COMMANDS) == SPEC_COMMANDS


def test_root_help_lists_every_command_with_its_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        name = command_name(command)
        assert f"    {name} " in out
        assert command.HELP.split()[0] in out
    for flag in (*GLOBALS, "--version"):
        assert flag in out


@pytest.mark.parametrize("name", SPEC_COMMANDS)
def test_command_registers_exactly_its_documented_flags(name: str) -> None:
    flags = {
        opt
        for action in subparser(name)._actions
        for opt in action.option_strings
        if opt not in ("-h", "--help", *GLOBALS)
    }
    assert flags == set(SPEC_FLAGS[name])


@pytest.mark.parametrize("name", SPEC_COMMANDS)
def test_command_help_shows_flags_and_examples(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([name, "--help"]) == 0
    out = capsys.readouterr().out
    for flag in (*SPEC_FLAGS[name], *GLOBALS):
        assert flag in out
    assert "examples:" in out
    command = next(c for c in COMMANDS if command_name(c) == name)
    for line in command.EXAMPLES.splitlines():
        assert line.strip() in out
    # The examples are the product's own commands for this subcommand.
    assert f"bakelite {name}" in command.EXAMPLES


def test_help_summaries_are_one_line() -> None:
    for command in COMMANDS:
        assert command.HELP and "\n" not in command.HELP
        assert command.EXAMPLES.strip()


def test_root_defaults() -> None:
    args = parse("list")
    assert (args.config, args.db, args.json, args.log_level) == (None, None, False, None)
    assert args.command == "list"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (["--json", "list"], ["list", "--json"]),
        (["--config", "X", "restore", "--db", "app"], ["restore", "--config", "X", "--db", "app"]),
        (
            ["--db", "app", "--log-level", "debug", "verify"],
            ["verify", "--db", "app", "--log-level", "debug"],
        ),
        (
            ["--config", "X", "--db", "app", "--json", "status"],
            ["status", "--json", "--db", "app", "--config", "X"],
        ),
    ],
)
def test_global_flags_before_or_after_the_command_are_the_same(before: list[str], after: list[str]) -> None:
    assert vars(parse(*before)) == vars(parse(*after))


def test_global_flags_values() -> None:
    args = parse("--config", "X", "restore", "--db", "app")
    assert args.config == "X"
    assert args.db == "app"
    assert args.json is False


def test_value_after_the_command_wins() -> None:
    args = parse("--config", "a.toml", "--db", "one", "--log-level", "info", "list", "--config", "b.toml")
    assert args.config == "b.toml"
    assert args.db == "one"
    assert args.log_level == "info"
    args = parse("--db", "one", "verify", "--db", "two")
    assert args.db == "two"


def test_command_flag_values_and_types() -> None:
    args = parse("status", "--check", "--max-lag", "10m", "--max-verify-age", "36h")
    assert (args.check, args.max_lag, args.max_verify_age) == (True, 600.0, 36 * 3600.0)
    args = parse("status")
    assert (args.check, args.max_lag, args.max_verify_age) == (False, None, None)

    args = parse("restore", "--output", "/tmp/x.db", "--timestamp", "1 hour ago", "--if-db-not-exists")
    assert args.output == Path("/tmp/x.db")
    assert args.timestamp == "1 hour ago"
    assert (args.if_db_not_exists, args.if_replica_exists) == (True, False)

    args = parse("reclaim", "--min-age", "0s", "--dry-run")
    assert (args.min_age, args.dry_run) == (0.0, True)

    args = parse(
        "daemon", "--max-concurrent-snapshots", "4", "--snapshot-workers", "2", "--metrics-addr", "[::1]:9090"
    )
    assert (args.max_concurrent_snapshots, args.snapshot_workers, args.metrics_addr) == (4, 2, "[::1]:9090")

    args = parse("keygen")
    assert args.output is None
    args = parse("verify", "--deep")
    assert args.deep is True
    args = parse("list", "--verbose")
    assert args.verbose is True


def test_old_key_file_is_repeatable_and_keeps_order() -> None:
    args = parse("reencrypt", "--old-key-file", "b.txt", "--dry-run", "--old-key-file", "a.txt")
    assert args.old_key_files == [Path("b.txt"), Path("a.txt")]
    assert args.dry_run is True
    assert parse("reencrypt").old_key_files == []
    # The default list is not shared between parses.
    assert parse("reencrypt").old_key_files == []


def test_init_flags() -> None:
    args = parse(
        "init", "--yes", "--force", "--db-path", "/var/lib/app/app.db", "--db-name", "app",
        "--backup-dir", "/var/backups/bakelite", "--encrypt", "--service-user", "app",
        "--service-group", "app", "--enable", "--recipe", "s3",
    )  # fmt: skip
    assert args.db_path == Path("/var/lib/app/app.db")
    assert args.db_name == "app"
    assert args.backup_dir == Path("/var/backups/bakelite")
    assert (args.yes, args.force, args.encrypt, args.enable) == (True, True, True, True)
    assert (args.service_user, args.service_group, args.recipe, args.key_file) == ("app", "app", "s3", None)
    # --db (global) and --db-name (init) are distinct flags.
    assert args.db is None


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nonsense"],
        ["list", "--bogus"],
        ["status", "--max-lag", "10"],
        ["reclaim", "--min-age", "5 parsecs"],
        ["daemon", "--max-concurrent-snapshots", "-1"],
        ["daemon", "--snapshot-workers", "two"],
        ["daemon", "--metrics-addr", "localhost"],
        ["--log-level", "loud", "list"],
        ["list", "--log-level", "bakelite=chatty"],
        # Abbreviations are off: only the documented spellings are accepted.
        ["reclaim", "--dry"],
        ["list", "--verb"],
    ],
)
def test_usage_errors_exit_2_with_one_error_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    error_lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(error_lines) == 1
    assert err.startswith("usage: bakelite")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "bakelite 0.1.0"
