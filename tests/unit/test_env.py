"""bakelite.config.env: env-file parsing, discovery order, the doctor report, the config path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bakelite.config import env
from bakelite.config.env import (
    DEFAULT_CONFIG_PATH,
    KNOWN_VARIABLES,
    REDACTED,
    config_path,
    is_secret,
    load_env_files,
    parse_env_text,
)
from bakelite.errors import ConfigError

# -- the file format ------------------------------------------------------------------------------


def values(text: str) -> dict[str, str]:
    parsed, _ = parse_env_text(text)
    return parsed


def test_plain_assignments_and_comments() -> None:
    text = "# a comment\n; another\n\nA=1\n  B = two words  \nC=x#not-a-comment\n"
    assert values(text) == {"A": "1", "B": "two words", "C": "x#not-a-comment"}


def test_quotes() -> None:
    text = 'S=\'single $HOME \\n\'\nD="a \\"b\\" \\\\ \\$x \\n"\nE=""\nM=\'multi\nline\'\n'
    assert values(text) == {"S": "single $HOME \\n", "D": 'a "b" \\ $x \\n', "E": "", "M": "multi\nline"}


def test_unquoted_escapes_and_continuations() -> None:
    assert values('A=one\\ two\nB=long\\\nvalue\nC="x\\\ny"\n') == {
        "A": "one two",
        "B": "longvalue",
        "C": "xy",
    }


def test_export_prefix_is_tolerated() -> None:
    assert values("export AWS_ACCESS_KEY_ID=abc\nexport\tB=2\n") == {"AWS_ACCESS_KEY_ID": "abc", "B": "2"}


def test_empty_value_crlf_and_last_line_without_newline() -> None:
    assert values("A=\r\nB=2\r\nC=3") == {"A": "", "B": "2", "C": "3"}


def test_later_assignment_wins() -> None:
    assert values("A=1\nA=2\n") == {"A": "2"}


def test_bad_lines_are_ignored_with_a_warning() -> None:
    parsed, warnings = parse_env_text("JUSTTEXT\n1BAD=x\nBAD NAME=y\nOK=1\nTRAILING", origin="f.env")
    assert parsed == {"OK": "1"}
    assert warnings == [
        "f.env:1: ignoring line without '=': 'JUSTTEXT'",
        "f.env:2: ignoring invalid variable name '1BAD'",
        "f.env:3: ignoring invalid variable name 'BAD NAME'",
        "f.env:5: ignoring line without '=': 'TRAILING'",
    ]


def test_unterminated_quote_keeps_the_value_and_warns() -> None:
    parsed, warnings = parse_env_text("A='open\n", origin="f")
    assert parsed == {"A": "open\n"}
    assert warnings == ["f:1: unterminated quote in the value of 'A'"]


_VALUE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)


@given(_VALUE.filter(lambda v: "'" not in v))
def test_single_quoted_values_round_trip(value: str) -> None:
    assert values(f"K='{value}'\n") == {"K": value}


@given(_VALUE)
def test_double_quoted_values_round_trip(value: str) -> None:
    escaped = "".join("\\" + c if c in '"\\`$' else c for c in value)
    assert values(f'K="{escaped}"\n') == {"K": value}


# -- discovery and precedence ---------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """An explicit, a system and a user (XDG) env file, each defining its own and shared names."""
    explicit = tmp_path / "explicit.env"
    system = tmp_path / "system.env"
    xdg = tmp_path / "xdg"
    (xdg / "bakelite").mkdir(parents=True)
    user = xdg / "bakelite" / "bakelite.env"
    explicit.write_text("SHARED=explicit\nONLY_EXPLICIT=1\nBAKELITE_KEY_FILE=/explicit/key\n")
    system.write_text(
        "SHARED=system\nONLY_SYSTEM=1\nAWS_SECRET_ACCESS_KEY=sekrit\nBAKELITE_KEY_FILE=/sys/key\n"
    )
    user.write_text("SHARED=user\nONLY_USER=1\nAWS_DEFAULT_REGION=eu-west-1\n")
    return {"explicit": explicit, "system": system, "xdg": xdg, "user": user}


def test_first_source_wins_per_variable(files: dict[str, Path]) -> None:
    environ = {"BAKELITE_ENV_FILE": str(files["explicit"]), "XDG_CONFIG_HOME": str(files["xdg"])}
    report = load_env_files(environ, system_file=files["system"])
    assert environ["SHARED"] == "explicit"
    assert environ["BAKELITE_KEY_FILE"] == "/explicit/key"
    assert environ["ONLY_EXPLICIT"] == environ["ONLY_SYSTEM"] == environ["ONLY_USER"] == "1"
    assert environ["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert report.considered == (files["explicit"], files["system"], files["user"])
    assert report.loaded == report.considered
    assert [f.role for f in report.files] == ["BAKELITE_ENV_FILE", "system", "user"]
    assert report.files[1].shadowed == ("SHARED", "BAKELITE_KEY_FILE")
    assert report.files[1].applied == ("ONLY_SYSTEM", "AWS_SECRET_ACCESS_KEY")


def test_system_file_beats_user_file(files: dict[str, Path]) -> None:
    environ = {"XDG_CONFIG_HOME": str(files["xdg"])}
    load_env_files(environ, system_file=files["system"])
    assert environ["SHARED"] == "system"


def test_already_set_variables_always_win(files: dict[str, Path]) -> None:
    environ = {
        "BAKELITE_ENV_FILE": str(files["explicit"]),
        "XDG_CONFIG_HOME": str(files["xdg"]),
        "SHARED": "process",
        "BAKELITE_KEY_FILE": "/process/key",
    }
    report = load_env_files(environ, system_file=files["system"])
    assert environ["SHARED"] == "process"
    assert environ["BAKELITE_KEY_FILE"] == "/process/key"
    assert report.sources["BAKELITE_KEY_FILE"] == "environment"
    assert report.sources["AWS_SECRET_ACCESS_KEY"] == str(files["system"])


def test_missing_explicit_env_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.env"
    with pytest.raises(ConfigError) as info:
        load_env_files({"BAKELITE_ENV_FILE": str(missing)}, system_file=tmp_path / "sys.env")
    assert str(missing) in info.value.message
    assert "BAKELITE_ENV_FILE" in info.value.message
    assert info.value.exit_code == 2


def test_absent_system_and_user_files_are_skipped_silently(tmp_path: Path) -> None:
    environ = {"HOME": str(tmp_path / "home")}
    report = load_env_files(environ, system_file=tmp_path / "absent.env")
    assert [f.status for f in report.files] == ["absent", "absent"]
    assert report.files[1].path == tmp_path / "home" / ".config" / "bakelite" / "bakelite.env"
    assert report.loaded == ()
    assert report.warnings == ()
    assert environ == {"HOME": str(tmp_path / "home")}


def test_home_config_is_used_without_xdg(tmp_path: Path) -> None:
    user = tmp_path / "home" / ".config" / "bakelite" / "bakelite.env"
    user.parent.mkdir(parents=True)
    user.write_text("FROM_HOME=yes\n")
    environ = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": "relative/is/ignored"}
    load_env_files(environ, system_file=tmp_path / "absent.env")
    assert environ["FROM_HOME"] == "yes"


def test_system_path_is_a_module_constant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "bakelite.env"
    system.write_text("FROM_SYSTEM=1\n")
    monkeypatch.setattr(env, "SYSTEM_ENV_FILE", system)
    environ = {"HOME": str(tmp_path)}
    report = load_env_files(environ)
    assert environ["FROM_SYSTEM"] == "1"
    assert report.files[0].path == system


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_system_file_is_reported_not_fatal(tmp_path: Path) -> None:
    system = tmp_path / "bakelite.env"
    system.write_text("A=1\n")
    system.chmod(0)
    report = load_env_files({"HOME": str(tmp_path)}, system_file=system)
    assert report.files[0].status == "unreadable"
    assert report.warnings and str(system) in report.warnings[0]


def test_same_file_twice_is_loaded_once(tmp_path: Path) -> None:
    system = tmp_path / "bakelite.env"
    system.write_text("A=1\n")
    report = load_env_files({"BAKELITE_ENV_FILE": str(system), "HOME": str(tmp_path)}, system_file=system)
    assert [f.status for f in report.files] == ["loaded", "duplicate", "absent"]


def test_load_env_files_defaults_to_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    explicit = tmp_path / "e.env"
    explicit.write_text("BAKELITE_TEST_ONLY_VAR=from-file\n")
    monkeypatch.setenv("BAKELITE_ENV_FILE", str(explicit))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("BAKELITE_TEST_ONLY_VAR", raising=False)
    load_env_files(system_file=tmp_path / "absent.env")
    try:
        assert os.environ["BAKELITE_TEST_ONLY_VAR"] == "from-file"
    finally:
        del os.environ["BAKELITE_TEST_ONLY_VAR"]


# -- the report -----------------------------------------------------------------------------------


def test_report_lists_known_variables_and_redacts_secrets(files: dict[str, Path]) -> None:
    environ = {
        "XDG_CONFIG_HOME": str(files["xdg"]),
        "BAKELITE_PASSPHRASE": "correct horse",
        "BAKELITE_LOG": "debug",
        "UNRELATED": "x",
    }
    report = load_env_files(environ, system_file=files["system"])
    assert set(report.set_variables) == {
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
        "BAKELITE_KEY_FILE",
        "BAKELITE_PASSPHRASE",
        "BAKELITE_LOG",
    }
    shown = report.redacted()
    assert shown["AWS_SECRET_ACCESS_KEY"] == REDACTED
    assert shown["BAKELITE_PASSPHRASE"] == REDACTED
    assert shown["BAKELITE_KEY_FILE"] == "/sys/key"  # a path, not a secret
    assert shown["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert shown["BAKELITE_LOG"] == "debug"
    assert "UNRELATED" not in shown
    assert "sekrit" not in repr(report)
    assert "correct horse" not in repr(report)


@pytest.mark.parametrize(
    "name",
    [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "GOOGLE_SERVICE_ACCOUNT_KEY",
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_ACCESS_KEY",
        "AZURE_STORAGE_CLIENT_SECRET",
        "BAKELITE_SFTP_PASSWORD",
        "BAKELITE_SFTP_KEY_PASSPHRASE",
        "BAKELITE_KEY",
        "BAKELITE_PASSPHRASE",
        "MY_SFTP_PASSWORD",
        "SOME_API_TOKEN",
    ],
)
def test_secret_variables(name: str) -> None:
    assert is_secret(name)


@pytest.mark.parametrize(
    "name",
    [
        "BAKELITE_CONFIG",
        "BAKELITE_LOG",
        "BAKELITE_KEY_FILE",
        "BAKELITE_PASSPHRASE_FILE",
        "AWS_DEFAULT_REGION",
    ],
)
def test_non_secret_variables(name: str) -> None:
    assert not is_secret(name)


def test_known_variables_cover_the_documented_list() -> None:
    for name in (
        "BAKELITE_CONFIG",
        "BAKELITE_LOG",
        "BAKELITE_ENV_FILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_DEFAULT_REGION",
        "BAKELITE_AWS_USE_DEFAULT_CREDENTIAL_CHAIN",
        "GOOGLE_SERVICE_ACCOUNT",
        "GOOGLE_SERVICE_ACCOUNT_KEY",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_ACCESS_KEY",
        "AZURE_STORAGE_CLIENT_ID",
        "AZURE_STORAGE_CLIENT_SECRET",
        "AZURE_STORAGE_TENANT_ID",
        "BAKELITE_SFTP_PASSWORD",
        "BAKELITE_SFTP_KEY_PASSPHRASE",
        "BAKELITE_KEY",
        "BAKELITE_KEY_FILE",
        "BAKELITE_PASSPHRASE",
        "BAKELITE_PASSPHRASE_FILE",
    ):
        assert name in KNOWN_VARIABLES


# -- config_path ----------------------------------------------------------------------------------


def test_config_path_precedence() -> None:
    assert config_path("/cli.toml", {"BAKELITE_CONFIG": "/env.toml"}) == Path("/cli.toml")
    assert config_path(None, {"BAKELITE_CONFIG": "/env.toml"}) == Path("/env.toml")
    assert config_path(None, {"BAKELITE_CONFIG": ""}) == DEFAULT_CONFIG_PATH
    assert config_path(None, {}) == Path("/etc/bakelite/bakelite.toml")
    assert config_path(Path("rel.toml"), {}) == Path("rel.toml")
