"""An in-process backend: a dict behind a lock, with the same semantics as every other backend.

A real module, not a mock: unit tests run the replication and the ops against it, and the contract
suite holds it to the same rules as the file and cloud backends.
"""

from __future__ import annotations

import builtins
import io
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from bakelite.errors import ObjectNotFound
from bakelite.storage.base import ObjectInfo, validate_key, validate_prefix

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Object:
    data: bytes
    mtime: float
    cold: bool


class MemoryStorage:
    """Objects in a dict; thread-safe; ``describe()`` is ``memory://<id>``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[str, _Object] = {}

    def put(self, key: str, data: bytes, *, cold: bool = False) -> None:
        """Store a copy of ``data`` at ``key``."""
        validate_key(key)
        obj = _Object(bytes(data), time.time(), cold)
        with self._lock:
            self._objects[key] = obj

    def put_stream(self, key: str, chunks: Iterable[bytes], *, cold: bool = False) -> int:
        """Store the concatenation of ``chunks``; nothing is stored if the iterator raises."""
        validate_key(key)
        # Collected outside the lock: the object appears whole, or not at all.
        data = b"".join(chunks)
        self.put(key, data, cold=cold)
        return len(data)

    def get(self, key: str) -> bytes:
        """The whole object; ``ObjectNotFound`` if absent."""
        return self._get(key).data

    def open(self, key: str) -> BinaryIO:
        """A stream over the object as it was when opened."""
        return io.BytesIO(self._get(key).data)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """``length`` bytes from ``start`` (fewer, or none, past the end)."""
        if start < 0 or length < 0:
            raise ValueError(f"invalid range start={start} length={length}")
        return self._get(key).data[start : start + length]

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and mtime, or ``None`` if absent."""
        validate_key(key)
        with self._lock:
            obj = self._objects.get(key)
        return None if obj is None else ObjectInfo(key=key, size=len(obj.data), mtime=obj.mtime)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, sorted, as of the call."""
        validate_prefix(prefix)
        with self._lock:
            items = [(k, o) for k, o in self._objects.items() if k.startswith(prefix)]
        items.sort(key=lambda item: item[0])
        return iter([ObjectInfo(key=k, size=len(o.data), mtime=o.mtime) for k, o in items])

    def delete(self, keys: Iterable[str]) -> None:
        """Delete ``keys``; absent ones are fine."""
        # Validate them all first, so a bad key deletes nothing.
        checked = [validate_key(k) for k in keys]
        with self._lock:
            for key in checked:
                self._objects.pop(key, None)

    def is_cold(self, key: str) -> bool:
        """Whether ``key`` was written with ``cold=True`` (for tests of storage-class choices)."""
        return self._get(key).cold

    def keys(self) -> builtins.list[str]:
        """Every key, sorted (a test convenience)."""
        with self._lock:
            return sorted(self._objects)

    def describe(self) -> str:
        """``memory://<id>``: distinct per instance."""
        return f"memory://{id(self):x}"

    def close(self) -> None:
        """Nothing to release; the objects stay readable."""

    def _get(self, key: str) -> _Object:
        validate_key(key)
        with self._lock:
            obj = self._objects.get(key)
        if obj is None:
            raise ObjectNotFound(f"object {key} not found", detail=self.describe())
        return obj
