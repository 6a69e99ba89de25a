"""docs/configuration.md documents every key of the schema, so the two cannot drift apart."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from bakelite.config import parse_config
from bakelite.config.env import KNOWN_VARIABLES
from bakelite.config.load import TOP_LEVEL_KEYS
from bakelite.config.model import (
    AzureBackend,
    DaemonSettings,
    Encryption,
    FileBackend,
    GCSBackend,
    S3Backend,
    SFTPBackend,
    Tunables,
)
from bakelite.config.validate import BACKEND_CLASSES

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


SCHEMA_KEYS: list[tuple[str, str]] = [
    *(("Tunables", n) for n in _names(Tunables)),
    *(("DaemonSettings", n) for n in _names(DaemonSettings)),
    # ``key`` is internal: it is only ever filled from BAKELITE_KEY.
    *(("Encryption", n) for n in _names(Encryption) if n != "key"),
    *(
        (cls.__name__, n)
        for cls in (FileBackend, S3Backend, GCSBackend, AzureBackend, SFTPBackend)
        for n in ["type", *_names(cls)]
    ),
    *(("database", n) for n in ("name", "path")),
]


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


@pytest.mark.parametrize(("owner", "key"), SCHEMA_KEYS, ids=[f"{o}.{k}" for o, k in SCHEMA_KEYS])
def test_every_schema_key_is_documented(doc: str, owner: str, key: str) -> None:
    assert f"`{key}`" in doc, f"{owner}.{key} is missing from docs/configuration.md"


@pytest.mark.parametrize("table", TOP_LEVEL_KEYS)
def test_every_top_level_table_is_documented(doc: str, table: str) -> None:
    assert f"`[{table}]`" in doc or f"`[[{table}]]`" in doc


@pytest.mark.parametrize("backend_type", sorted(BACKEND_CLASSES))
def test_every_backend_type_has_a_section(doc: str, backend_type: str) -> None:
    assert f'### `type = "{backend_type}"`' in doc


@pytest.mark.parametrize("variable", KNOWN_VARIABLES)
def test_every_environment_variable_is_documented(doc: str, variable: str) -> None:
    assert f"`{variable}`" in doc


def test_every_backend_key_is_in_its_own_section(doc: str) -> None:
    """A key documented under the wrong backend would pass the test above, so check per section."""
    for backend_type, cls in BACKEND_CLASSES.items():
        start = doc.index(f'### `type = "{backend_type}"`')
        end = doc.find("\n## ", start)
        end_sub = doc.find("\n### ", start + 1)
        section = doc[start : min(e for e in (end, end_sub) if e != -1)]
        for name in _names(cls):
            if name == "mode":  # shared by every type, documented once above the sections
                continue
            assert f"| `{name}` |" in section, f"{backend_type}: {name} missing from its section"


def test_toml_examples_in_the_doc_are_valid(doc: str) -> None:
    """Every ```toml example loads (a shared file backend is added to fragments that name none)."""
    blocks = re.findall(r"```toml\n(.*?)```", doc, flags=re.S)
    assert blocks
    for block in blocks:
        data = tomllib.loads(block)
        if not any("backends" in db for db in data.get("database", [])) and "backends" not in data:
            data["backends"] = [{"type": "file", "path": "/var/backups/bakelite"}]
        parse_config(data, environ={})
