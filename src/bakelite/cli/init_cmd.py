"""``bakelite init``: guided, recipe-driven setup (config, key, systemd drop-in, then doctor)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from bakelite.cli import render
from bakelite.errors import UsageError

HELP = "set up bakelite: write a config, a key and a systemd drop-in, then run doctor"
DESCRIPTION = """\
Walk from a fresh install to a validated, running backup. On a terminal it asks a few questions
from a recipe and confirms every step; with --yes it runs without prompts. The config is validated
before it is written, nothing existing is overwritten unless --force is given, and an existing key
file is never overwritten. --db-path makes an unattended run do the full local-backend setup."""
EXAMPLES = """\
sudo bakelite init                        # interactive wizard
sudo bakelite init --recipe s3 --yes      # no prompts: scaffold a starter config

# Unattended, complete local-backend setup (CI, Ansible, cloud-init, Dockerfile):
sudo bakelite init --yes --force \\
  --db-path /var/lib/app/app.db --db-name app \\
  --backup-dir /var/backups/bakelite \\
  --encrypt --service-user app --enable"""
AVAILABLE = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register init's flags."""
    parser.add_argument(
        "--recipe",
        metavar="NAME",
        choices=("local", "s3", "gcs", "azure", "sftp"),
        help="the setup recipe to start from: local, s3, gcs, azure or sftp",
    )
    parser.add_argument("--yes", action="store_true", help="answer every prompt with its default")
    parser.add_argument(
        "--force", action="store_true", help="overwrite an existing config (never an existing key file)"
    )
    parser.add_argument(
        "--db-path", metavar="PATH", type=Path, help="database to back up; triggers the full unattended setup"
    )
    parser.add_argument("--db-name", metavar="NAME", help="name for the database in the config")
    parser.add_argument("--backup-dir", metavar="PATH", type=Path, help="directory for the local backend")
    parser.add_argument("--encrypt", action="store_true", help="generate a key and enable at-rest encryption")
    parser.add_argument("--key-file", metavar="PATH", type=Path, help="encrypt with this existing key file")
    parser.add_argument(
        "--service-user",
        metavar="USER",
        help="User= for the systemd drop-in (default: the owner of the database file)",
    )
    parser.add_argument(
        "--service-group", metavar="GROUP", help="Group= for the systemd drop-in (default: the user's group)"
    )
    parser.add_argument(
        "--enable",
        action="store_true",
        help="enable and start the daemon and the check/verify timers (no systemd: install the cron file)",
    )


class TerminalPrompter:
    """The wizard's questions on the terminal: prompts on stdout, answers from stdin."""

    def say(self, text: str) -> None:
        """Show ``text``."""
        render.text_out(text + "\n")

    def ask(self, question: str, default: str | None = None) -> str:
        """Ask until there is an answer; Enter takes ``default``."""
        shown = f"{question} [{default}]: " if default else f"{question}: "
        while True:
            answer = input(shown).strip()
            if answer:
                return answer
            if default is not None:
                return default
            self.say("  an answer is needed")

    def secret(self, question: str) -> str:
        """Ask without echo."""
        return getpass.getpass(f"{question} (not shown): ").strip()

    def confirm(self, question: str, default: bool) -> bool:
        """Ask yes or no."""
        hint = "Y/n" if default else "y/N"
        while True:
            answer = input(f"{question} [{hint}]: ").strip().lower()
            if not answer:
                return default
            if answer in ("y", "yes"):
                return True
            if answer in ("n", "no"):
                return False
            self.say("  please answer y or n")


def run(args: argparse.Namespace) -> int:
    """Run the wizard, the starter or the unattended setup."""
    from bakelite.config.env import config_path
    from bakelite.ops import init

    host = init.Host.from_env()
    cli_config = getattr(args, "config", None)
    explicit = cli_config or os.environ.get("BAKELITE_CONFIG")
    config = Path(os.path.abspath(config_path(cli_config))) if explicit else host.default_config
    opts = init.InitOptions(
        config=config,
        recipe=args.recipe,
        db_path=args.db_path,
        db_name=args.db_name,
        backup_dir=args.backup_dir,
        encrypt=args.encrypt,
        key_file=args.key_file,
        service_user=args.service_user,
        service_group=args.service_group,
        enable=args.enable,
        force=args.force,
    )
    if args.yes:
        report = init.unattended(host, opts) if args.db_path is not None else init.starter(host, opts)
    else:
        if not sys.stdin.isatty():
            raise UsageError(
                "init asks questions, but standard input is not a terminal",
                hint="run it on a terminal, or pass --yes (with --db-path for the full local setup)",
            )
        if args.json:
            raise UsageError("the wizard cannot answer in JSON", hint="use --json with --yes")
        report = init.wizard(host, opts, TerminalPrompter())
    render.emit(report, args.json, text=init.render_init_text)
    return report.exit_code
