"""The S3-compatible backend (AWS S3, R2, B2, MinIO, ...), on botocore.

Credentials come only from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (/ ``AWS_SESSION_TOKEN``),
unless ``BAKELITE_AWS_USE_DEFAULT_CREDENTIAL_CHAIN=1`` opts into the SDK's chain.  They are passed to
the client explicitly, so botocore never walks its chain and never asks the instance-metadata service
(169.254.169.254) on a host that is not on AWS.

Writes: ``put`` is one PutObject; ``put_stream`` sends a stream that fits in one part as a PutObject
and anything larger as a multipart upload, aborted at source if anything fails.  A completed
multipart upload, like a PutObject, is atomic: readers see the old object or the new one.

Besides the ``Storage`` protocol this class offers the S3-only extras ``ops.reclaim`` and
``ops.s3inspect`` use: multipart listing and abort, version overhead, and the Object Lock probe.
"""

from __future__ import annotations

import builtins
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from bakelite.config.model import S3Backend
from bakelite.errors import (
    BackendError,
    BakeliteError,
    ConfigError,
    NotAvailableError,
    PermanentBackendError,
    TransientBackendError,
)
from bakelite.storage.base import ObjectInfo, validate_prefix
from bakelite.storage.keyspace import PrefixedKeySpace
from bakelite.storage.streams import (
    PART_SIZE,
    BodyReader,
    buffered,
    chain,
    first_and_rest,
    rebuffer,
    warn_if_cleartext,
)

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'bakelite[s3]'"
DEFAULT_CHAIN_VARIABLE = "BAKELITE_AWS_USE_DEFAULT_CREDENTIAL_CHAIN"
# Parts uploaded at once by one put_stream: enough to hide a round trip, bounded in memory.
UPLOAD_CONCURRENCY = 4
# Requests one client keeps open: the daemon's workers and one stream's parts share a client.
MAX_POOL_CONNECTIONS = 16

_AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "AccountProblem",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
        "UnrecognizedClientException",
        "401",
        "403",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "BadDigest",  # the body was damaged on the way: sending it again is the fix
        "InternalError",
        "OperationAborted",
        "RequestTimeout",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
    }
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})


def _sdk() -> Any:
    """botocore's modules, or the install hint."""
    try:
        import botocore.config
        import botocore.exceptions
        import botocore.session
    except ImportError as e:
        raise NotAvailableError(
            "the s3 backend needs boto3, which is not installed", hint=INSTALL_HINT
        ) from e
    return botocore


@dataclass(frozen=True)
class S3Credentials:
    """Where the client's credentials come from; the values never appear in a repr."""

    static: bool
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)


def resolve_credentials(environ: Mapping[str, str], where: str) -> S3Credentials:
    """Static keys from the environment, the opted-in default chain, or "no S3 credentials found"."""
    key_id = environ.get("AWS_ACCESS_KEY_ID", "").strip()
    secret = environ.get("AWS_SECRET_ACCESS_KEY", "").strip()
    token = environ.get("AWS_SESSION_TOKEN", "").strip() or None
    if key_id and secret:
        return S3Credentials(True, key_id, secret, token)
    if environ.get(DEFAULT_CHAIN_VARIABLE, "").strip().lower() in ("1", "true", "yes"):
        return S3Credentials(False)
    missing = " and ".join(
        name for name, v in (("AWS_ACCESS_KEY_ID", key_id), ("AWS_SECRET_ACCESS_KEY", secret)) if not v
    )
    raise ConfigError(
        "no S3 credentials found",
        detail=f"{where}: {missing} not set",
        hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (e.g. in /etc/bakelite/bakelite.env); "
        f"on EC2/ECS/EKS with an instance role set {DEFAULT_CHAIN_VARIABLE}=1",
    )


@dataclass(frozen=True)
class MultipartUpload:
    """An incomplete multipart upload: ``key`` is relative to the backend's prefix."""

    key: str
    upload_id: str
    initiated: float


@dataclass(frozen=True)
class VersionOverhead:
    """What a versioned bucket keeps behind a plain listing, under one prefix."""

    versioning: str  # "Enabled", "Suspended" or "Disabled" (never enabled)
    noncurrent_versions: int
    noncurrent_bytes: int
    delete_markers: int


@dataclass(frozen=True)
class ObjectLockConfig:
    """A bucket's Object Lock state: ``enabled`` and its default retention, if it has one."""

    enabled: bool
    mode: str | None = None
    days: int | None = None
    years: int | None = None

    @property
    def retention(self) -> str | None:
        """The default retention as text (``30 days``, ``1 year``), or ``None``."""
        if self.days:
            return f"{self.days} day{'s' if self.days != 1 else ''}"
        if self.years:
            return f"{self.years} year{'s' if self.years != 1 else ''}"
        return None


class S3Storage(PrefixedKeySpace):
    """Objects in ``bucket`` under ``prefix``; build one with ``from_config``."""

    def __init__(
        self,
        client: Any,
        backend: S3Backend,
        credentials: S3Credentials,
        *,
        part_size: int = PART_SIZE,
        release: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._release = release
        self._botocore = _sdk()
        self.backend = backend
        self.bucket = backend.bucket
        self.prefix = backend.prefix.strip("/")
        self.credentials = credentials
        self.part_size = part_size
        self._secrets = tuple(
            s
            for s in (credentials.access_key_id, credentials.secret_access_key, credentials.session_token)
            if s
        )

    @classmethod
    def from_config(cls, backend: S3Backend, environ: Mapping[str, str] | None = None) -> S3Storage:
        """A client for ``backend`` with credentials from ``environ`` (default ``os.environ``)."""
        env = os.environ if environ is None else environ
        botocore = _sdk()
        where = backend.describe()
        creds = resolve_credentials(env, where)
        warn_if_cleartext(backend.endpoint, f"S3 backend {where}")
        region = backend.region or env.get("AWS_DEFAULT_REGION") or "us-east-1"
        timeout = backend.request_timeout or 60.0
        retries = backend.max_retries if backend.max_retries is not None else 2
        config = botocore.config.Config(
            region_name=region,
            signature_version="s3v4",
            s3={"addressing_style": "path" if backend.path_style else "virtual"},
            retries={"total_max_attempts": retries + 1, "mode": "standard"},
            connect_timeout=min(timeout, 10.0),
            read_timeout=timeout,
            max_pool_connections=MAX_POOL_CONNECTIONS,
            # "legacy" keeps botocore from asking the metadata service for a region ("auto" would).
            defaults_mode="legacy",
            # Send a checksum only where the API requires one (or we ask for SHA-256 below):
            # several S3-compatible services reject the CRC32 headers newer botocore adds.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        kwargs: dict[str, Any] = {"config": config, "endpoint_url": backend.endpoint}
        if creds.static:
            kwargs.update(
                aws_access_key_id=creds.access_key_id,
                aws_secret_access_key=creds.secret_access_key,
                aws_session_token=creds.session_token,
            )
        cache_key = (
            backend.endpoint, region, backend.path_style, timeout, retries,
            creds.access_key_id, creds.secret_access_key, creds.session_token,
        )  # fmt: skip
        client = _CLIENTS.acquire(cache_key, kwargs, where)
        return cls(client, backend, creds, release=lambda: _CLIENTS.release(cache_key))

    # -- writes --------------------------------------------------------------------------------

    def put(self, key: str, data: bytes, *, cold: bool = False) -> None:
        """One PutObject (a multipart upload above the part size)."""
        name = self._name(key)
        if len(data) > self.part_size:
            self._multipart(name, iter(rebuffer((data,), self.part_size)), cold)
            return
        self._call("writing", key, self._client.put_object, Key=name, Body=data, **self._put_args(cold))

    def put_stream(self, key: str, chunks: Iterable[bytes], *, cold: bool = False) -> int:
        """A PutObject if it fits in one part, else a multipart upload aborted on any failure."""
        name = self._name(key)
        parts = rebuffer(chunks, self.part_size)
        first, second = first_and_rest(parts)
        if second is None:
            self._call("writing", key, self._client.put_object, Key=name, Body=first, **self._put_args(cold))
            return len(first)
        return self._multipart(name, chain(first, second, parts), cold)

    def _multipart(self, name: str, parts: Iterator[bytes], cold: bool) -> int:
        key = self._rel(name)
        created = self._call(
            "starting a multipart upload of", key, self._client.create_multipart_upload, Key=name,
            **self._put_args(cold),
        )  # fmt: skip
        upload_id: str = created["UploadId"]
        done: list[dict[str, Any]] = []
        size = 0
        try:
            with ThreadPoolExecutor(UPLOAD_CONCURRENCY, thread_name_prefix="s3-part") as pool:
                pending: deque[Future[dict[str, Any]]] = deque()
                try:
                    for number, body in enumerate(parts, start=1):
                        size += len(body)
                        pending.append(pool.submit(self._upload_part, name, upload_id, number, body))
                        # Bound the bytes in memory: wait for the oldest part before reading on.
                        while len(pending) >= UPLOAD_CONCURRENCY:
                            done.append(pending.popleft().result())
                    while pending:
                        done.append(pending.popleft().result())
                finally:
                    for future in pending:
                        future.cancel()
            self._call(
                "completing the multipart upload of", key, self._client.complete_multipart_upload,
                Bucket=self.bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": done},
            )  # fmt: skip
        except BaseException:
            self._abort_quietly(name, upload_id)
            raise
        return size

    def _upload_part(self, name: str, upload_id: str, number: int, body: bytes) -> dict[str, Any]:
        extra = {"ChecksumAlgorithm": "SHA256"} if self.backend.checksum else {}
        resp = self._call(
            "uploading a part of", self._rel(name), self._client.upload_part,
            Bucket=self.bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=body, **extra,
        )  # fmt: skip
        part: dict[str, Any] = {"ETag": resp["ETag"], "PartNumber": number}
        if "ChecksumSHA256" in resp:
            part["ChecksumSHA256"] = resp["ChecksumSHA256"]
        return part

    def _abort_quietly(self, name: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
        except Exception as e:
            # The server may be the thing that failed; the multipart sweep (or `bakelite reclaim`)
            # aborts what is left once it is reachable again.
            logger.warning(
                "could not abort the failed multipart upload of %s on %s (%s); "
                "the multipart sweep or `bakelite reclaim` will remove it",
                name,
                self.describe(),
                self._scrub(str(e)),
                extra={"key": name, "upload_id": upload_id},
            )

    def _put_args(self, cold: bool) -> dict[str, Any]:
        b = self.backend
        args: dict[str, Any] = {"Bucket": self.bucket}
        if b.checksum:
            args["ChecksumAlgorithm"] = "SHA256"
        if b.sse == "aes256":
            args["ServerSideEncryption"] = "AES256"
        elif b.sse == "aws:kms":
            args["ServerSideEncryption"] = "aws:kms"
            if b.sse_kms_key_id:
                args["SSEKMSKeyId"] = b.sse_kms_key_id
        # Hot objects (recent change-sets, CURRENT, the manifest) stay in the bucket default.
        if cold and b.storage_class:
            args["StorageClass"] = b.storage_class
        return args

    def delete(self, keys: Iterable[str]) -> None:
        """DeleteObjects in batches of 1000; deletes a lock refuses raise ``DeleteRefusedError``."""
        names = [self._name(k) for k in keys]
        refused: builtins.list[str] = []
        for i in range(0, len(names), 1000):
            batch = [{"Key": n} for n in dict.fromkeys(names[i : i + 1000])]
            try:
                resp = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            except Exception as e:
                if _code(e) != "AccessDenied":
                    raise self._translate(e, "deleting", self._rel(batch[0]["Key"])) from e
                # The whole request refused (a policy withholding s3:DeleteObject): the same
                # outcome for pruning as a lock refusing each key.
                refused.extend(self._rel(b["Key"]) for b in batch)
                continue
            for err in resp.get("Errors", []):
                code = err.get("Code", "")
                if code in _NOT_FOUND_CODES:
                    continue
                if code == "AccessDenied" or "lock" in code.lower() or "retention" in code.lower():
                    refused.append(self._rel(err.get("Key", "")))
                    continue
                raise BackendError(
                    f"deleting {self._rel(err.get('Key', ''))} on {self.describe()} failed",
                    detail=self._scrub(f"{code}: {err.get('Message', '')}"),
                )
        if refused:
            raise self._refused(refused, "an Object Lock retention or a bucket policy")

    # -- reads ---------------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        """The whole object."""
        resp = self._call("reading", key, self._client.get_object, Bucket=self.bucket, Key=self._name(key))
        body = resp["Body"]
        try:
            data: bytes = body.read()
        except Exception as e:
            raise self._translate(e, "reading", key) from e
        finally:
            body.close()
        return data

    def open(self, key: str) -> BinaryIO:
        """One streaming GetObject, behind a read buffer."""
        resp = self._call("opening", key, self._client.get_object, Bucket=self.bucket, Key=self._name(key))
        body = resp["Body"]
        raw = BodyReader(body.read, body.close, lambda e: self._translate(e, "reading", key))
        return buffered(raw)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """A ranged GetObject; a range past the end (S3's 416) is ``b""``."""
        if start < 0 or length < 0:
            raise ValueError(f"invalid range start={start} length={length}")
        if length == 0:
            if self.stat(key) is None:
                raise self._not_found(key)
            return b""
        try:
            resp = self._client.get_object(
                Bucket=self.bucket, Key=self._name(key), Range=f"bytes={start}-{start + length - 1}"
            )
            body = resp["Body"]
            try:
                data: bytes = body.read()
            finally:
                body.close()
        except Exception as e:
            if _code(e) == "InvalidRange":
                return b""  # 416: the range starts at or past the end of an existing object
            raise self._translate(e, "reading", key) from e
        return data

    def stat(self, key: str) -> ObjectInfo | None:
        """HeadObject: size and mtime, or ``None``."""
        try:
            resp = self._client.head_object(Bucket=self.bucket, Key=self._name(key))
        except Exception as e:
            if _code(e) in _NOT_FOUND_CODES:
                return None
            raise self._translate(e, "inspecting", key) from e
        return ObjectInfo(key=key, size=int(resp["ContentLength"]), mtime=resp["LastModified"].timestamp())

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """ListObjectsV2 pages; S3 returns keys in byte order, which is ``sorted`` for our ASCII keys."""
        validate_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        pages = iter(paginator.paginate(Bucket=self.bucket, Prefix=self._full(prefix)))
        while True:
            try:
                page = next(pages)
            except StopIteration:
                return
            except Exception as e:
                raise self._translate(e, "listing", prefix or "/") from e
            for obj in page.get("Contents", []):
                yield ObjectInfo(
                    key=self._rel(obj["Key"]), size=int(obj["Size"]), mtime=obj["LastModified"].timestamp()
                )

    # -- S3-only extras ------------------------------------------------------------------------

    def list_multipart_uploads(self, prefix: str = "") -> builtins.list[MultipartUpload]:
        """Incomplete multipart uploads under ``prefix`` (ListMultipartUploads)."""
        validate_prefix(prefix)
        out: builtins.list[MultipartUpload] = []
        paginator = self._client.get_paginator("list_multipart_uploads")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._full(prefix)):
                for up in page.get("Uploads", []):
                    out.append(
                        MultipartUpload(
                            key=self._rel(up["Key"]),
                            upload_id=up["UploadId"],
                            initiated=up["Initiated"].timestamp(),
                        )
                    )
        except Exception as e:
            raise self._translate(e, "listing multipart uploads under", prefix or "/") from e
        return out

    def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        """AbortMultipartUpload; an upload already gone is not an error."""
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=self._name(key), UploadId=upload_id)
        except Exception as e:
            if _code(e) in ("NoSuchUpload", *_NOT_FOUND_CODES):
                return
            raise self._translate(e, "aborting the multipart upload of", key) from e

    def multipart_upload_size(self, upload: MultipartUpload) -> int:
        """Bytes stored so far by the parts of ``upload`` (ListParts)."""
        total = 0
        paginator = self._client.get_paginator("list_parts")
        try:
            pages = paginator.paginate(
                Bucket=self.bucket, Key=self._name(upload.key), UploadId=upload.upload_id
            )
            for page in pages:
                total += sum(int(p.get("Size", 0)) for p in page.get("Parts", []))
        except Exception as e:
            if _code(e) == "NoSuchUpload":
                return 0  # finished or aborted since it was listed
            raise self._translate(e, "listing the parts of", upload.key) from e
        return total

    def version_overhead(self, prefix: str = "") -> VersionOverhead:
        """Noncurrent versions and delete markers under ``prefix`` (ListObjectVersions)."""
        validate_prefix(prefix)
        try:
            status = self._client.get_bucket_versioning(Bucket=self.bucket).get("Status") or "Disabled"
            count = size = markers = 0
            if status != "Disabled":
                paginator = self._client.get_paginator("list_object_versions")
                for page in paginator.paginate(Bucket=self.bucket, Prefix=self._full(prefix)):
                    for v in page.get("Versions", []):
                        if not v.get("IsLatest"):
                            count += 1
                            size += int(v.get("Size", 0))
                    markers += len(page.get("DeleteMarkers", []))
        except Exception as e:
            raise self._translate(e, "listing object versions under", prefix or "/") from e
        return VersionOverhead(status, count, size, markers)

    def object_lock(self) -> ObjectLockConfig:
        """The bucket's Object Lock configuration (GetObjectLockConfiguration)."""
        try:
            resp = self._client.get_object_lock_configuration(Bucket=self.bucket)
        except Exception as e:
            if _code(e) == "ObjectLockConfigurationNotFoundError":
                return ObjectLockConfig(enabled=False)
            raise self._translate(e, "reading the Object Lock configuration of", "/") from e
        conf = resp.get("ObjectLockConfiguration", {})
        retention = conf.get("Rule", {}).get("DefaultRetention", {})
        return ObjectLockConfig(
            enabled=conf.get("ObjectLockEnabled") == "Enabled",
            mode=retention.get("Mode"),
            days=retention.get("Days"),
            years=retention.get("Years"),
        )

    # -- misc ----------------------------------------------------------------------------------

    def describe(self) -> str:
        """``s3://bucket/prefix`` (no endpoint credentials, no keys)."""
        return self.backend.describe()

    def close(self) -> None:
        """Give the (shared) client back; the last user closes its connection pool."""
        release, self._release = self._release, None
        if release is not None:
            release()

    def _full(self, prefix: str) -> str:
        return f"{self.prefix}/{prefix}" if self.prefix else prefix

    def _scrub(self, text: str) -> str:
        """``text`` with any credential value replaced: a server may echo the key id back."""
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text

    def _translate(self, e: Exception, action: str, key: str) -> BakeliteError:
        """A botocore error as the backend error family, with the bucket named and no secret."""
        exc = self._botocore.exceptions
        where = self.describe()
        if isinstance(e, BakeliteError):
            return e
        if isinstance(e, exc.NoCredentialsError | exc.PartialCredentialsError):
            return ConfigError(
                "no S3 credentials found",
                detail=where,
                hint=f"set AWS_ACCESS_KEY_ID, or {DEFAULT_CHAIN_VARIABLE}=1",
            )
        if isinstance(e, exc.ClientError):
            code = _code(e) or "?"
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            message = self._scrub(str(e.response.get("Error", {}).get("Message") or code))
            detail = f"{code}: {message} ({action} {key})"
            if code in _NOT_FOUND_CODES:
                return self._not_found(key)
            if code == "NoSuchBucket":
                return PermanentBackendError(
                    f"bucket {self.bucket!r} does not exist ({where})",
                    detail=detail,
                    hint="create the bucket, or check bucket, endpoint and region",
                )
            if code in _AUTH_CODES or status in (401, 403):
                return PermanentBackendError(
                    f"access denied by {where}",
                    detail=detail,
                    hint="check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and that the IAM policy "
                    "grants what docs/backends.md lists",
                )
            if code in _TRANSIENT_CODES or status >= 500 or status == 429:
                return TransientBackendError(f"{where} failed {action} {key}", detail=detail)
            return PermanentBackendError(f"{where} rejected {action} {key}", detail=detail)
        if isinstance(e, exc.ParamValidationError):
            return BackendError(f"invalid S3 request {action} {key}", detail=str(e))
        if isinstance(e, exc.BotoCoreError | OSError):
            # Connection refused/reset, timeouts, a response cut short: the network, not the request.
            return TransientBackendError(
                f"{where} unreachable {action} {key}", detail=self._scrub(f"{type(e).__name__}: {e}")
            )
        urllib3_error = _urllib3_error()
        if urllib3_error is not None and isinstance(e, urllib3_error):
            return TransientBackendError(
                f"{where} connection failed {action} {key}", detail=f"{type(e).__name__}: {e}"
            )
        return BackendError(f"{where} failed {action} {key}", detail=self._scrub(f"{type(e).__name__}: {e}"))


class _ClientCache:
    """botocore clients shared by every storage with the same settings.

    Building a client costs about 0.2 s in a fresh botocore session and 20 ms in a warm one; a
    daemon opening thousands of databases on one bucket needs just one client (they are
    thread-safe), counted by reference so the last ``close`` closes it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._session: Any = None
        self._clients: dict[tuple[Any, ...], list[Any]] = {}

    def acquire(self, key: tuple[Any, ...], kwargs: dict[str, Any], where: str) -> Any:
        """The client for ``key``, made with ``kwargs`` the first time."""
        botocore = _sdk()
        with self._lock:
            entry = self._clients.get(key)
            if entry is not None:
                entry[1] += 1
                return entry[0]
            if self._session is None:
                self._session = botocore.session.Session()
            if "aws_access_key_id" not in kwargs and self._session.get_credentials() is None:
                # The opted-in chain found nothing: say so now, not at the first request.
                raise ConfigError(
                    "no S3 credentials found",
                    detail=f"{where}: the AWS default credential chain found none",
                    hint="attach an instance/task role, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                )
            client = self._session.create_client("s3", **kwargs)
            self._clients[key] = [client, 1]
            return client

    def release(self, key: tuple[Any, ...]) -> None:
        """Drop one reference; close the client with the last one."""
        with self._lock:
            entry = self._clients.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del self._clients[key]
        entry[0].close()


_CLIENTS = _ClientCache()


def _code(e: BaseException) -> str | None:
    response = getattr(e, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code is not None else None


def _urllib3_error() -> type[Exception] | None:
    try:
        import urllib3.exceptions
    except ImportError:
        return None
    return urllib3.exceptions.HTTPError


def age(upload: MultipartUpload, now: float | None = None) -> float:
    """Seconds since ``upload`` was initiated."""
    return (time.time() if now is None else now) - upload.initiated
