"""docs/cli.md is generated from the commands; it must not drift, and every command must be in it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from bakelite.cli import reference
from bakelite.cli.main import COMMANDS, GLOBAL_FLAGS, command_name

REPO = Path(__file__).resolve().parents[2]
CLI_MD = REPO / "docs" / "cli.md"
REGEN = "python -m bakelite.cli.reference > docs/cli.md"


def test_cli_md_is_up_to_date() -> None:
    assert CLI_MD.read_text(encoding="utf-8") == reference.generate(), f"docs/cli.md is stale: run `{REGEN}`"


def test_every_command_and_flag_is_documented() -> None:
    text = CLI_MD.read_text(encoding="utf-8")
    headings = re.findall(r"^## (\S+)$", text, flags=re.MULTILINE)
    for command in COMMANDS:
        name = command_name(command)
        assert name in headings, f"`{name}` is missing from docs/cli.md"
        section = text.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        assert command.EXAMPLES in section
        if not command.AVAILABLE:
            assert reference.NOT_AVAILABLE in section
    for flag in GLOBAL_FLAGS:
        assert f"`{flag}" in text


def test_reference_escapes_markdown() -> None:
    assert reference._md("a <name> * b_c | d `<kept>`") == r"a &lt;name&gt; \* b\_c \| d `<kept>`"


def test_module_entry_point_prints_the_reference() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bakelite.cli.reference"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout == reference.generate()


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    assert mkdocs, "mkdocs is part of the [docs] extra"
    result = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
