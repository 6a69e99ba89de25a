"""``bakelite keygen``: a new at-rest encryption key."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from bakelite.cli import render
from bakelite.errors import OutputExistsError, UsageError

HELP = "generate a new BAKELITE-KEY-V1 encryption key"
DESCRIPTION = """\
Prints a fresh key, or writes it to --output with mode 0600 (an existing file is never
overwritten). The key is symmetric: it both encrypts and decrypts, and without it the backups it
protects cannot be read. Keep a copy away from both the database host and the backup storage."""
EXAMPLES = """\
bakelite keygen --output /etc/bakelite/key.txt   # to a file, mode 0600
bakelite keygen                                  # to stdout"""
AVAILABLE = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register keygen's flags."""
    parser.add_argument(
        "--output",
        metavar="PATH",
        type=Path,
        help="write the key to a new file (mode 0600) instead of stdout",
    )


@dataclass(frozen=True)
class KeygenReport:
    """A generated key: its public id, and where it went (``key`` only when printed to stdout)."""

    key_id: str
    output: Path | None
    # The key itself, set only when the user asked for it on stdout (no --output).
    key: str | None = None


def run(args: argparse.Namespace) -> int:
    """Generate a key."""
    from bakelite.crypto.aead import key_id
    from bakelite.crypto.keys import format_key, generate_key, write_key_file

    raw = generate_key()
    text = format_key(raw)
    output: Path | None = args.output
    if output is None:
        if args.json:
            render.emit(KeygenReport(key_id=key_id(raw), output=None, key=text), True)
        else:
            render.text_out(text + "\n")
        return 0
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(
            f"cannot write the key to {output}: directory {parent} does not exist",
            hint=f"create it first (mkdir -p {parent}), with permissions that keep the key private",
        )
    try:
        write_key_file(output, text)
    except FileExistsError:
        raise OutputExistsError(
            f"{output} already exists; keygen never overwrites a key file",
            hint="choose another --output, or move the old key away first "
            "(keep it while any backup still needs it)",
        ) from None
    except OSError as e:
        raise UsageError(f"cannot write the key to {output}: {e.strerror or e}") from e
    report = KeygenReport(key_id=key_id(raw), output=Path(os.path.abspath(output)))
    render.emit(report, args.json, text=_text)
    return 0


def _text(report: KeygenReport) -> str:
    return (
        f"wrote a new key to {report.output} (mode 0600, key id {report.key_id})\n"
        "keep a copy off this host: without it the backups it encrypts cannot be restored"
    )
