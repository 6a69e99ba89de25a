"""The storage protocol every backend implements, and the key rules they share.

A backend stores opaque objects under string keys.  Keys are relative ``/``-separated paths built
only by ``bakelite.format.layout``; ``validate_key`` is the single check every backend applies.
Errors are the ``BackendError`` family of ``bakelite.errors``; only ``TransientBackendError`` is
retried (by ``storage.retry.RetryingStorage``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol, runtime_checkable

from bakelite.errors import BackendError

_KEY_SEGMENT = re.compile(r"^[A-Za-z0-9._=+-]+$")


def validate_key(key: str) -> str:
    """Reject keys that could escape a prefix or confuse a backend; return the key."""
    if not key or len(key) > 900:
        raise BackendError(f"invalid object key {key!r}: empty or too long")
    for segment in key.split("/"):
        if segment in ("", ".", "..") or not _KEY_SEGMENT.match(segment):
            raise BackendError(f"invalid object key {key!r}: bad segment {segment!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a valid key optionally ending in ``/``."""
    if prefix == "":
        return prefix
    validate_key(prefix.rstrip("/"))
    return prefix


@dataclass(frozen=True)
class ObjectInfo:
    """What a listing or stat returns about one object."""

    key: str
    size: int
    mtime: float


@runtime_checkable
class Storage(Protocol):
    """One destination: a flat key space of immutable-by-convention objects."""

    def put(self, key: str, data: bytes, *, cold: bool = False) -> None:
        """Store ``data`` at ``key`` atomically (readers see all of it or nothing)."""
        ...

    def put_stream(self, key: str, chunks: Iterable[bytes], *, cold: bool = False) -> int:
        """Store the concatenation of ``chunks`` atomically; return its size.  Aborts cleanly on error."""
        ...

    def get(self, key: str) -> bytes:
        """The whole object; ``ObjectNotFound`` if absent."""
        ...

    def open(self, key: str) -> BinaryIO:
        """A readable stream of the object; ``ObjectNotFound`` if absent."""
        ...

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """``length`` bytes from ``start`` (fewer at the end of the object)."""
        ...

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and mtime, or ``None`` if absent."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, sorted by key."""
        ...

    def delete(self, keys: Iterable[str]) -> None:
        """Delete ``keys``; absent keys are not an error."""
        ...

    def describe(self) -> str:
        """Where this is, with no secrets (``file:///…``, ``s3://bucket/prefix``)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
