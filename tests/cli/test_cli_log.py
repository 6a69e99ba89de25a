"""bakelite.log: level specs, BAKELITE_LOG, text and JSON lines on stderr."""

from __future__ import annotations

import json
import logging

import pytest

from bakelite import log
from bakelite.cli.main import main
from bakelite.errors import ConfigError, UsageError


def test_parse_filter() -> None:
    assert log.parse_filter("info") == log.LogFilter(default=logging.INFO, targets=())
    assert log.parse_filter("bakelite=debug") == log.LogFilter(
        default=None, targets=(("bakelite", logging.DEBUG),)
    )
    assert log.parse_filter(" warn , bakelite::storage=TRACE,botocore=error") == log.LogFilter(
        default=logging.WARNING, targets=(("bakelite.storage", logging.DEBUG), ("botocore", logging.ERROR))
    )


@pytest.mark.parametrize("spec", ["", " , ", "loud", "bakelite=", "=debug", "bakelite=verbose"])
def test_parse_filter_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        log.parse_filter(spec)


def test_default_level_and_text_format(capsys: pytest.CaptureFixture[str]) -> None:
    log.setup_logging(None, json_lines=False)
    logger = logging.getLogger("bakelite.test")
    logger.info("hidden")
    logger.warning("shown %d", 1, extra={"db": "app"})
    err = capsys.readouterr().err
    assert "hidden" not in err
    line = err.strip()
    assert line.endswith("WARNING bakelite.test: shown 1 db=app")
    assert line[:4].isdigit() and "Z " in line


def test_caller_default(capsys: pytest.CaptureFixture[str]) -> None:
    log.setup_logging(None, json_lines=False, default="info")
    logging.getLogger("bakelite.test").info("daemon info")
    assert "daemon info" in capsys.readouterr().err


def test_env_var_and_flag_precedence(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BAKELITE_LOG", "debug")
    log.setup_logging(None, json_lines=False)
    logging.getLogger("bakelite.test").debug("from env")
    assert "from env" in capsys.readouterr().err
    log.setup_logging("error", json_lines=False)
    logging.getLogger("bakelite.test").warning("flag wins")
    assert capsys.readouterr().err == ""


def test_target_levels(capsys: pytest.CaptureFixture[str]) -> None:
    log.setup_logging("bakelite=debug", json_lines=False)
    logging.getLogger("bakelite.storage").debug("ours")
    logging.getLogger("botocore.thing").info("theirs")
    err = capsys.readouterr().err
    assert "ours" in err
    assert "theirs" not in err
    # A second setup forgets the first one's per-logger levels and does not stack handlers.
    log.setup_logging(None, json_lines=False)
    logging.getLogger("bakelite.storage").debug("quiet now")
    logging.getLogger("bakelite.storage").warning("once")
    assert capsys.readouterr().err.count("once") == 1


def test_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    log.setup_logging("info", json_lines=True)
    logger = logging.getLogger("bakelite.test")
    logger.info("shipped", extra={"db": "app", "bytes": 42, "level": "clash"})
    try:
        raise RuntimeError("x")
    except RuntimeError:
        logger.exception("failed")
    lines = capsys.readouterr().err.splitlines()
    first = json.loads(lines[0])
    assert first["msg"] == "shipped"
    assert first["level"] == "info"
    assert first["logger"] == "bakelite.test"
    assert first["ts"].endswith("Z")
    assert (first["db"], first["bytes"], first["extra_level"]) == ("app", 42, "clash")
    second = json.loads(lines[1])
    assert second["level"] == "error"
    assert "RuntimeError: x" in second["exc"]
    assert len(lines) == 2


def test_invalid_levels_raise_bakelite_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError):
        log.setup_logging("loud", json_lines=False)
    monkeypatch.setenv("BAKELITE_LOG", "loud")
    with pytest.raises(ConfigError):
        log.setup_logging(None, json_lines=False)


def test_refresh_picks_up_a_later_env_var(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log.setup_logging(None, json_lines=False)
    monkeypatch.setenv("BAKELITE_LOG", "debug")
    log.refresh()
    logging.getLogger("bakelite.test").debug("after refresh")
    assert "after refresh" in capsys.readouterr().err


def test_cli_json_flag_gives_json_log_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bakelite.cli import list_cmd

    def run(args: object) -> int:
        logging.getLogger("bakelite.cli.list_cmd").warning("careful", extra={"db": "app"})
        return 0

    monkeypatch.setattr(list_cmd, "run", run)
    assert main(["list", "--json"]) == 0
    doc = json.loads(capsys.readouterr().err)
    assert (doc["msg"], doc["db"], doc["level"]) == ("careful", "app", "warning")
    assert main(["--log-level", "error", "list"]) == 0
    assert capsys.readouterr().err == ""
