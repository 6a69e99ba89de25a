"""`make demo` keeps working: it is one of the two commands the README promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_passes(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "bakelite.demo", "--dir", str(tmp_path / "demo"), "--rows", "30"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "demo passed" in r.stdout
