"""The Azure Blob Storage backend, on azure-storage-blob (block blobs).

The credential comes from the environment, first found wins: an account key
(``AZURE_STORAGE_ACCOUNT_KEY`` or its alias ``AZURE_STORAGE_ACCESS_KEY``), a SAS token
(``AZURE_STORAGE_SAS_TOKEN``), or a service principal (``AZURE_STORAGE_CLIENT_ID`` /
``_CLIENT_SECRET`` / ``_TENANT_ID``, which needs azure-identity).  The endpoint is
``https://<account>.blob.core.windows.net``; the config's ``endpoint`` override exists only so the
tests can reach Azurite.

A stream is staged as blocks and committed at the end, so readers see the old blob or the new one;
blocks of a failed upload are never committed, invisible, and dropped by Azure after a week.
"""

from __future__ import annotations

import base64
import builtins
import logging
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, BinaryIO

from bakelite.config.model import AzureBackend
from bakelite.errors import (
    BackendError,
    BakeliteError,
    ConfigError,
    NotAvailableError,
    PermanentBackendError,
    TransientBackendError,
)
from bakelite.storage.base import ObjectInfo, validate_key, validate_prefix
from bakelite.storage.keyspace import PrefixedKeySpace
from bakelite.storage.streams import (
    PART_SIZE,
    RangedReader,
    buffered,
    chain,
    first_and_rest,
    rebuffer,
    warn_if_cleartext,
)

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'bakelite[azure]'"
# Error codes meaning a container-level problem: retrying or treating it as a missing blob is wrong.
_CONTAINER_MISSING = frozenset({"ContainerNotFound", "ContainerBeingDeleted"})
_IMMUTABLE = frozenset({"BlobImmutableDueToPolicy", "BlobImmutableDueToLegalHold"})


def _sdk() -> Any:
    """The azure.storage.blob module, or the install hint."""
    try:
        import azure.storage.blob as blob
    except ImportError as e:
        raise NotAvailableError(
            "the azure backend needs azure-storage-blob, which is not installed", hint=INSTALL_HINT
        ) from e
    return blob


def resolve_credential(backend: AzureBackend, environ: Mapping[str, str]) -> Any:
    """The credential the environment provides, or ConfigError "no Azure credentials found"."""
    key = (environ.get("AZURE_STORAGE_ACCOUNT_KEY") or environ.get("AZURE_STORAGE_ACCESS_KEY") or "").strip()
    if key:
        return {"account_name": backend.account, "account_key": key}
    if sas := environ.get("AZURE_STORAGE_SAS_TOKEN", "").strip():
        return sas.lstrip("?")
    ids = [environ.get(f"AZURE_STORAGE_{n}", "").strip() for n in ("CLIENT_ID", "CLIENT_SECRET", "TENANT_ID")]
    if all(ids):
        try:
            from azure.identity import ClientSecretCredential
        except ImportError as e:
            raise NotAvailableError(
                "service-principal credentials for azure need azure-identity, which is not installed",
                hint="pip install azure-identity (or use AZURE_STORAGE_ACCOUNT_KEY)",
            ) from e
        client_id, secret, tenant = ids
        return ClientSecretCredential(tenant_id=tenant, client_id=client_id, client_secret=secret)
    raise ConfigError(
        "no Azure credentials found",
        detail=backend.describe(),
        hint="set AZURE_STORAGE_ACCOUNT_KEY (or AZURE_STORAGE_SAS_TOKEN, or AZURE_STORAGE_CLIENT_ID, "
        "_CLIENT_SECRET and _TENANT_ID), e.g. in /etc/bakelite/bakelite.env",
    )


class AzureStorage(PrefixedKeySpace):
    """Block blobs in one container under ``prefix``; build one with ``from_config``."""

    def __init__(self, container: Any, backend: AzureBackend, *, part_size: int = PART_SIZE) -> None:
        self._container = container
        self.backend = backend
        self.prefix = backend.prefix.strip("/")
        self.part_size = part_size
        from azure.core import exceptions

        self._exc = exceptions

    @classmethod
    def from_config(cls, backend: AzureBackend, environ: Mapping[str, str] | None = None) -> AzureStorage:
        """A container client for ``backend`` with the credential from ``environ``."""
        blob = _sdk()
        env = os.environ if environ is None else environ
        credential = resolve_credential(backend, env)
        url = backend.endpoint or f"https://{backend.account}.blob.core.windows.net"
        warn_if_cleartext(backend.endpoint, f"Azure backend {backend.describe()}")
        timeout = backend.request_timeout or 60.0
        container = blob.ContainerClient(
            url,
            backend.container,
            credential=credential,
            retry_total=backend.max_retries if backend.max_retries is not None else 2,
            connection_timeout=min(timeout, 10.0),
            read_timeout=timeout,
            max_single_put_size=PART_SIZE,
            max_block_size=PART_SIZE,
        )
        return cls(container, backend)

    # -- writes --------------------------------------------------------------------------------

    def put(self, key: str, data: bytes, *, cold: bool = False) -> None:
        """One Put Blob (staged blocks above the part size)."""
        if len(data) > self.part_size:
            self.put_stream(key, (data,), cold=cold)
            return
        blob = self._blob(key)
        self._call("writing", key, blob.upload_blob, data, overwrite=True, **self._tier(cold))

    def put_stream(self, key: str, chunks: Iterable[bytes], *, cold: bool = False) -> int:
        """One Put Blob if it fits in a part, else staged blocks committed only at the end."""
        blob = self._blob(key)
        parts = rebuffer(chunks, self.part_size)
        first, second = first_and_rest(parts)
        if second is None:
            self._call("writing", key, blob.upload_blob, first, overwrite=True, **self._tier(cold))
            return len(first)
        from azure.storage.blob import BlobBlock

        # A per-upload id prefix: two writers staging blocks for the same blob must not mix.
        upload = uuid.uuid4().hex
        blocks: builtins.list[Any] = []
        size = 0
        for part in chain(first, second, parts):
            block_id = base64.b64encode(f"{upload}-{len(blocks):08d}".encode()).decode()
            self._call("writing", key, blob.stage_block, block_id, part, length=len(part))
            blocks.append(BlobBlock(block_id=block_id))
            size += len(part)
        self._call("writing", key, blob.commit_block_list, blocks, **self._tier(cold))
        return size

    def _tier(self, cold: bool) -> dict[str, Any]:
        # Hot objects stay in the account's default tier.
        if cold and self.backend.storage_class:
            from azure.storage.blob import StandardBlobTier

            return {"standard_blob_tier": StandardBlobTier(self.backend.storage_class)}
        return {}

    def delete(self, keys: Iterable[str]) -> None:
        """Delete each key; absent ones are fine; an immutability policy raises ``DeleteRefusedError``."""
        refused: builtins.list[str] = []
        for key in dict.fromkeys(builtins.list(keys)):
            blob = self._blob(key)
            try:
                blob.delete_blob()
            except self._exc.ResourceNotFoundError as e:
                if getattr(e, "error_code", None) in _CONTAINER_MISSING:
                    raise self._translate(e, "deleting", key) from e
            except self._exc.HttpResponseError as e:
                if getattr(e, "error_code", None) in _IMMUTABLE:
                    refused.append(key)
                    continue
                raise self._translate(e, "deleting", key) from e
            except Exception as e:
                raise self._translate(e, "deleting", key) from e
        if refused:
            raise self._refused(refused, "an immutability policy or legal hold")

    # -- reads ---------------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        """The whole blob."""
        blob = self._blob(key)
        downloader = self._call("reading", key, blob.download_blob, max_concurrency=2)
        data: bytes = self._call("reading", key, downloader.readall)
        return data

    def open(self, key: str) -> BinaryIO:
        """Ranged reads pinned to the blob's ETag at open time, behind a read buffer."""
        from azure.core import MatchConditions

        blob = self._blob(key)
        props = self._call("opening", key, blob.get_blob_properties)
        etag = props.etag

        def fetch(start: int, length: int) -> bytes:
            # If-Match: an overwrite mid-read fails loudly instead of splicing two versions.
            downloader = self._call(
                "reading", key, blob.download_blob, offset=start, length=length,
                etag=etag, match_condition=MatchConditions.IfNotModified,
            )  # fmt: skip
            data: bytes = self._call("reading", key, downloader.readall)
            return data

        return buffered(RangedReader(fetch, int(props.size)))

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """A ranged download; a range past the end (416) is ``b""``."""
        if start < 0 or length < 0:
            raise ValueError(f"invalid range start={start} length={length}")
        if length == 0:
            if self.stat(key) is None:
                raise self._not_found(key)
            return b""
        blob = self._blob(key)
        try:
            data: bytes = blob.download_blob(offset=start, length=length).readall()
        except self._exc.HttpResponseError as e:
            if e.status_code == 416:
                return b""
            raise self._translate(e, "reading", key) from e
        except Exception as e:
            raise self._translate(e, "reading", key) from e
        return data

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and mtime, or ``None``."""
        try:
            props = self._blob(key).get_blob_properties()
        except self._exc.ResourceNotFoundError as e:
            if getattr(e, "error_code", None) in _CONTAINER_MISSING:
                raise self._translate(e, "inspecting", key) from e
            return None
        except Exception as e:
            raise self._translate(e, "inspecting", key) from e
        return ObjectInfo(key=key, size=int(props.size), mtime=props.last_modified.timestamp())

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """The blobs under ``prefix``; Azure lists names in lexicographic order."""
        validate_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        blobs = iter(self._container.list_blobs(name_starts_with=full or None))
        while True:
            try:
                props = next(blobs)
            except StopIteration:
                return
            except Exception as e:
                raise self._translate(e, "listing", prefix or "/") from e
            yield ObjectInfo(
                key=self._rel(props.name), size=int(props.size), mtime=props.last_modified.timestamp()
            )

    # -- misc ----------------------------------------------------------------------------------

    def describe(self) -> str:
        """``azure://account/container/prefix``."""
        return self.backend.describe()

    def close(self) -> None:
        """Close the container client's HTTP pipeline."""
        self._container.close()

    def _blob(self, key: str) -> Any:
        validate_key(key)
        return self._container.get_blob_client(f"{self.prefix}/{key}" if self.prefix else key)

    def _translate(self, e: Exception, action: str, key: str) -> BakeliteError:
        """An azure-core error as the backend error family, naming the container."""
        if isinstance(e, BakeliteError):
            return e
        exc = self._exc
        where = self.describe()
        code = getattr(e, "error_code", None)
        first_line = str(getattr(e, "message", None) or e).splitlines()[0] if str(e) else type(e).__name__
        detail = f"{code or type(e).__name__}: {first_line} ({action} {key})"
        if code in _CONTAINER_MISSING:
            return PermanentBackendError(
                f"container {self.backend.container!r} does not exist ({where})",
                detail=detail,
                hint="create the container, or fix `account` / `container`",
            )
        if isinstance(e, exc.ResourceNotFoundError):
            return self._not_found(key)
        if isinstance(e, exc.ClientAuthenticationError):
            return PermanentBackendError(
                f"access denied by {where}",
                detail=detail,
                hint="check AZURE_STORAGE_ACCOUNT_KEY (or the SAS token / service principal) and that it "
                "may read, write, list and delete blobs (Storage Blob Data Contributor)",
            )
        if isinstance(e, exc.HttpResponseError):
            status = e.status_code or 0
            if status in (401, 403):
                return PermanentBackendError(f"access denied by {where}", detail=detail)
            if status >= 500 or status in (408, 429):
                return TransientBackendError(f"{where} failed {action} {key}", detail=detail)
            if status == 412:
                return TransientBackendError(f"{key} changed while it was read ({where})", detail=detail)
            return PermanentBackendError(f"{where} rejected {action} {key}", detail=detail)
        if isinstance(e, exc.ServiceRequestError | exc.ServiceResponseError | OSError):
            return TransientBackendError(f"{where} unreachable {action} {key}", detail=detail)
        if isinstance(e, exc.AzureError):
            return TransientBackendError(f"{where} failed {action} {key}", detail=detail)
        return BackendError(f"{where} failed {action} {key}", detail=detail)
