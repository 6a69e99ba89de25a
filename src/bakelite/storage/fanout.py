"""Reading one replica that lives on several destinations: validate each copy, fall through to a sibling.

Every destination of a database holds byte-identical, write-once objects, so any copy that validates
is authoritative.  ``FallbackStorage`` serves ``get``/``open``/``get_range`` from the first copy that
validates as an object (envelope CRC-32C of every frame and of the whole object, payload BLAKE3,
content hash, and the AEAD tags when a cipher is available); ``CURRENT`` and ``KEYPARAMS`` are not
objects and come from the first destination that has them.  Each copy found bad is recorded
(``findings``) and logged with the destination's name; when no copy is good the read fails loudly
with a ``CorruptionError`` naming every destination.  ``list`` is the union of all destinations.

It is read-only: writes go through the replicator's lock-step fan-out, never through here.

``validate_stream`` and ``copy_object`` are shared with the async mirror, backfill and ``repair``:
they check an object without a key (an encrypted object's CRCs and payload BLAKE3 still prove its
bytes are the ones written) and copy it verbatim.
"""

from __future__ import annotations

import builtins
import io
import json
import logging
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

import blake3
import crc32c

from bakelite.errors import (
    BackendError,
    BakeliteError,
    CorruptionError,
    ObjectNotFound,
    PermanentBackendError,
)
from bakelite.format import layout
from bakelite.format.envelope import (
    _END,
    _FRAME,
    _PREFIX,
    _TAIL,
    MAX_FRAME,
    MAX_HEADER,
    FrameCipher,
    ObjectFooter,
    ObjectHeader,
    ObjectReader,
    read_version,
)
from bakelite.storage.base import ObjectInfo, Storage
from bakelite.storage.retry import Restartable

logger = logging.getLogger(__name__)

# Objects up to this size are copied through memory; bigger ones are spooled to a temp file.
SPOOL_LIMIT = 8 * 1024 * 1024
_CHUNK = 1024 * 1024
T = TypeVar("T")


def is_object_key(key: str) -> bool:
    """Whether ``key`` names an enveloped object (everything but ``CURRENT`` and ``KEYPARAMS``)."""
    db = key.split("/", 1)[0]
    return key not in (layout.current_key(db), layout.keyparams_key(db))


class _Prepended:
    """A read-only stream: ``head`` bytes, then the rest of ``inner``."""

    def __init__(self, head: bytes, inner: BinaryIO) -> None:
        self.head = head
        self.inner = inner

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            out, self.head = self.head + self.inner.read(), b""
            return out
        out, self.head = self.head[:n], self.head[n:]
        while len(out) < n:
            more = self.inner.read(n - len(out))
            if not more:
                break
            out += more
        return out


def _read_exact(stream: BinaryIO | _Prepended, n: int, name: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise CorruptionError(f"{name}: truncated (wanted {n} more bytes, got {len(data)})")
    return bytes(data)


def validate_stream(stream: BinaryIO, name: str, cipher: FrameCipher | None = None) -> ObjectHeader:
    """Read a whole object and check it; CorruptionError on any mismatch.

    With a cipher (or a plaintext object) the full ``ObjectReader`` check runs, AEAD included,
    without decompressing.  An encrypted object and no cipher (a mirror or a repair holds no key)
    gets the key-less check: every frame CRC, the payload BLAKE3 and the whole-object CRC.
    """
    prefix = _read_exact(stream, _PREFIX.size, name)
    read_version(prefix, name)
    _, _, hlen = _PREFIX.unpack(prefix)
    if hlen > MAX_HEADER:
        raise CorruptionError(f"{name}: header length {hlen} is implausible")
    hbytes = _read_exact(stream, hlen, name)
    try:
        hdict = json.loads(hbytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptionError(f"{name}: header is not valid JSON ({e})") from e
    if not isinstance(hdict, dict):
        raise CorruptionError(f"{name}: header is not a JSON object")
    header = ObjectHeader.from_dict(hdict)
    whole = _Prepended(prefix + hbytes, stream)
    if not header.encrypted or cipher is not None:
        reader = ObjectReader(whole, name, cipher)  # type: ignore[arg-type]
        for _ in reader.compressed_frames():
            pass
        return header
    _check_stored(whole, name)
    return header


def _check_stored(stream: _Prepended, name: str) -> None:
    """The key-less check of an encrypted object: frame CRCs, payload BLAKE3, object CRC."""
    crc = 0

    def take(n: int) -> bytes:
        nonlocal crc
        data = _read_exact(stream, n, name)
        crc = crc32c.crc32c(data, crc)
        return data

    prefix = take(_PREFIX.size)
    take(_PREFIX.unpack(prefix)[2])
    digest = blake3.blake3()
    frames = stored_total = 0
    while True:
        raw = take(_FRAME.size)
        if raw == _END:
            break
        stored_len, _raw_len, fcrc = _FRAME.unpack(raw)
        if stored_len > MAX_FRAME:
            raise CorruptionError(f"{name}: frame {frames} length is implausible")
        stored = take(stored_len)
        if crc32c.crc32c(stored) != fcrc:
            raise CorruptionError(f"{name}: frame {frames} fails its CRC-32C")
        digest.update(stored)
        frames += 1
        stored_total += stored_len
    rest = stream.read()
    if len(rest) < _TAIL.size:
        raise CorruptionError(f"{name}: truncated footer")
    body, (flen, want) = rest[: -_TAIL.size], _TAIL.unpack(rest[-_TAIL.size :])
    if flen != len(body):
        raise CorruptionError(f"{name}: footer length mismatch (trailing or missing bytes)")
    if crc32c.crc32c(rest[:-4], crc) != want:
        raise CorruptionError(f"{name}: object fails its CRC-32C")
    try:
        footer = ObjectFooter.from_dict(json.loads(body))
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, TypeError) as e:
        raise CorruptionError(f"{name}: footer is not valid JSON ({e})") from e
    if (footer.frames, footer.payload_bytes) != (frames, stored_total):
        raise CorruptionError(f"{name}: footer does not match its frames")
    if footer.payload_blake3 != digest.hexdigest():
        raise CorruptionError(f"{name}: payload BLAKE3 mismatch")


def validate_bytes(data: bytes, name: str, cipher: FrameCipher | None = None) -> ObjectHeader:
    """``validate_stream`` over an in-memory object."""
    return validate_stream(io.BytesIO(data), name, cipher)


def copy_object(
    src: Storage, dst: Storage, key: str, *, size: int | None = None, validate: bool = True
) -> int:
    """Copy ``key`` from ``src`` to ``dst`` byte for byte (after a key-less validation); return its size.

    Small objects go through memory; a big one is spooled to a temp file so memory stays bounded.
    A copy that fails validation is never written: copying rot would only spread it.
    """
    if size is not None and size > SPOOL_LIMIT:
        with tempfile.TemporaryFile(prefix="bakelite-copy-") as spool:
            with src.open(key) as stream:
                while chunk := stream.read(_CHUNK):
                    spool.write(chunk)
            total = spool.tell()
            if validate and is_object_key(key):
                spool.seek(0)
                validate_stream(spool, f"{key} on {src.describe()}")

            def chunks() -> Iterator[bytes]:
                spool.seek(0)
                while chunk := spool.read(_CHUNK):
                    yield chunk

            dst.put_stream(key, Restartable(chunks))
            return total
    data = src.get(key)
    if validate and is_object_key(key):
        validate_bytes(data, f"{key} on {src.describe()}")
    dst.put(key, data)
    return len(data)


def copy_order(db: str, key: str) -> tuple[str, int, int, int]:
    """Sort key for copying: backup by backup, its snapshot first, then change-sets by first seq."""
    ref = layout.parse_key(db, key)
    if ref is None:
        return ("", 0, 0, 0)
    return (ref.backup, 0 if ref.kind == "snapshot" else 1, ref.first, ref.level)


@dataclass(frozen=True)
class BadCopy:
    """One destination's copy of ``key`` that failed (``problem``: ``missing`` or what is wrong)."""

    key: str
    destination: str
    problem: str

    def __str__(self) -> str:
        return f"{self.key} on {self.destination}: {self.problem}"


class FallbackStorage:
    """Read-only view of one replica over several destinations, validating and falling through.

    ``exhaustive`` (``verify``) checks every destination's copy of each object read, so a rotting
    destination is named even when an earlier one is healthy; ``required`` marks the destinations
    whose missing copy is a finding (sync ones: an async mirror may lag by design).
    """

    def __init__(
        self,
        destinations: Sequence[Storage],
        *,
        cipher: FrameCipher | None = None,
        exhaustive: bool = False,
        required: Sequence[bool] | None = None,
    ) -> None:
        if not destinations:
            raise ValueError("a fallback storage needs at least one destination")
        self.destinations = list(destinations)
        self.cipher = cipher
        self.exhaustive = exhaustive
        self.required = list(required) if required is not None else [True] * len(self.destinations)
        self.findings: list[BadCopy] = []
        self._good: dict[str, int] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ reads
    def get(self, key: str) -> bytes:
        """The first copy that validates (non-object keys: the first reachable)."""
        if not is_object_key(key):
            return self._first(key, lambda s: s.get(key))
        with self._lock:
            known = self._good.get(key)
        if known is not None:
            return self.destinations[known].get(key)
        data_by_index: dict[int, bytes] = {}

        def check(i: int, storage: Storage) -> None:
            data = storage.get(key)
            validate_bytes(data, key, self.cipher)
            data_by_index[i] = data

        index = self._choose(key, check)
        return data_by_index[index]

    def open(self, key: str) -> BinaryIO:
        """A stream of the first copy that validates (checked in full before it is handed out)."""
        if not is_object_key(key):
            return self._first(key, lambda s: s.open(key))
        return self.destinations[self._good_index(key)].open(key)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """A range of the first copy that validates."""
        if not is_object_key(key):
            return self._first(key, lambda s: s.get_range(key, start, length))
        return self.destinations[self._good_index(key)].get_range(key, start, length)

    def stat(self, key: str) -> ObjectInfo | None:
        """The first destination's stat that finds the object."""
        errors: list[BakeliteError] = []
        for storage in self.destinations:
            try:
                info = storage.stat(key)
            except BackendError as e:
                errors.append(e)
                continue
            if info is not None:
                return info
        if errors and len(errors) == len(self.destinations):
            raise errors[0]
        return None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """The union of every reachable destination's listing, sorted by key."""
        merged: dict[str, ObjectInfo] = {}
        errors: builtins.list[BakeliteError] = []
        for storage in self.destinations:
            try:
                for info in storage.list(prefix):
                    merged.setdefault(info.key, info)
            except BackendError as e:
                logger.warning("cannot list %s: %s", storage.describe(), e.one_line())
                errors.append(e)
        if len(errors) == len(self.destinations):
            raise errors[0]
        return iter([merged[k] for k in sorted(merged)])

    # ------------------------------------------------------------------ read-only
    def put(self, key: str, data: bytes, *, cold: bool = False) -> None:
        """Refused: writes fan out through the replicator."""
        raise PermanentBackendError("the multi-destination reader is read-only")

    def put_stream(self, key: str, chunks: Iterable[bytes], *, cold: bool = False) -> int:
        """Refused: writes fan out through the replicator."""
        raise PermanentBackendError("the multi-destination reader is read-only")

    def delete(self, keys: Iterable[str]) -> None:
        """Refused: pruning fans out through the replicator."""
        raise PermanentBackendError("the multi-destination reader is read-only")

    def describe(self) -> str:
        """Every destination, primary first."""
        return " + ".join(s.describe() for s in self.destinations)

    def close(self) -> None:
        """Close every destination."""
        for storage in self.destinations:
            storage.close()

    # ------------------------------------------------------------------ internals
    def _first(self, key: str, read: Callable[[Storage], T]) -> T:
        """The first destination that has ``key`` (not validated: CURRENT and KEYPARAMS)."""
        first_error: BakeliteError | None = None
        for storage in self.destinations:
            try:
                return read(storage)
            except BackendError as e:
                first_error = first_error or e
        assert first_error is not None
        raise first_error

    def _good_index(self, key: str) -> int:
        with self._lock:
            known = self._good.get(key)
        if known is not None:
            return known

        def check(i: int, storage: Storage) -> None:
            with storage.open(key) as stream:
                validate_stream(stream, key, self.cipher)

        return self._choose(key, check)

    def _choose(self, key: str, check: Callable[[int, Storage], None]) -> int:
        """Index of the first destination whose copy passes ``check``; record every bad one."""
        bad: list[BadCopy] = []
        chosen: int | None = None
        missing = 0
        for i, storage in enumerate(self.destinations):
            if chosen is not None and not self.exhaustive:
                break
            where = storage.describe()
            try:
                check(i, storage)
            except ObjectNotFound:
                missing += 1
                if self.required[i]:
                    bad.append(BadCopy(key, where, "missing"))
                continue
            except CorruptionError as e:
                bad.append(BadCopy(key, where, e.one_line().removeprefix(f"{key}: ")))
                continue
            except BackendError as e:
                bad.append(BadCopy(key, where, f"unreadable: {e.one_line()}"))
                continue
            if chosen is None:
                chosen = i
        with self._lock:
            if chosen is not None:
                self._good[key] = chosen
            # A copy missing everywhere is not bit-rot: the caller reports the vanished object.
            if chosen is not None or missing < len(self.destinations):
                self.findings.extend(bad)
        for b in bad:
            if chosen is not None:
                logger.warning(
                    "%s; using the copy on %s", b, self.destinations[chosen].describe(), extra={"key": key}
                )
        if chosen is not None:
            return chosen
        if missing == len(self.destinations):
            raise ObjectNotFound(f"{key} is on none of {self.describe()}")
        raise CorruptionError(
            f"{key}: no destination holds a good copy",
            detail="; ".join(f"{b.destination}: {b.problem}" for b in bad),
            hint="restore an earlier point in time, or take a fresh backup",
        )


def findings_of(storage: Storage) -> builtins.list[BadCopy]:
    """The bad copies a ``FallbackStorage`` met so far (none for any other storage)."""
    if isinstance(storage, FallbackStorage):
        with storage._lock:
            return builtins.list(storage.findings)
    return []
