"""The object-store backends without a server: credentials, install hints, stream helpers."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bakelite.config.model import AzureBackend, GCSBackend, S3Backend, SFTPBackend
from bakelite.errors import EXIT_USAGE, ConfigError, DeleteRefusedError, NotAvailableError
from bakelite.storage import gcs as gcs_module
from bakelite.storage.azure import AzureStorage, resolve_credential
from bakelite.storage.gcs import GCSStorage
from bakelite.storage.s3 import S3Credentials, S3Storage, resolve_credentials
from bakelite.storage.sftp import SFTPStorage
from bakelite.storage.streams import RangedReader, buffered, is_loopback_url, rebuffer

# -- install hints -----------------------------------------------------------------------------

MISSING_SDK = {
    "s3": (["botocore", "botocore.session", "botocore.config", "botocore.exceptions"], "bakelite[s3]"),
    "gcs": (["google.cloud.storage"], "bakelite[gcs]"),
    "azure": (["azure.storage.blob"], "bakelite[azure]"),
    "sftp": (["paramiko"], "bakelite[sftp]"),
}


def _open(kind: str) -> Any:
    env = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", "AZURE_STORAGE_ACCOUNT_KEY": "a2V5"}
    if kind == "s3":
        return S3Storage.from_config(S3Backend(bucket="b"), environ=env)
    if kind == "gcs":
        return GCSStorage.from_config(GCSBackend(bucket="b", endpoint="http://127.0.0.1:9"), environ={})
    if kind == "azure":
        return AzureStorage.from_config(AzureBackend(account="a", container="c"), environ=env)
    return SFTPStorage.from_config(SFTPBackend(host="127.0.0.1"), environ={})


@pytest.mark.parametrize("kind", sorted(MISSING_SDK))
def test_a_missing_sdk_raises_the_install_hint(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    modules, extra = MISSING_SDK[kind]
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError
    with pytest.raises(NotAvailableError) as info:
        _open(kind)
    assert info.value.hint == f"pip install '{extra}'"
    assert info.value.exit_code == EXIT_USAGE


def test_backend_modules_import_no_sdk() -> None:
    code = (
        "import sys, bakelite.storage.s3, bakelite.storage.gcs, bakelite.storage.azure, "
        "bakelite.storage.sftp, bakelite.ops.reclaim, bakelite.ops.s3inspect, bakelite.cli.reclaim_cmd;"
        "bad = [m for m in ('boto3', 'botocore', 'google.cloud', 'azure', 'paramiko') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- credentials -------------------------------------------------------------------------------


def test_s3_credentials_come_only_from_the_environment() -> None:
    full = {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "tok"}
    creds = resolve_credentials(full, "s3://b")
    assert creds.static and creds.session_token == "tok"
    assert repr(creds) == "S3Credentials(static=True)"  # never the values
    assert not resolve_credentials({"BAKELITE_AWS_USE_DEFAULT_CREDENTIAL_CHAIN": "1"}, "s3://b").static
    with pytest.raises(ConfigError, match="no S3 credentials found") as info:
        resolve_credentials({"AWS_ACCESS_KEY_ID": "id"}, "s3://b/p")
    assert info.value.detail == "s3://b/p: AWS_SECRET_ACCESS_KEY not set"


def test_gcs_credentials_never_fall_back_to_the_metadata_server_off_gcp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dmi = tmp_path / "product_name"
    dmi.write_text("Standard PC (Q35 + ICH9, 2009)\n")
    monkeypatch.setattr(gcs_module, "_DMI_PRODUCT", dmi)
    backend = GCSBackend(bucket="b")
    with pytest.raises(ConfigError, match="no GCS credentials found"):
        gcs_module.resolve_credentials(backend, {"HOME": str(tmp_path)})
    with pytest.raises(ConfigError, match="could not load GCS credentials"):
        gcs_module.resolve_credentials(backend, {"HOME": str(tmp_path), "GOOGLE_SERVICE_ACCOUNT_KEY": "{}"})
    assert not gcs_module.on_gce()
    dmi.write_text("Google Compute Engine\n")
    assert gcs_module.on_gce()


def test_azure_credential_sources() -> None:
    backend = AzureBackend(account="acct", container="c")
    assert resolve_credential(backend, {"AZURE_STORAGE_ACCESS_KEY": "k"}) == {
        "account_name": "acct",
        "account_key": "k",
    }
    assert resolve_credential(backend, {"AZURE_STORAGE_SAS_TOKEN": "?sv=1&sig=x"}) == "sv=1&sig=x"
    with pytest.raises(ConfigError, match="no Azure credentials found"):
        resolve_credential(backend, {})


# -- S3 delete refusals ------------------------------------------------------------------------


class _DeleteClient:
    """A stand-in client: DeleteObjects answers with per-key errors, as S3 does under a lock."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        self.requests: list[list[str]] = []

    def delete_objects(self, Bucket: str, Delete: dict[str, Any]) -> dict[str, Any]:
        self.requests.append([o["Key"] for o in Delete["Objects"]])
        return {"Errors": self.errors}


def test_s3_delete_maps_per_key_refusals_and_ignores_missing_keys() -> None:
    client = _DeleteClient(
        [
            {
                "Key": "p/a",
                "Code": "AccessDenied",
                "Message": "Access Denied because object protected by object lock.",
            },
            {"Key": "p/b", "Code": "NoSuchKey", "Message": "gone"},
        ]
    )
    st = S3Storage(client, S3Backend(bucket="b", prefix="p"), S3Credentials(True, "i", "s"))
    with pytest.raises(DeleteRefusedError) as info:
        st.delete(["a", "b", "a"])
    assert client.requests == [["p/a", "p/b"]]
    assert info.value.detail == "a"
    assert "s3://b/p refused to delete 1 object" in info.value.message


# -- stream helpers ----------------------------------------------------------------------------


def test_rebuffer_cuts_exact_parts() -> None:
    parts = list(rebuffer([b"ab", b"", b"cdefg", b"h"], 3))
    assert parts == [b"abc", b"def", b"gh"]
    assert list(rebuffer([], 3)) == []


def test_ranged_reader_reads_in_ranges() -> None:
    data = bytes(range(256)) * 40
    calls: list[tuple[int, int]] = []

    def fetch(start: int, length: int) -> bytes:
        calls.append((start, length))
        return data[start : start + length]

    f = buffered(RangedReader(fetch, len(data), block=4096), size=1024)
    assert f.read(10) == data[:10]
    assert f.read() == data[10:]
    assert max(length for _, length in calls) <= 4096
    raw = RangedReader(fetch, len(data))
    raw.seek(100)
    assert raw.read(5) == data[100:105]
    raw.seek(0, io.SEEK_END)
    assert raw.read(5) == b""


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:9000", True),
        ("http://127.9.9.9", True),
        ("http://localhost:10000/devstoreaccount1", True),
        ("http://[::1]:9000", True),
        ("http://minio.internal:9000", False),
        ("http://10.0.0.5", False),
    ],
)
def test_is_loopback_url(url: str, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback
