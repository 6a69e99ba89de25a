"""open_storage and PrefixedStorage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bakelite.config.model import AzureBackend, Backend, FileBackend, S3Backend, SFTPBackend
from bakelite.errors import EXIT_USAGE, BackendError, ConfigError
from bakelite.storage.file import FileStorage
from bakelite.storage.memory import MemoryStorage
from bakelite.storage.registry import PrefixedStorage, open_storage


def test_file_backend_opens_a_file_storage(tmp_path: Path) -> None:
    storage = open_storage(FileBackend(path=tmp_path / "store"))
    assert isinstance(storage, FileStorage)
    assert storage.describe() == f"file://{tmp_path}/store"


def test_namespace_roots_the_storage_at_the_database_name(tmp_path: Path) -> None:
    storage = open_storage(FileBackend(path=tmp_path), namespace="app")
    storage.put("snapshots/1", b"x")
    assert (tmp_path / "app" / "snapshots" / "1").read_bytes() == b"x"
    assert [i.key for i in storage.list()] == ["snapshots/1"]
    assert storage.describe() == f"file://{tmp_path}/app"


@pytest.mark.parametrize(
    "backend",
    [S3Backend(bucket="b"), AzureBackend(account="a", container="c")],
    ids=lambda b: b.type,
)
def test_cloud_backends_without_credentials_fail_at_once(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "BAKELITE_AWS_USE_DEFAULT_CREDENTIAL_CHAIN"):
        monkeypatch.delenv(name, raising=False)
    for name in ("ACCOUNT_KEY", "ACCESS_KEY", "SAS_TOKEN", "CLIENT_ID"):
        monkeypatch.delenv(f"AZURE_STORAGE_{name}", raising=False)
    with pytest.raises(ConfigError, match="credentials found") as info:
        open_storage(backend)
    assert info.value.exit_code == EXIT_USAGE


def test_sftp_backend_connects_lazily() -> None:
    storage = open_storage(SFTPBackend(host="127.0.0.1", port=9, user="u", path="/srv"))
    assert storage.describe() == "sftp://u@127.0.0.1:9//srv"
    storage.close()


@pytest.mark.parametrize("namespace", ["", "../x", "a//b", "/abs"])
def test_bad_namespaces_are_rejected(tmp_path: Path, namespace: str) -> None:
    with pytest.raises(BackendError):
        open_storage(FileBackend(path=tmp_path), namespace=namespace)


def test_prefixed_storage_isolates_namespaces() -> None:
    inner = MemoryStorage()
    app, other = PrefixedStorage(inner, "app"), PrefixedStorage(inner, "app2")
    app.put("k", b"1")
    other.put("k", b"2")
    inner.put("appendix", b"3")
    assert [i.key for i in app.list()] == ["k"]
    assert [i.key for i in app.list("k")] == ["k"]
    assert inner.keys() == ["app/k", "app2/k", "appendix"]
    info = app.stat("k")
    assert info is not None and info.key == "k"
    app.delete(["k"])
    assert inner.keys() == ["app2/k", "appendix"]


def test_prefix_may_have_several_segments() -> None:
    inner = MemoryStorage()
    storage = PrefixedStorage(inner, "tenant/app/")
    storage.put("a/b", b"1")
    assert inner.keys() == ["tenant/app/a/b"]
    assert storage.describe().endswith("/tenant/app")


def test_importing_the_registry_loads_no_cloud_sdk() -> None:
    code = (
        "import sys, bakelite.storage.registry, bakelite.storage.file;"
        "bad = [m for m in ('boto3', 'google.cloud', 'azure', 'paramiko') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
