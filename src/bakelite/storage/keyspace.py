"""What the object-store backends (S3, GCS, Azure) share: keys under a prefix, and error mapping."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from bakelite.errors import BakeliteError, DeleteRefusedError, ObjectNotFound
from bakelite.storage.base import validate_key


class PrefixedKeySpace(ABC):
    """Object names are ``<prefix>/<key>``; SDK exceptions become the backend error family."""

    prefix: str

    @abstractmethod
    def describe(self) -> str:
        """Where this is, with no secrets."""

    @abstractmethod
    def _translate(self, e: Exception, action: str, key: str) -> BakeliteError:
        """An SDK exception as a BackendError naming the backend."""

    def _name(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _rel(self, name: str) -> str:
        return name[len(self.prefix) + 1 :] if self.prefix else name

    def _call(self, action: str, key: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise self._translate(e, action, key) from e

    def _not_found(self, key: str) -> ObjectNotFound:
        return ObjectNotFound(f"object {key} not found", detail=self.describe())

    def _refused(self, keys: list[str], protection: str) -> DeleteRefusedError:
        """The error for deletes the store refused (WORM): pruning skips them, never retries."""
        return DeleteRefusedError(
            f"{self.describe()} refused to delete {len(keys)} object(s)",
            detail=", ".join(keys[:5]) + (" ..." if len(keys) > 5 else ""),
            hint=f"{protection} protects them",
        )
