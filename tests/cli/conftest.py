"""Fixtures for the CLI tests: a clean environment and logging state around every test."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ENV_VARS = ("BAKELITE_CONFIG", "BAKELITE_LOG", "BAKELITE_ENV_FILE")


@pytest.fixture(autouse=True)
def clean_cli_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Isolate each test from the user's env files and variables, and undo logging setup."""
    saved_env = dict(os.environ)
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    # Env-file discovery must not pick up the developer's ~/.config/bakelite/bakelite.env.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    yield
    # The env loader writes os.environ directly, so restore it wholesale rather than per key.
    os.environ.clear()
    os.environ.update(saved_env)
    for handler in list(root.handlers):
        if handler not in saved_handlers:
            root.removeHandler(handler)
    root.setLevel(saved_level)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("bakelite") or name.startswith("test"):
            logging.getLogger(name).setLevel(logging.NOTSET)
