"""Build a ``Storage`` from a configured backend, and namespace it by database.

Each backend type maps to a factory in ``_FACTORIES``.  A factory imports its module (and so its
SDK) only when called, so ``bakelite --help`` loads no cloud SDK (style.md point 10); adding a
backend is one function and one dict entry::

    def _open_s3(backend: Backend) -> Storage:
        from bakelite.storage.s3 import S3Storage  # boto3 imported here, with an install hint

        return S3Storage.from_config(backend)
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

from bakelite.config.model import AzureBackend, Backend, FileBackend, GCSBackend, S3Backend, SFTPBackend
from bakelite.errors import NotAvailableError
from bakelite.storage.base import ObjectInfo, Storage, validate_key, validate_prefix

logger = logging.getLogger(__name__)

BackendFactory = Callable[[Backend], Storage]


def _open_file(backend: Backend) -> Storage:
    from bakelite.storage.file import FileStorage

    if not isinstance(backend, FileBackend):
        raise TypeError(f"expected a FileBackend, got {type(backend).__name__}")
    return FileStorage(backend.path)


def _open_s3(backend: Backend) -> Storage:
    from bakelite.storage.s3 import S3Storage  # botocore is imported when the client is built

    if not isinstance(backend, S3Backend):
        raise TypeError(f"expected an S3Backend, got {type(backend).__name__}")
    return S3Storage.from_config(backend)


def _open_gcs(backend: Backend) -> Storage:
    from bakelite.storage.gcs import GCSStorage

    if not isinstance(backend, GCSBackend):
        raise TypeError(f"expected a GCSBackend, got {type(backend).__name__}")
    return GCSStorage.from_config(backend)


def _open_azure(backend: Backend) -> Storage:
    from bakelite.storage.azure import AzureStorage

    if not isinstance(backend, AzureBackend):
        raise TypeError(f"expected an AzureBackend, got {type(backend).__name__}")
    return AzureStorage.from_config(backend)


def _open_sftp(backend: Backend) -> Storage:
    from bakelite.storage.sftp import SFTPStorage

    if not isinstance(backend, SFTPBackend):
        raise TypeError(f"expected an SFTPBackend, got {type(backend).__name__}")
    return SFTPStorage.from_config(backend)


_FACTORIES: dict[str, BackendFactory] = {
    "file": _open_file,
    "s3": _open_s3,
    "gcs": _open_gcs,
    "azure": _open_azure,
    "sftp": _open_sftp,
}


def open_storage(backend: Backend, *, namespace: str | None = None) -> Storage:
    """The storage for ``backend``; with ``namespace`` (a database name), rooted at ``<namespace>/``."""
    factory = _FACTORIES.get(backend.type)
    if factory is None:
        known = ", ".join(sorted(_FACTORIES))
        raise NotAvailableError(f"unknown backend type {backend.type!r}", hint=f"known types: {known}")
    storage = factory(backend)
    logger.debug("opened storage %s", storage.describe(), extra={"backend": backend.type})
    return storage if namespace is None else PrefixedStorage(storage, namespace)


class PrefixedStorage:
    """Every key of ``inner`` under ``prefix/``; keys in and out are relative to the prefix."""

    def __init__(self, inner: Storage, prefix: str) -> None:
        self.inner = inner
        self.prefix = validate_key(prefix.removesuffix("/")) + "/"

    def put(self, key: str, data: bytes, *, cold: bool = False) -> None:
        """``inner.put`` under the prefix."""
        self.inner.put(self._key(key), data, cold=cold)

    def put_stream(self, key: str, chunks: Iterable[bytes], *, cold: bool = False) -> int:
        """``inner.put_stream`` under the prefix (``chunks`` is passed on untouched)."""
        return self.inner.put_stream(self._key(key), chunks, cold=cold)

    def get(self, key: str) -> bytes:
        """``inner.get`` under the prefix."""
        return self.inner.get(self._key(key))

    def open(self, key: str) -> BinaryIO:
        """``inner.open`` under the prefix."""
        return self.inner.open(self._key(key))

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """``inner.get_range`` under the prefix."""
        return self.inner.get_range(self._key(key), start, length)

    def stat(self, key: str) -> ObjectInfo | None:
        """``inner.stat`` under the prefix, with the relative key."""
        info = self.inner.stat(self._key(key))
        return None if info is None else ObjectInfo(key=key, size=info.size, mtime=info.mtime)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """``inner.list`` of ``<prefix>/<prefix>``, with keys relative to this storage's prefix."""
        validate_prefix(prefix)
        cut = len(self.prefix)
        return (
            ObjectInfo(key=info.key[cut:], size=info.size, mtime=info.mtime)
            for info in self.inner.list(self.prefix + prefix)
        )

    def delete(self, keys: Iterable[str]) -> None:
        """``inner.delete`` under the prefix."""
        self.inner.delete(builtins.list(self._key(k) for k in keys))

    def describe(self) -> str:
        """The inner description with the prefix appended."""
        return f"{self.inner.describe().rstrip('/')}/{self.prefix.rstrip('/')}"

    def close(self) -> None:
        """Close the inner backend."""
        self.inner.close()

    def _key(self, key: str) -> str:
        # Validated on its own first: "" or "../x" must not become a valid key once prefixed.
        return self.prefix + validate_key(key)
