"""What each object-store backend must do beyond the shared contract, against its real server.

S3 extras (checksums, SSE, storage classes, Object Lock, versions, multipart sweep), permanent
errors that name the backend and never a secret, SFTP host keys and dropped connections, and
failed streams that leave nothing behind on GCS and Azure.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bakelite.config.model import AzureBackend, Database, GCSBackend, S3Backend, SFTPBackend
from bakelite.errors import (
    BakeliteError,
    ConfigError,
    DeleteRefusedError,
    ObjectNotFound,
    PermanentBackendError,
    TransientBackendError,
)
from bakelite.ops import reclaim, s3inspect
from bakelite.storage.azure import AzureStorage
from bakelite.storage.gcs import GCSStorage
from bakelite.storage.memory import MemoryStorage
from bakelite.storage.registry import PrefixedStorage
from bakelite.storage.retry import Restartable, RetryingStorage
from bakelite.storage.s3 import S3Credentials, S3Storage
from bakelite.storage.sftp import SFTPStorage
from servers import (
    AZURITE_ACCOUNT,
    AzureServer,
    GCSServer,
    S3AuthServer,
    S3Server,
    SSHServer,
    azure_server,
    gcs_server,
    s3_auth_server,
    s3_server,
    sftp_server,
)

__all__ = ["azure_server", "gcs_server", "s3_auth_server", "s3_server", "sftp_server"]

MIB = 1024 * 1024


class Boom(Exception):
    """A chunk source failing mid-stream."""


def failing_after(parts: int, size: int = 3 * MIB) -> Iterator[bytes]:
    """``parts`` chunks of ``size`` bytes, then a failure."""
    for i in range(parts):
        yield bytes([i]) * size
    raise Boom("source failed")


def s3(server: S3Server, bucket: str | None = None, **options: Any) -> S3Storage:
    backend = S3Backend(
        bucket=bucket or server.new_bucket(), prefix="pfx", endpoint=server.endpoint, **options
    )
    return S3Storage.from_config(backend, environ=server.env())


# -- S3: upload options ------------------------------------------------------------------------


def test_s3_storage_class_applies_to_cold_objects_only(s3_server: S3Server) -> None:
    st = s3(s3_server, storage_class="STANDARD_IA")
    boto = s3_server.client()
    st.put("hot", b"h")
    st.put("cold", b"c", cold=True)
    st.put_stream("cold-big", iter([b"x" * (20 * MIB)]), cold=True)
    st.put_stream("hot-big", iter([b"y" * (20 * MIB)]))

    def cls(key: str) -> str | None:
        return boto.head_object(Bucket=st.bucket, Key=f"pfx/{key}").get("StorageClass")

    assert cls("cold") == "STANDARD_IA"
    assert cls("cold-big") == "STANDARD_IA"
    assert cls("hot") in (None, "STANDARD")
    assert cls("hot-big") in (None, "STANDARD")


@pytest.mark.parametrize(
    ("sse", "key_id", "expected"), [("aes256", None, "AES256"), ("aws:kms", "k-123", "aws:kms")]
)
def test_s3_sse_headers_are_sent(s3_server: S3Server, sse: str, key_id: str | None, expected: str) -> None:
    st = s3(s3_server, sse=sse, sse_kms_key_id=key_id)
    boto = s3_server.client()
    st.put("small", b"s")
    st.put_stream("big", iter([b"b" * (12 * MIB)]))
    for key in ("small", "big"):
        head = boto.head_object(Bucket=st.bucket, Key=f"pfx/{key}")
        assert head["ServerSideEncryption"] == expected
        if key_id:
            assert key_id in head["SSEKMSKeyId"]


def test_s3_checksum_sends_sha256(s3_server: S3Server) -> None:
    import base64
    import hashlib

    st = s3(s3_server, checksum=True)
    st.put("obj", b"payload")
    head = s3_server.client().head_object(Bucket=st.bucket, Key="pfx/obj", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(b"payload").digest()).decode()


def test_s3_failed_multipart_stream_is_aborted_at_source(s3_server: S3Server) -> None:
    st = s3(s3_server)
    with pytest.raises(Boom):
        st.put_stream("snap", failing_after(6))  # 18 MiB: two parts sent before the failure
    assert st.stat("snap") is None
    assert s3_server.client().list_multipart_uploads(Bucket=st.bucket).get("Uploads", []) == []


def test_s3_http_endpoint_off_loopback_warns(caplog: pytest.LogCaptureFixture) -> None:
    backend = S3Backend(bucket="b", endpoint="http://backup.example.com:9000")
    env = {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}
    with caplog.at_level("WARNING"):
        S3Storage.from_config(backend, environ=env).close()  # builds a client; sends nothing
    assert "uses http:// (no TLS)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        S3Storage.from_config(S3Backend(bucket="b", endpoint="http://127.0.0.1:9"), environ=env).close()
    assert "http://" not in caplog.text


# -- S3: permanent errors ----------------------------------------------------------------------


def test_s3_missing_bucket_is_permanent_and_names_it(s3_server: S3Server) -> None:
    st = s3(s3_server, bucket="never-created")
    for op in (lambda: st.put("k", b"x"), lambda: list(st.list()), lambda: st.get("k")):
        with pytest.raises(PermanentBackendError) as info:
            op()
        assert "s3://never-created/pfx" in info.value.one_line()
        assert "does not exist" in info.value.message


def test_s3_bad_credentials_are_permanent_and_never_echoed(s3_auth_server: S3AuthServer) -> None:
    bucket = "auth-bucket-1"
    s3_auth_server.client().create_bucket(Bucket=bucket)
    good = s3_auth_server.users["writer"]
    for env in (
        {**good, "AWS_SECRET_ACCESS_KEY": "not-the-secret-0123456789"},
        {"AWS_ACCESS_KEY_ID": "AKIAUNKNOWN000000000", "AWS_SECRET_ACCESS_KEY": "not-the-secret-0123456789"},
    ):
        backend = S3Backend(bucket=bucket, prefix="p", endpoint=s3_auth_server.endpoint)
        st = RetryingStorage(S3Storage.from_config(backend, environ=env), sleep=lambda _: None)
        with pytest.raises(PermanentBackendError) as info:
            st.put("k", b"x")  # not retried: permanent errors surface on the first attempt
        text = info.value.one_line()
        assert "access denied by s3://auth-bucket-1/p" in text
        assert env["AWS_SECRET_ACCESS_KEY"] not in text
        assert env["AWS_ACCESS_KEY_ID"] not in text


def test_s3_delete_refused_by_policy_raises_delete_refused(s3_auth_server: S3AuthServer) -> None:
    bucket = "auth-bucket-2"
    s3_auth_server.client().create_bucket(Bucket=bucket)
    backend = S3Backend(bucket=bucket, endpoint=s3_auth_server.endpoint)
    st = S3Storage.from_config(backend, environ=s3_auth_server.users["nodelete"])
    st.put("a/1", b"x")
    with pytest.raises(DeleteRefusedError) as info:
        st.delete(["a/1"])
    assert "refused to delete 1 object" in info.value.message
    assert st.get("a/1") == b"x"


def test_s3_no_credentials_fails_before_any_request() -> None:
    backend = S3Backend(bucket="b", endpoint="http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="no S3 credentials found"):
        S3Storage.from_config(backend, environ={})


# -- S3: Object Lock, versions, multipart sweep -----------------------------------------------


def test_s3_object_lock_probe_and_deletes_on_a_locked_bucket(s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket(lock_days=1)
    st = s3(s3_server, bucket=bucket, checksum=True)
    st.put("k/1", b"locked data")
    st.put_stream("k/big", iter([b"z" * (12 * MIB)]))  # multipart, with a checksum on every part

    check = s3inspect.check_object_lock(RetryingStorage(st))
    assert (check.status, check.mode, check.retention) == ("ok", "COMPLIANCE", "1 day")

    # A delete never removes locked data: on S3 it leaves a delete marker over the retained version.
    st.delete(["k/1"])
    boto = s3_server.client()
    versions = boto.list_object_versions(Bucket=bucket, Prefix="pfx/k/1")
    kept = [v for v in versions.get("Versions", []) if v["Key"] == "pfx/k/1"]
    assert len(kept) == 1 and len(versions.get("DeleteMarkers", [])) == 1
    # ... and the version itself cannot be deleted (bakelite never tries; the lock is real).
    with pytest.raises(Exception, match="AccessDenied"):
        boto.delete_object(Bucket=bucket, Key="pfx/k/1", VersionId=kept[0]["VersionId"])

    db = Database(name="app", path=Path("/x.db"), retention=86400.0)
    advice = s3inspect.object_lock_advice(db, st.backend, check)
    assert any("retention" in a for a in advice) and any("compaction" in a for a in advice)


def test_s3_object_lock_probe_on_plain_bucket_fails_and_elsewhere_warns(s3_server: S3Server) -> None:
    assert s3inspect.check_object_lock(s3(s3_server)).status == "fail"
    assert s3inspect.check_object_lock(MemoryStorage()).status == "warn"
    # Credentials from an instance role (not static): the probe cannot vouch for the bucket.
    backend = S3Backend(bucket=s3_server.new_bucket(lock_days=1), endpoint=s3_server.endpoint)
    chain = S3Storage(s3_server.client(), backend, S3Credentials(static=False))
    check = s3inspect.check_object_lock(chain)
    assert check.status == "warn" and "no static AWS credentials" in check.message
    assert not s3inspect.overhead(chain).inspected


def test_s3_versioned_bucket_overhead_is_reported(s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket(versioned=True)
    st = PrefixedStorage(s3(s3_server, bucket=bucket), "app")
    st.put("manifest", b"v1-" * 100)  # 300 bytes, soon noncurrent
    st.put("manifest", b"v2")
    st.put("old", b"o" * 50)
    st.delete(["old"])  # a delete marker over 50 noncurrent bytes
    boto = s3_server.client()
    up = boto.create_multipart_upload(Bucket=bucket, Key="pfx/app/orphan")
    boto.upload_part(
        Bucket=bucket, Key="pfx/app/orphan", UploadId=up["UploadId"], PartNumber=1, Body=b"p" * 1000
    )

    report = s3inspect.overhead(st)
    assert report.inspected and report.versioning == "Enabled"
    assert (report.noncurrent_versions, report.noncurrent_bytes, report.delete_markers) == (2, 350, 1)
    assert (report.incomplete_uploads, report.incomplete_upload_bytes) == (1, 1000)
    assert report.hidden_bytes == 1350

    assert not s3inspect.overhead(MemoryStorage()).inspected


def test_multipart_sweep_respects_min_age_and_dry_run(s3_server: S3Server) -> None:
    st = s3(s3_server)
    boto = s3_server.client()
    for key in ("pfx/app/a/snapshot", "pfx/app/b/snapshot", "pfx/other/c/snapshot"):
        boto.create_multipart_upload(Bucket=st.bucket, Key=key)
    uploads = st.list_multipart_uploads("app/")
    assert len(uploads) == 2
    # moto reports one fixed Initiated time for every upload: drive the clock from it.
    started = uploads[0].initiated
    storage = RetryingStorage(st)

    young = reclaim.sweep(storage, 3600, prefix="app/", now=started + 60)
    assert [u.outcome for u in young.uploads] == ["too young", "too young"]
    dry = reclaim.sweep(storage, 3600, prefix="app/", dry_run=True, now=started + 7200)
    assert [u.outcome for u in dry.uploads] == ["would abort", "would abort"]
    assert len(st.list_multipart_uploads()) == 3

    done = reclaim.sweep(storage, 3600, prefix="app/", now=started + 7200)
    assert sorted(u.key for u in done.uploads) == ["app/a/snapshot", "app/b/snapshot"]
    assert [u.outcome for u in done.uploads] == ["aborted", "aborted"]
    assert [u.key for u in st.list_multipart_uploads()] == ["other/c/snapshot"]  # other prefixes untouched


def test_reclaim_cli(s3_server: S3Server, tmp_path: Path) -> None:
    import json
    import os
    import sys

    bucket = s3_server.new_bucket()
    s3_server.client().create_multipart_upload(Bucket=bucket, Key="bk/app/x/snapshot")
    config = tmp_path / "bakelite.toml"
    config.write_text(
        f"[[backends]]\n{s3_server.backend_toml(bucket)}\n"
        f'[[database]]\nname = "app"\npath = "{tmp_path}/app.db"\n'
        f'[[database]]\nname = "local"\npath = "{tmp_path}/l.db"\n'
        f'[[database.backends]]\ntype = "file"\npath = "{tmp_path}/b"\n'
    )
    env = dict(os.environ, BAKELITE_ENV_FILE=os.devnull, **s3_server.env())

    def cli(*args: str, environ: dict[str, str] = env) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "bakelite", "reclaim", "--config", str(config), *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=environ, timeout=60)

    r = cli("--db", "local")
    assert r.returncode == 0 and "not inspected: not an S3 backend" in r.stdout
    r = cli("--db", "app", "--dry-run", "--min-age", "0s", "--json")
    assert r.returncode == 0, r.stderr
    [report] = json.loads(r.stdout)["reports"]
    assert [u["outcome"] for u in report["uploads"]] == ["would abort"]
    r = cli("--db", "app", "--min-age", "0s")
    assert r.returncode == 0 and "1 aborted" in r.stdout, r.stderr
    assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []

    chain_env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    chain_env["BAKELITE_AWS_USE_DEFAULT_CREDENTIAL_CHAIN"] = "1"
    chain_env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "creds")
    (tmp_path / "creds").write_text("[default]\naws_access_key_id = a\naws_secret_access_key = b\n")
    r = cli("--db", "app", environ=chain_env)
    assert r.returncode == 0 and "no static AWS credentials" in r.stdout, r.stderr


# -- GCS and Azure -----------------------------------------------------------------------------


def gcs(server: GCSServer, bucket: str | None = None, **options: Any) -> GCSStorage:
    backend = GCSBackend(
        bucket=bucket or server.new_bucket(), prefix="pfx", endpoint=server.endpoint, **options
    )
    return GCSStorage.from_config(backend, environ={})


def azure(
    server: AzureServer, container: str | None = None, env: dict[str, str] | None = None, **options: Any
) -> AzureStorage:
    backend = AzureBackend(
        account=AZURITE_ACCOUNT, container=container or server.new_container(), prefix="pfx",
        endpoint=server.endpoint, **options,
    )  # fmt: skip
    return AzureStorage.from_config(backend, environ=server.env() if env is None else env)


def test_gcs_failed_stream_leaves_nothing_and_cold_class(gcs_server: GCSServer) -> None:
    st = gcs(gcs_server, storage_class="NEARLINE")
    st.put("k", b"old")
    with pytest.raises(Boom):
        st.put_stream("k", failing_after(6))  # beyond one part: a resumable upload, then cancelled
    assert st.get("k") == b"old"
    with pytest.raises(Boom):
        st.put_stream("fresh", failing_after(6))
    assert st.stat("fresh") is None
    st.put("cold", b"c", cold=True)
    st.put("hot", b"h")
    bucket = gcs_server.client().bucket(st.backend.bucket)
    assert bucket.get_blob("pfx/cold").storage_class == "NEARLINE"
    assert bucket.get_blob("pfx/hot").storage_class != "NEARLINE"


def test_gcs_missing_bucket_is_permanent(gcs_server: GCSServer) -> None:
    st = gcs(gcs_server, bucket="never-created-gcs")
    with pytest.raises(PermanentBackendError, match="gs://never-created-gcs/pfx"):
        st.put("k", b"x")


def test_azure_failed_stream_leaves_nothing_and_cold_tier(azure_server: AzureServer) -> None:
    st = azure(azure_server, storage_class="Cool")
    st.put("k", b"old")
    with pytest.raises(Boom):
        st.put_stream("k", failing_after(6))
    assert st.get("k") == b"old"
    with pytest.raises(Boom):
        st.put_stream("fresh", failing_after(6))
    assert st.stat("fresh") is None
    st.put("cold", b"c", cold=True)
    st.put_stream("cold-big", iter([b"c" * (12 * MIB)]), cold=True)
    st.put("hot", b"h")
    container = azure_server.service().get_container_client(st.backend.container)
    assert container.get_blob_client("pfx/cold").get_blob_properties().blob_tier == "Cool"
    assert container.get_blob_client("pfx/cold-big").get_blob_properties().blob_tier == "Cool"
    assert container.get_blob_client("pfx/hot").get_blob_properties().blob_tier != "Cool"


def test_azure_missing_container_and_bad_key_are_permanent(azure_server: AzureServer) -> None:
    st = azure(azure_server, container="never-created-ctr")
    with pytest.raises(PermanentBackendError, match="does not exist"):
        st.put("k", b"x")
    import base64

    wrong = base64.b64encode(b"w" * 64).decode()
    bad = azure(azure_server, env={"AZURE_STORAGE_ACCOUNT_KEY": wrong})
    with pytest.raises(PermanentBackendError) as info:
        bad.put("k", b"x")
    assert "access denied by azure://devstoreaccount1/" in info.value.one_line()
    assert wrong not in info.value.one_line()


def test_azure_without_credentials() -> None:
    backend = AzureBackend(account="acct", container="c")
    with pytest.raises(ConfigError, match="no Azure credentials found"):
        AzureStorage.from_config(backend, environ={})


# -- SFTP --------------------------------------------------------------------------------------


def sftp(server: SSHServer, env: dict[str, str] | None = None, **options: Any) -> SFTPStorage:
    fields: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": server.port,
        "user": server.user,
        "path": str(server.new_dir()),
        "identity_file": server.client_key,
        "known_hosts": server.known_hosts,
        "connect_timeout": 10.0,
        "request_timeout": 10.0,
    }
    fields.update(options)
    return SFTPStorage.from_config(SFTPBackend(**fields), environ=env or {})


def test_sftp_wrong_host_key_is_a_clear_permanent_error(sftp_server: SSHServer, tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    kind, blob = (tmp_path / "other.pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sftp_server.port} {kind} {blob}\n")
    st = RetryingStorage(sftp(sftp_server, known_hosts=wrong), sleep=lambda _: None)
    with pytest.raises(PermanentBackendError) as info:
        st.put("k", b"x")
    assert "does not match known_hosts" in info.value.message
    assert "ssh-keygen -R" in (info.value.hint or "")

    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(PermanentBackendError, match="not in known_hosts"):
        sftp(sftp_server, known_hosts=empty).put("k", b"x")

    trusting = sftp(sftp_server, known_hosts=wrong, insecure_skip_host_key_check=True)
    trusting.put("k", b"x")
    assert trusting.get("k") == b"x"


def test_sftp_dropped_connection_mid_upload_then_reconnects(sftp_server: SSHServer) -> None:
    st = sftp(sftp_server)
    st.put("before", b"b")
    # An idle pooled connection the server dropped: the next read reconnects without an error.
    assert sftp_server.drop_connections() >= 1
    info = st.stat("before")
    assert info is not None and info.size == 1

    def dropping() -> Iterator[bytes]:
        yield b"a" * MIB
        assert sftp_server.drop_connections() >= 1
        for _ in range(8):
            yield b"a" * MIB

    with pytest.raises(TransientBackendError):
        st.put_stream("big", dropping())
    # The next call reconnects; the failed upload left no object and no listed temp file.
    assert [i.key for i in st.list()] == ["before"]
    with pytest.raises(ObjectNotFound):
        st.get("big")

    # Through the retry wrapper, a drop costs one attempt and the upload restarts.
    attempts = []

    def source() -> Iterator[bytes]:
        attempts.append(1)
        yield b"c" * MIB
        if len(attempts) == 1:
            sftp_server.drop_connections()
        yield b"c" * MIB

    RetryingStorage(st, sleep=lambda _: None).put_stream("big", Restartable(source))
    assert st.get("big") == b"c" * (2 * MIB)
    assert len(attempts) == 2


def test_sftp_encrypted_key_passphrase_from_env(sftp_server: SSHServer, tmp_path: Path) -> None:
    key = tmp_path / "enc"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "s3cret-pass", "-f", str(key)], check=True)
    authorized = sftp_server.client_key.parent / "authorized_keys"
    authorized.write_text(authorized.read_text() + (tmp_path / "enc.pub").read_text())

    st = sftp(sftp_server, env={"BAKELITE_SFTP_KEY_PASSPHRASE": "s3cret-pass"}, identity_file=key)
    st.put("k", b"x")
    own = sftp(sftp_server, env={"MY_PASS": "s3cret-pass"}, identity_file=key, passphrase_env="MY_PASS")
    own.put("k", b"y")
    with pytest.raises(ConfigError, match="encrypted and no passphrase"):
        sftp(sftp_server, identity_file=key).put("k", b"z")
    with pytest.raises(ConfigError, match="MY_PASS"):
        sftp(sftp_server, identity_file=key, passphrase_env="MY_PASS").put("k", b"z")


def test_sftp_password_precedence() -> None:
    def password(env: dict[str, str], **options: Any) -> str | None:
        st = SFTPStorage(SFTPBackend(host="h", **options), environ=env)
        return st._password()

    assert password({"BAKELITE_SFTP_PASSWORD": "fallback"}, password="inline") == "fallback"
    assert password({}, password="inline") == "inline"
    both = {"BAKELITE_SFTP_PASSWORD": "fallback", "MINE": "named"}
    assert password(both, password_env="MINE") == "named"
    with pytest.raises(BakeliteError, match="MINE"):
        SFTPStorage.from_config(SFTPBackend(host="h", password_env="MINE"), environ={})
