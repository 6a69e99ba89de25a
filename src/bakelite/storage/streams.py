"""Stream helpers the object-store backends share: re-cutting upload chunks, readers over ranges.

Nothing here knows a cloud SDK: a backend passes in a ``fetch(start, length)`` function, or the
SDK's response body, and its own error translation.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import urllib.parse
from collections.abc import Callable, Iterable, Iterator

logger = logging.getLogger(__name__)

# The size of one uploaded part / staged block, and of one ranged read.  8 MiB is S3's common
# default, well above its 5 MiB minimum part size, and small enough to keep memory flat.
PART_SIZE = 8 * 1024 * 1024


def rebuffer(chunks: Iterable[bytes], size: int = PART_SIZE) -> Iterator[bytes]:
    """Re-cut ``chunks`` into pieces of exactly ``size`` bytes (the last one shorter, none empty)."""
    buf = bytearray()
    for chunk in chunks:
        if not chunk:
            continue
        buf += chunk
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


def first_and_rest(parts: Iterator[bytes]) -> tuple[bytes, bytes | None]:
    """The first part (``b""`` for an empty stream) and the second one, if the stream has one."""
    first = next(parts, b"")
    second = next(parts, None)
    return first, second


def chain(first: bytes, second: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    """``first``, ``second``, then the rest: the parts ``first_and_rest`` took apart, put back."""
    yield first
    yield second
    yield from rest


class RangedReader(io.RawIOBase):
    """A seekable raw stream over an object of known size, read by ranged requests."""

    def __init__(self, fetch: Callable[[int, int], bytes], size: int, block: int = PART_SIZE) -> None:
        super().__init__()
        self._fetch = fetch
        self._size = size
        self._block = block
        self._pos = 0

    def readable(self) -> bool:
        """Always readable."""
        return True

    def seekable(self) -> bool:
        """Ranged reads make any position cheap."""
        return True

    def tell(self) -> int:
        """The current position."""
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move the position (past the end is allowed and reads nothing)."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        """Fill ``buffer`` with one ranged request (fewer bytes at the end)."""
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        data = self._fetch(self._pos, want)
        n = len(data)
        memoryview(buffer)[:n] = data
        self._pos += n
        return n

    def readall(self) -> bytes:
        """The rest of the object, in ``block``-sized requests (not RawIOBase's 8 KiB ones)."""
        out = bytearray()
        while self._pos < self._size:
            data = self._fetch(self._pos, min(self._block, self._size - self._pos))
            if not data:
                break
            out += data
            self._pos += len(data)
        return bytes(out)


class BodyReader(io.RawIOBase):
    """A raw stream over an SDK response body; errors while reading go through ``translate``."""

    def __init__(
        self,
        read: Callable[[int], bytes],
        close: Callable[[], None],
        translate: Callable[[Exception], Exception],
    ) -> None:
        super().__init__()
        self._read = read
        self._close = close
        self._translate = translate

    def readable(self) -> bool:
        """Always readable."""
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        """Up to ``len(buffer)`` bytes from the body."""
        try:
            data = self._read(len(buffer))
        except Exception as e:
            raise self._translate(e) from e
        n = len(data)
        memoryview(buffer)[:n] = data
        return n

    def close(self) -> None:
        """Release the connection, then mark the stream closed."""
        if not self.closed:
            try:
                self._close()
            except Exception:  # closing a broken connection must not mask the caller's error
                logger.debug("error closing a response body", exc_info=True)
        super().close()


def buffered(raw: io.RawIOBase, size: int = 1024 * 1024) -> io.BufferedReader:
    """``raw`` behind a read buffer, as the ``BinaryIO`` the storage protocol hands out."""
    return io.BufferedReader(raw, buffer_size=size)


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` points at this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_cleartext(url: str | None, what: str) -> None:
    """Warn when an ``http://`` endpoint leaves this machine: credentials would travel in clear."""
    if url and url.lower().startswith("http://") and not is_loopback_url(url):
        logger.warning(
            "%s endpoint %s uses http:// (no TLS): access keys and data travel in clear; "
            "use https:// outside a local emulator",
            what,
            url,
            extra={"endpoint": url},
        )
