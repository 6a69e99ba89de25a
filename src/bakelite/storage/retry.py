"""Retry ``TransientBackendError`` with exponential backoff and full jitter; nothing else is retried.

Every op is safe to repeat: puts replace atomically, deletes are idempotent, reads have no effect.
What a retry cannot repeat is a stream that was already consumed, hence these rules:

* ``put_stream`` with a **re-iterable** ``chunks`` (a list, a tuple, or ``Restartable(factory)``,
  which calls ``factory()`` afresh for each attempt) is retried like any other op.  This is the way
  to stream a large object with retries, and it works through any stack of wrappers because it
  needs nothing beyond the ``Storage`` protocol::

      storage.put_stream(key, Restartable(lambda: read_chunks(path)))

* ``put_stream`` with a **one-shot iterator** (a generator) is retried only while the backend has
  not yet pulled a chunk from it (a connection refused up front); once it has, the error is
  re-raised at once, since the data can no longer be replayed.

* ``list`` is materialised inside the retry (a listing that fails halfway is listed again), and
  ``open`` retries only the opening: errors while reading the stream surface to the caller.

After the last attempt the last ``TransientBackendError`` is re-raised unchanged.
"""

from __future__ import annotations

import builtins
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO, TypeVar

from bakelite.errors import TransientBackendError
from bakelite.storage.base import ObjectInfo, Storage

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Restartable:
    """Re-iterable chunks: each iteration calls ``factory()`` again, so a failed upload can restart."""

    def __init__(self, factory: Callable[[], Iterable[bytes]]) -> None:
        self._factory = factory

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._factory())


class RetryingStorage:
    """Wraps ``inner``; retries transient failures up to ``attempts`` calls in all."""

    def __init__(
        self,
        inner: Storage,
        attempts: int = 5,
        base_delay: float = 0.1,
        max_delay: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {attempts}")
        if base_delay < 0 or max_delay < 0:
            raise ValueError("retry delays cannot be negative")
        self.inner = inner
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep
        self._rng = rng or random.Random()

    def backoff_cap(self, attempt: int) -> float:
        """The longest wait after failed attempt ``attempt`` (1-based): base·2^(attempt-1), capped."""
        return min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))

    def put(self, key: str, data: bytes, *, cold: bool = False) -> None:
        """``inner.put``, retried."""
        self._retry("put", key, lambda: self.inner.put(key, data, cold=cold))

    def put_stream(self, key: str, chunks: Iterable[bytes], *, cold: bool = False) -> int:
        """``inner.put_stream``, retried if ``chunks`` is re-iterable or untouched (module docstring)."""
        if not isinstance(chunks, Iterator):
            return self._retry("put_stream", key, lambda: self.inner.put_stream(key, chunks, cold=cold))
        source: Iterator[bytes] = chunks
        pulled = False

        def tracked() -> Iterator[bytes]:
            nonlocal pulled
            pulled = True  # runs on the backend's first next(): from here the source is spent
            yield from source

        return self._retry(
            "put_stream",
            key,
            lambda: self.inner.put_stream(key, tracked(), cold=cold),
            retryable=lambda: not pulled,
        )

    def get(self, key: str) -> bytes:
        """``inner.get``, retried."""
        return self._retry("get", key, lambda: self.inner.get(key))

    def open(self, key: str) -> BinaryIO:
        """``inner.open``, retried; reading the stream is not."""
        return self._retry("open", key, lambda: self.inner.open(key))

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """``inner.get_range``, retried."""
        return self._retry("get_range", key, lambda: self.inner.get_range(key, start, length))

    def stat(self, key: str) -> ObjectInfo | None:
        """``inner.stat``, retried."""
        return self._retry("stat", key, lambda: self.inner.stat(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """``inner.list`` read whole inside the retry, so a listing failing halfway starts over."""
        return iter(self._retry("list", prefix, lambda: builtins.list(self.inner.list(prefix))))

    def delete(self, keys: Iterable[str]) -> None:
        """``inner.delete``, retried (deleting is idempotent)."""
        batch = builtins.list(keys)
        label = f"{batch[0]} (+{len(batch) - 1})" if batch else "(none)"
        self._retry("delete", label, lambda: self.inner.delete(batch))

    def describe(self) -> str:
        """The inner backend's description."""
        return self.inner.describe()

    def close(self) -> None:
        """Close the inner backend."""
        self.inner.close()

    def _retry(
        self, op: str, key: str, call: Callable[[], T], retryable: Callable[[], bool] | None = None
    ) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return call()
            except TransientBackendError as e:
                if attempt == self.attempts:
                    raise
                if retryable is not None and not retryable():
                    logger.debug(
                        "not retrying %s %s: the chunk iterator was already consumed (%s)",
                        op,
                        key,
                        e.message,
                        extra={"op": op, "key": key, "attempt": attempt},
                    )
                    raise
                # Full jitter: spreads out the retries of many writers hitting the same outage.
                delay = self._rng.uniform(0.0, self.backoff_cap(attempt))
                logger.debug(
                    "retrying %s %s after attempt %d/%d failed (%s); waiting %.3fs",
                    op,
                    key,
                    attempt,
                    self.attempts,
                    e.message,
                    delay,
                    extra={"op": op, "key": key, "attempt": attempt},
                )
                self._sleep(delay)
        raise AssertionError("unreachable")
