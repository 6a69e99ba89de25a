"""The Google Cloud Storage backend, on google-cloud-storage (the JSON API).

Credentials, first found wins: ``service_account_path``, ``GOOGLE_SERVICE_ACCOUNT`` (a key file),
``GOOGLE_SERVICE_ACCOUNT_KEY`` (the key JSON itself), ``GOOGLE_APPLICATION_CREDENTIALS``, the gcloud
Application Default Credentials file, and only then the metadata server, and only on a machine
whose firmware says it is a Google Compute Engine VM: off GCP nothing probes 169.254.169.254.

Uploads are atomic on GCS: a one-shot upload for small objects, a resumable upload for streams,
cancelled (never finalised with partial data) if anything fails.
"""

from __future__ import annotations

import builtins
import importlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from bakelite.config.model import GCSBackend
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
from bakelite.storage.streams import PART_SIZE, RangedReader, buffered, first_and_rest, rebuffer

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'bakelite[gcs]'"
SCOPES = ("https://www.googleapis.com/auth/devstorage.read_write",)
# Where the firmware names the machine's maker: "Google Compute Engine" on a GCE VM.
_DMI_PRODUCT = Path("/sys/class/dmi/id/product_name")


def _sdk() -> Any:
    """The google.cloud.storage module, or the install hint."""
    try:
        storage = importlib.import_module("google.cloud.storage")
    except ImportError as e:
        raise NotAvailableError(
            "the gcs backend needs google-cloud-storage, which is not installed", hint=INSTALL_HINT
        ) from e
    return storage


def on_gce() -> bool:
    """Whether this is a Google Compute Engine VM, judged without any network request."""
    try:
        return _DMI_PRODUCT.read_text().strip().startswith("Google")
    except OSError:
        return False


def resolve_credentials(backend: GCSBackend, environ: Mapping[str, str]) -> Any:
    """Google credentials for ``backend``, or ConfigError "no GCS credentials found"."""
    _sdk()
    import google.auth as google_auth
    import google.auth.credentials as google_credentials
    import google.oauth2.service_account as google_service_account

    # google-auth is only partly typed: use it through Any.
    auth: Any = google_auth
    credentials: Any = google_credentials
    service_account: Any = google_service_account

    try:
        if backend.endpoint:
            # Test-only emulator: it accepts anything, and a real token must never be sent there.
            return credentials.AnonymousCredentials()
        if backend.service_account_path:
            return service_account.Credentials.from_service_account_file(
                str(backend.service_account_path), scopes=SCOPES
            )
        if path := environ.get("GOOGLE_SERVICE_ACCOUNT", "").strip():
            return service_account.Credentials.from_service_account_file(path, scopes=SCOPES)
        if key := environ.get("GOOGLE_SERVICE_ACCOUNT_KEY", "").strip():
            return service_account.Credentials.from_service_account_info(json.loads(key), scopes=SCOPES)
        adc_env = environ.get("GOOGLE_APPLICATION_CREDENTIALS", "").strip()
        config_dir = environ.get("CLOUDSDK_CONFIG") or os.path.join(
            environ.get("HOME", os.path.expanduser("~")), ".config", "gcloud"
        )
        adc_file = os.path.join(config_dir, "application_default_credentials.json")
        for candidate in (adc_env, adc_file if os.path.exists(adc_file) else ""):
            if candidate:
                creds, _project = auth.load_credentials_from_file(candidate, scopes=SCOPES)
                return creds
    except (OSError, ValueError, auth.exceptions.GoogleAuthError) as e:
        # The message names the file or the JSON problem, never the key material.
        raise ConfigError(
            "could not load GCS credentials",
            detail=f"{backend.describe()}: {type(e).__name__}: {e}",
            hint="check service_account_path / GOOGLE_* point at a valid service-account key",
        ) from e
    if on_gce():
        import google.auth.compute_engine as google_compute_engine

        compute_engine: Any = google_compute_engine
        return compute_engine.Credentials()
    raise ConfigError(
        "no GCS credentials found",
        detail=backend.describe(),
        hint="set service_account_path, or GOOGLE_APPLICATION_CREDENTIALS to a service-account key file",
    )


class GCSStorage(PrefixedKeySpace):
    """Objects in a GCS bucket under ``prefix``; build one with ``from_config``."""

    def __init__(self, client: Any, backend: GCSBackend, *, part_size: int = PART_SIZE) -> None:
        self._client = client
        self.backend = backend
        self.prefix = backend.prefix.strip("/")
        self._bucket = client.bucket(backend.bucket)
        # Resumable uploads need a multiple of 256 KiB per request.
        self.part_size = max(256 * 1024, part_size // (256 * 1024) * (256 * 1024))
        timeout = backend.request_timeout or 60.0
        self._timeout = (min(timeout, 10.0), timeout)
        from google.api_core import exceptions as api_exceptions

        self._api = api_exceptions

    @classmethod
    def from_config(cls, backend: GCSBackend, environ: Mapping[str, str] | None = None) -> GCSStorage:
        """A client for ``backend`` with credentials from ``environ`` (default ``os.environ``)."""
        storage = _sdk()
        env = os.environ if environ is None else environ
        creds = resolve_credentials(backend, env)
        options = {"api_endpoint": backend.endpoint} if backend.endpoint else None
        # An explicit project: without one the client would look it up, possibly on the metadata
        # server.  Object operations never use it.
        project = getattr(creds, "project_id", None) or "bakelite"
        client = storage.Client(project=project, credentials=creds, client_options=options)
        return cls(client, backend)

    # -- writes --------------------------------------------------------------------------------

    def put(self, key: str, data: bytes, *, cold: bool = False) -> None:
        """One upload request (resumable above the part size)."""
        if len(data) > self.part_size:
            self.put_stream(key, (data,), cold=cold)
            return
        blob = self._blob(key, cold)
        self._call("writing", key, blob.upload_from_string, data, timeout=self._timeout)

    def put_stream(self, key: str, chunks: Iterable[bytes], *, cold: bool = False) -> int:
        """One request if it fits in a part, else a resumable upload cancelled on failure."""
        blob = self._blob(key, cold)
        parts = rebuffer(chunks, self.part_size)
        first, second = first_and_rest(parts)
        if second is None:
            self._call("writing", key, blob.upload_from_string, first, timeout=self._timeout)
            return len(first)
        writer = blob.open("wb", chunk_size=self.part_size, ignore_flush=True, timeout=self._timeout)
        size = 0
        try:
            for part in (first, second):
                size += len(part)
                self._call("writing", key, writer.write, part)
            for part in parts:
                size += len(part)
                self._call("writing", key, writer.write, part)
            self._call("writing", key, writer.close)
        except BaseException:
            self._cancel(writer, key)
            raise
        return size

    def _cancel(self, writer: Any, key: str) -> None:
        try:
            writer.terminate()
        except Exception as e:
            logger.warning(
                "could not cancel the failed upload of %s on %s (%s); GCS drops it within a week",
                key,
                self.describe(),
                e,
                extra={"key": key},
            )
        finally:
            # The writer finalises whatever it buffered when closed, and garbage collection closes
            # it: close its buffer so a failed upload can never become a truncated object.
            buffer = getattr(writer, "_buffer", None)
            if buffer is not None and not buffer.closed:
                buffer.close()

    def delete(self, keys: Iterable[str]) -> None:
        """Delete each key; absent ones are fine; a retention policy or hold raises ``DeleteRefusedError``."""
        refused: builtins.list[str] = []
        for key in dict.fromkeys(builtins.list(keys)):
            blob = self._bucket.blob(self._name(key))
            try:
                blob.delete(timeout=self._timeout)
            except self._api.NotFound as e:
                if _bucket_missing(e):
                    raise self._translate(e, "deleting", key) from e
            except self._api.Forbidden as e:
                message = str(getattr(e, "message", "") or e).lower()
                if "retention" not in message and "hold" not in message:
                    raise self._translate(e, "deleting", key) from e
                refused.append(key)
            except Exception as e:
                raise self._translate(e, "deleting", key) from e
        if refused:
            raise self._refused(refused, "a bucket retention policy or an object hold")

    # -- reads ---------------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        """The whole object."""
        blob = self._bucket.blob(self._name(key))
        data: bytes = self._call("reading", key, blob.download_as_bytes, timeout=self._timeout)
        return data

    def open(self, key: str) -> BinaryIO:
        """Ranged reads of the generation current at open time, behind a read buffer."""
        name = self._name(key)
        blob = self._call("opening", key, self._bucket.get_blob, name, timeout=self._timeout)
        if blob is None:
            raise self._not_found(key)
        # Pinning the generation keeps a concurrent overwrite from splicing two objects together.
        pinned = self._bucket.blob(name, generation=blob.generation)

        def fetch(start: int, length: int) -> bytes:
            data: bytes = self._call(
                "reading", key, pinned.download_as_bytes, start=start, end=start + length - 1,
                timeout=self._timeout, checksum=None,
            )  # fmt: skip
            return data

        return buffered(RangedReader(fetch, int(blob.size or 0)))

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """A ranged download; a range past the end (416) is ``b""``."""
        if start < 0 or length < 0:
            raise ValueError(f"invalid range start={start} length={length}")
        if length == 0:
            if self.stat(key) is None:
                raise self._not_found(key)
            return b""
        blob = self._bucket.blob(self._name(key))
        try:
            data: bytes = blob.download_as_bytes(
                start=start, end=start + length - 1, timeout=self._timeout, checksum=None
            )
        except self._api.RequestRangeNotSatisfiable:
            return b""
        except Exception as e:
            raise self._translate(e, "reading", key) from e
        return data

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and mtime, or ``None``."""
        blob = self._call("inspecting", key, self._bucket.get_blob, self._name(key), timeout=self._timeout)
        if blob is None:
            return None
        return ObjectInfo(key=key, size=int(blob.size or 0), mtime=_mtime(blob))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """The objects under ``prefix``; GCS lists names in lexicographic order."""
        validate_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        blobs = iter(self._client.list_blobs(self._bucket, prefix=full, timeout=self._timeout))
        while True:
            try:
                blob = next(blobs)
            except StopIteration:
                return
            except Exception as e:
                raise self._translate(e, "listing", prefix or "/") from e
            yield ObjectInfo(key=self._rel(blob.name), size=int(blob.size or 0), mtime=_mtime(blob))

    # -- misc ----------------------------------------------------------------------------------

    def describe(self) -> str:
        """``gs://bucket/prefix``."""
        return self.backend.describe()

    def close(self) -> None:
        """Close the client's HTTP session."""
        self._client.close()

    def _blob(self, key: str, cold: bool) -> Any:
        blob = self._bucket.blob(self._name(key), chunk_size=self.part_size)
        # Hot objects stay in the bucket's default class.
        if cold and self.backend.storage_class:
            blob.storage_class = self.backend.storage_class
        return blob

    def _translate(self, e: Exception, action: str, key: str) -> BakeliteError:
        """A google/requests error as the backend error family, naming the bucket."""
        if isinstance(e, BakeliteError):
            return e
        api = self._api
        where = self.describe()
        detail = f"{type(e).__name__}: {getattr(e, 'message', None) or e} ({action} {key})"
        if isinstance(e, api.NotFound):
            # A write or a listing cannot miss an object: its 404 is the bucket's.
            if _bucket_missing(e) or action in ("writing", "listing"):
                return PermanentBackendError(
                    f"bucket {self.backend.bucket!r} does not exist ({where})",
                    detail=detail,
                    hint="create the bucket, or fix `bucket`",
                )
            return self._not_found(key)
        if isinstance(e, api.Unauthorized | api.Forbidden):
            return PermanentBackendError(
                f"access denied by {where}",
                detail=detail,
                hint="check the service account key and that it may read, write, list and delete "
                "objects in the bucket (roles/storage.objectAdmin)",
            )
        if isinstance(e, api.TooManyRequests | api.ServerError | api.RequestTimeout):
            return TransientBackendError(f"{where} failed {action} {key}", detail=detail)
        if isinstance(e, api.ClientError):
            return PermanentBackendError(f"{where} rejected {action} {key}", detail=detail)
        import google.auth.exceptions
        import requests

        if isinstance(e, google.auth.exceptions.RefreshError):
            return PermanentBackendError(
                f"GCS credentials were refused ({where})",
                detail=detail,
                hint="check the service account key",
            )
        if isinstance(e, requests.RequestException | google.auth.exceptions.TransportError | OSError):
            return TransientBackendError(f"{where} unreachable {action} {key}", detail=detail)
        return BackendError(f"{where} failed {action} {key}", detail=detail)


def _bucket_missing(e: Exception) -> bool:
    message = str(getattr(e, "message", "") or e).lower()
    return "bucket" in message and ("not exist" in message or "not found" in message)


def _mtime(blob: Any) -> float:
    when = blob.updated or blob.time_created
    return float(when.timestamp()) if when is not None else 0.0
