"""The examples of docs/api.md run: each fenced python block, in an empty directory, in its own process.

A block runs as a module (not ``__main__``); a block defining ``test_*`` functions is then run under
pytest, and one defining a Flask ``app`` is driven through its test client inside a Replicator.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "api.md"
BLOCK_RE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)

DRIVER = textwrap.dedent(
    """
    import runpy, sqlite3, sys
    ns = runpy.run_path(sys.argv[1], run_name="docs_example")
    app = ns.get("app")
    if hasattr(app, "test_client"):
        import bakelite
        with bakelite.Replicator(ns["config"]) as replicator:
            client = app.test_client()
            for i in range(5):
                assert client.post("/notes", data=f"note {i}").status_code == 200
        report = bakelite.restore(ns["config"], output="restored.db")
        con = sqlite3.connect(report.output)
        assert con.execute("SELECT count(*) FROM notes").fetchone() == (5,), "restore is not exact"
        print("flask example: 5 notes restored")
    """
)


def blocks() -> list[str]:
    """Every ```python block of docs/api.md."""
    return BLOCK_RE.findall(DOC.read_text())


def _env() -> dict[str, str]:
    env = dict(os.environ, BAKELITE_ENV_FILE=os.devnull, PYTHONDONTWRITEBYTECODE="1")
    for name in ("BAKELITE_KEY", "BAKELITE_KEY_FILE", "BAKELITE_PASSPHRASE", "BAKELITE_PASSPHRASE_FILE"):
        env.pop(name, None)
    return env


def test_the_page_has_the_promised_examples() -> None:
    """A restore-on-boot app, a Flask app, a pytest fixture, and a validation example."""
    found = blocks()
    assert len(found) >= 4
    assert any("Replicator" in b and "if_db_not_exists=True" in b for b in found)
    assert any("from flask import" in b for b in found)
    assert any("@pytest.fixture" in b for b in found)


@pytest.mark.parametrize("index", range(len(blocks())))
def test_example_runs(index: int, tmp_path: Path) -> None:
    """The block runs to completion (and its tests pass, and its app restores exactly)."""
    code = blocks()[index]
    # Flask is part of the test extra (make test installs it): its example always runs.
    assert "from flask import" not in code or importlib.util.find_spec("flask") is not None
    script = tmp_path / "example.py"
    script.write_text(code)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    runs = [[sys.executable, str(driver), str(script)]]
    if re.search(r"^def test_", code, re.M):
        runs = [[sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(script)]]
    for cmd in runs:
        done = subprocess.run(
            cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, f"block {index} failed:\n{done.stdout}\n{done.stderr}"
