"""The real daemon subprocess writes only sealed objects when a key is configured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness import Deployment, grade


def test_daemon_encrypts_and_restore_needs_the_key(tmp_path: Path) -> None:
    key = tmp_path / "key.txt"
    subprocess.run([sys.executable, "-m", "bakelite", "keygen", "--output", str(key)], check=True)
    dep = Deployment(tmp_path / "site", extra_config=f'\n[defaults.encryption]\nkey_file = "{key}"\n')
    dep.init_db()
    try:
        dep.start_daemon()
        dep.wait_replicating()
        dep.run_writer("--commits", "80", "--blob-every", "4")
        assert dep.stop_daemon() == 0, dep.daemon_log.read_text()
        out = tmp_path / "r.db"
        r = dep.restore(out)
        assert r.returncode == 0, r.stderr
        assert grade(out, dep.commits()).seq == 80
        # No plaintext from the database reaches the backend.
        for obj in (dep.backups / dep.name).rglob("*"):
            if obj.is_file():
                data = obj.read_bytes()
                assert b"commit 7" not in data and b"SQLite format 3" not in data, obj
        # Another key cannot restore it, and says why.
        other = tmp_path / "other.txt"
        subprocess.run([sys.executable, "-m", "bakelite", "keygen", "--output", str(other)], check=True)
        dep.config.write_text(dep.config.read_text().replace(str(key), str(other)))
        r = dep.restore(tmp_path / "wrong.db")
        assert r.returncode != 0 and not (tmp_path / "wrong.db").exists()
        assert "key" in r.stderr.lower()
    finally:
        dep.cleanup()
