"""cli.context: loading the config (env files first), --db selection, argument types."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest

from bakelite.cli import context
from bakelite.cli.main import build_parser
from bakelite.config.model import Config
from bakelite.errors import ConfigError, NotAvailableError

CONFIG = """\
[[database]]
name = "app"
path = "{tmp}/app.db"
  [[database.backends]]
  type = "file"
  path = "{tmp}/backups"

[[database]]
name = "other"
path = "{tmp}/other.db"
  [[database.backends]]
  type = "file"
  path = "{tmp}/backups"
"""


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Keep env-file discovery away from the host's /etc/bakelite/bakelite.env.
    monkeypatch.setattr("bakelite.config.env.SYSTEM_ENV_FILE", tmp_path / "absent.env")
    path = tmp_path / "bakelite.toml"
    path.write_text(CONFIG.format(tmp=tmp_path), encoding="utf-8")
    return path


def args_for(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_load_from_config_flag(config_file: Path) -> None:
    config = context.load(args_for("list", "--config", str(config_file)))
    assert [d.name for d in config.databases] == ["app", "other"]


def test_load_from_env_var(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAKELITE_CONFIG", str(config_file))
    assert len(context.load(args_for("list")).databases) == 2


def test_load_reads_env_files_first(
    config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env_file = tmp_path / "bakelite.env"
    env_file.write_text(f"BAKELITE_CONFIG={config_file}\nBAKELITE_LOG=bakelite=debug\n", encoding="utf-8")
    monkeypatch.setenv("BAKELITE_ENV_FILE", str(env_file))
    from bakelite import log

    log.setup_logging(None, json_lines=False)
    config = context.load(args_for("list"))
    assert config.source == config_file
    # BAKELITE_LOG from the env file applies even though logging was set up before it was read.
    logging.getLogger("bakelite.test").debug("now visible")
    assert "now visible" in capsys.readouterr().err


def test_missing_config_is_a_config_error(tmp_path: Path, config_file: Path) -> None:
    with pytest.raises(ConfigError):
        context.load(args_for("list", "--config", str(tmp_path / "nope.toml")))


def test_selected(config_file: Path) -> None:
    config = context.load(args_for("list", "--config", str(config_file)))
    assert [d.name for d in context.selected(args_for("list"), config)] == ["app", "other"]
    assert [d.name for d in context.selected(args_for("list", "--db", "other"), config)] == ["other"]
    with pytest.raises(ConfigError, match="no database named 'nope'"):
        context.selected(args_for("list", "--db", "nope"), config)
    with pytest.raises(ConfigError, match="no databases configured"):
        context.selected(args_for("list"), Config())


def test_not_available() -> None:
    e = context.not_available("restore")
    assert isinstance(e, NotAvailableError)
    assert e.exit_code == 2
    assert e.one_line().startswith("`restore` is not available in this build")


def test_argument_types() -> None:
    assert context.duration("90s") == 90.0
    assert context.duration("0s") == 0.0
    assert context.count("0") == 0
    assert context.host_port("127.0.0.1:9090") == "127.0.0.1:9090"
    assert context.host_port(":9090") == ":9090"
    assert context.log_filter("bakelite=debug") == "bakelite=debug"
    for func, bad in [
        (context.duration, "10"),
        (context.count, "-3"),
        (context.count, "1.5"),
        (context.host_port, "host:99999"),
        (context.host_port, "[::1:9090"),
        (context.log_filter, "nope"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError):
            func(bad)
