"""The self-describing object envelope shared by snapshots, change-sets and manifests.

Layout (integers big-endian)::

    "BKLT" | version:u16 | header_len:u32 | header (JSON)
    frame* | end marker (12 zero bytes)
    footer (JSON) | footer_len:u32 | crc32c:u32 over every preceding byte

    frame := stored_len:u32 | raw_len:u32 | crc32c(stored):u32 | stored bytes

A frame is compressed (then, with encryption, sealed) independently, so a reader streams an object
in bounded memory and checks each frame before using it.  The footer carries what is only known at
the end: frame count, BLAKE3 of the stored frames, and the object's content ``hash``.

With encryption each frame is sealed with ``frame_ad(index)`` as associated data (the header's
identity and the frame's index), so a frame cannot be moved to another object or position; the footer
of an encrypted object also carries ``seal``, an AEAD tag over the identity, the frame count, the raw
size and the content hash, so dropping trailing frames or rewriting the cleartext footer fails
authentication.  The header's ``key_id`` names (without revealing) the key that sealed the object,
so a wrong key is reported as such; like ``encrypted`` it is not part of the identity, and a
plaintext object's header and footer carry neither field.

The content hash binds the header's identity, the predecessor's link (``prev``) and the BLAKE3 of
the *plaintext* compressed frames, so it survives re-encryption and forms the lineage chain: each
object names its predecessor's link; a compacted object carries ``link`` = the hash of the last
object it replaces so its successors still chain.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import json
import struct
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO, NamedTuple, Protocol, TypeVar

import blake3
import crc32c

from bakelite.errors import CorruptionError, EncryptionError, FormatVersionError
from bakelite.format import codec as codecs

MAGIC = b"BKLT"
FORMAT_VERSION = 1
_PREFIX = struct.Struct(">4sHI")
_FRAME = struct.Struct(">III")
_TAIL = struct.Struct(">II")
_END = b"\0" * _FRAME.size
MAX_HEADER = 1 << 20
MAX_FRAME = 1 << 30

_T = TypeVar("_T")


class FrameCipher(Protocol):
    """Seals and opens frames with associated data (implemented by ``bakelite.crypto``)."""

    def seal(self, plaintext: bytes, ad: bytes) -> bytes:
        """Encrypt and authenticate ``plaintext`` bound to ``ad``."""
        ...

    def open(self, ciphertext: bytes, ad: bytes) -> bytes:
        """Authenticate and decrypt; raise EncryptionError on failure.

        An error with a ``hint`` (the cipher cannot be used at all) reaches the caller unchanged;
        any other is reported by the reader as the object failing authentication.
        """
        ...


@dataclass(frozen=True)
class ObjectHeader:
    """Identity and decoding parameters of one object."""

    kind: str  # "snapshot" | "changeset" | "manifest"
    db: str
    backup: str
    level: int = 0
    first: int = 0
    last: int = 0
    page_size: int = 0
    codec: str = "zstd"
    encrypted: bool = False
    created: float = 0.0
    prev: str | None = None
    link: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    # Encrypted objects only: the id of the key that sealed it (set by ObjectWriter from the cipher).
    key_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The header as stored (JSON object)."""
        d: dict[str, Any] = {
            "kind": self.kind,
            "db": self.db,
            "backup": self.backup,
            "level": self.level,
            "first": self.first,
            "last": self.last,
            "page_size": self.page_size,
            "codec": self.codec,
            "encrypted": self.encrypted,
            "created": self.created,
            "prev": self.prev,
            "link": self.link,
            "meta": dict(self.meta),
        }
        if self.key_id is not None:
            d["key_id"] = self.key_id
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ObjectHeader:
        """Parse a stored header; CorruptionError on a malformed one."""
        try:
            return cls(
                kind=str(d["kind"]),
                db=str(d["db"]),
                backup=str(d["backup"]),
                level=int(d["level"]),
                first=int(d["first"]),
                last=int(d["last"]),
                page_size=int(d["page_size"]),
                codec=str(d["codec"]),
                encrypted=bool(d["encrypted"]),
                created=float(d["created"]),
                prev=None if d["prev"] is None else str(d["prev"]),
                link=None if d["link"] is None else str(d["link"]),
                meta=dict(d["meta"]),
                key_id=None if d.get("key_id") is None else str(d["key_id"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptionError(f"malformed object header: {e}") from e

    def identity(self) -> bytes:
        """Canonical bytes naming what this object is and where it sits (not ``encrypted``/``key_id``)."""
        d = self.to_dict()
        del d["encrypted"]
        d.pop("key_id", None)
        return json.dumps([FORMAT_VERSION, d], sort_keys=True, separators=(",", ":")).encode()

    def content_hash(self, plain_digest: bytes) -> str:
        """The lineage hash of an object with this header and plaintext frames digest."""
        h = blake3.blake3(b"bakelite-object-v1\0")
        h.update(self.identity())
        h.update(b"\0")
        h.update(plain_digest)
        return h.hexdigest()

    def frame_ad(self, index: int) -> bytes:
        """Associated data binding frame ``index`` to this object's identity."""
        return blake3.blake3(self.identity()).digest() + struct.pack(">I", index)

    def footer_ad(self, frames: int, raw_bytes: int, content_hash: str) -> bytes:
        """Associated data of an encrypted object's footer seal: identity, frame count, size, hash."""
        try:
            digest = bytes.fromhex(content_hash)
        except ValueError as e:
            raise CorruptionError(f"malformed content hash in footer: {e}") from e
        return (
            blake3.blake3(self.identity()).digest()
            + b"footer"
            + struct.pack(">QQ", frames, raw_bytes)
            + digest
        )


@dataclass(frozen=True)
class ObjectFooter:
    """What an object's writer learns only at the end."""

    frames: int
    raw_bytes: int
    payload_bytes: int
    payload_blake3: str
    hash: str
    # Encrypted objects only: hex of the AEAD tag binding frame count, size and hash (``footer_ad``).
    seal: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The footer as stored."""
        d: dict[str, Any] = {
            "frames": self.frames,
            "raw_bytes": self.raw_bytes,
            "payload_bytes": self.payload_bytes,
            "payload_blake3": self.payload_blake3,
            "hash": self.hash,
        }
        if self.seal is not None:
            d["seal"] = self.seal
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ObjectFooter:
        """Parse a stored footer; CorruptionError on a malformed one."""
        try:
            return cls(
                frames=int(d["frames"]),
                raw_bytes=int(d["raw_bytes"]),
                payload_bytes=int(d["payload_bytes"]),
                payload_blake3=str(d["payload_blake3"]),
                hash=str(d["hash"]),
                seal=None if d.get("seal") is None else str(d["seal"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptionError(f"malformed object footer: {e}") from e


def chain_link(header: ObjectHeader, footer: ObjectFooter) -> str:
    """The hash a successor names as ``prev``: ``link`` for a compacted object, else its own hash."""
    return header.link or footer.hash


def cipher_key_id(cipher: FrameCipher | None) -> str | None:
    """The ``key_id`` a cipher advertises (an optional attribute), or None."""
    key_id = getattr(cipher, "key_id", None)
    return key_id if isinstance(key_id, str) else None


class _Encoded(NamedTuple):
    """One frame ready to write: ``record`` is its frame header plus stored bytes."""

    record: bytes
    comp: bytes | None  # the plaintext compressed frame when sealed (else it is the record's body)
    raw_len: int


class ObjectWriter:
    """Encodes an object from raw frames as a stream of byte chunks; ``footer`` is set at the end.

    With ``workers`` > 1 the frames are compressed, sealed and checksummed on that many threads
    (zstd, BLAKE3, CRC-32C and libsodium release the GIL), at most ``window`` frames ahead of the
    consumer, and written in order: the bytes are the same as with one worker.  The input frames must
    not be mutated after they are yielded.
    """

    def __init__(
        self,
        header: ObjectHeader,
        cipher: FrameCipher | None = None,
        *,
        workers: int = 1,
        window: int | None = None,
    ) -> None:
        if header.encrypted != (cipher is not None):
            raise ValueError("header.encrypted must match whether a cipher is given")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        # Two frames per worker keeps every worker busy while the consumer writes one out.
        window = 2 * workers if window is None else window
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        key_id = cipher_key_id(cipher)
        if header.key_id != key_id:
            header = dataclasses.replace(header, key_id=key_id)
        self.header = header
        self.cipher = cipher
        self.workers = workers
        self.window = window
        self.footer: ObjectFooter | None = None
        self.size = 0

    def chunks(self, raw_frames: Iterable[bytes | memoryview]) -> Iterator[bytes]:
        """Yield the encoded object; compresses (and seals) each raw frame in turn."""
        codec = self.header.codec
        seal = self._sealer()

        def encode(n: int, raw: bytes | memoryview) -> _Encoded:
            return seal(n, codecs.compress(raw, codec), len(raw))

        return self._encode(self._ordered(raw_frames, encode))

    def chunks_compressed(self, frames: Iterable[tuple[bytes, int]]) -> Iterator[bytes]:
        """Yield the encoded object from already compressed ``(frame, raw length)`` pairs (re-encryption)."""
        seal = self._sealer()

        def encode(n: int, frame: tuple[bytes, int]) -> _Encoded:
            return seal(n, frame[0], frame[1])

        return self._encode(self._ordered(frames, encode))

    def _sealer(self) -> Callable[[int, bytes, int], _Encoded]:
        """The per-frame work after compression: seal (with encryption), frame header, frame CRC."""
        cipher = self.cipher
        # frame_ad(n) is this digest plus the index: hash the identity once, not per frame.
        ad_prefix = blake3.blake3(self.header.identity()).digest()

        def seal(n: int, comp: bytes, raw_len: int) -> _Encoded:
            if cipher is None:
                return _Encoded(_FRAME.pack(len(comp), raw_len, crc32c.crc32c(comp)) + comp, None, raw_len)
            stored = cipher.seal(comp, ad_prefix + struct.pack(">I", n))
            return _Encoded(_FRAME.pack(len(stored), raw_len, crc32c.crc32c(stored)) + stored, comp, raw_len)

        return seal

    def _ordered(
        self, items: Iterable[_T], encode: Callable[[int, _T], _Encoded]
    ) -> Generator[_Encoded, None, None]:
        """``encode(index, item)`` for each item, in order; on ``workers`` threads when more than one."""
        if self.workers == 1:
            for n, item in enumerate(items):
                yield encode(n, item)
            return
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="bakelite-encode")
        pending: collections.deque[Future[_Encoded]] = collections.deque()
        try:
            source = enumerate(items)
            more = True
            while True:
                # Top up the window before waiting, so the workers never wait on the consumer.
                while more and len(pending) < self.window:
                    nxt = next(source, None)
                    if nxt is None:
                        more = False
                    else:
                        pending.append(pool.submit(encode, *nxt))
                if not pending:
                    return
                yield pending.popleft().result()
        finally:
            # On an error (ours, the input's or the consumer's) drop queued frames and let the
            # running ones finish, so no thread outlives the object.
            for f in pending:
                f.cancel()
            pool.shutdown(wait=True)

    def _encode(self, frames: Generator[_Encoded, None, None]) -> Iterator[bytes]:
        crc = 0
        plain_h = blake3.blake3()
        stored_h = blake3.blake3() if self.cipher else plain_h
        header = json.dumps(self.header.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        first = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)) + header
        crc = crc32c.crc32c(first, crc)
        self.size = len(first)
        yield first
        n = raw_total = stored_total = 0
        # Closed explicitly, so an abandoned or failed write stops the encoding threads now.
        with contextlib.closing(frames):
            for record, comp, raw_len in frames:
                stored = memoryview(record)[_FRAME.size :]
                if comp is None:
                    plain_h.update(stored)
                else:
                    plain_h.update(comp)
                    stored_h.update(stored)
                # The running CRC over the header then the stored bytes is the CRC over the record.
                crc = crc32c.crc32c(record, crc)
                n += 1
                raw_total += raw_len
                stored_total += len(stored)
                self.size += len(record)
                yield record
        content = self.header.content_hash(plain_h.digest())
        seal = None
        if self.cipher is not None:
            seal = self.cipher.seal(b"", self.header.footer_ad(n, raw_total, content)).hex()
        footer = ObjectFooter(
            frames=n,
            raw_bytes=raw_total,
            payload_bytes=stored_total,
            payload_blake3=stored_h.hexdigest(),
            hash=content,
            seal=seal,
        )
        fbytes = json.dumps(footer.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        tail = _END + fbytes + struct.pack(">I", len(fbytes))
        crc = crc32c.crc32c(tail, crc)
        tail += struct.pack(">I", crc)
        self.size += len(tail)
        self.footer = footer
        yield tail


def encode_object(
    header: ObjectHeader, raw_frames: Iterable[bytes | memoryview], cipher: FrameCipher | None = None
) -> tuple[bytes, ObjectFooter]:
    """Encode a whole object in memory; returns its bytes and footer."""
    w = ObjectWriter(header, cipher)
    data = b"".join(w.chunks(raw_frames))
    assert w.footer is not None
    return data, w.footer


def read_version(prefix: bytes, name: str = "object") -> int:
    """Check magic and version of an object's first bytes; return the version."""
    if len(prefix) < _PREFIX.size:
        raise CorruptionError(f"{name}: truncated (only {len(prefix)} bytes)")
    magic, version, _ = _PREFIX.unpack_from(prefix)
    if magic != MAGIC:
        raise CorruptionError(f"{name}: not a bakelite object (bad magic {magic!r})")
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"{name} was written by replica format {version}; this build reads format {FORMAT_VERSION}",
            hint="upgrade bakelite to restore this replica",
        )
    if version < 1:
        raise CorruptionError(f"{name}: invalid format version {version}")
    return int(version)


class ObjectReader:
    """Streams and verifies one object: header first, then frames, then footer and CRC.

    ``frames()`` yields decompressed plaintext frames, each checked (frame CRC, and AEAD when
    encrypted) before it is yielded; the whole-object CRC, payload BLAKE3 and content hash are
    checked when the last frame has been read, before ``frames()`` returns.
    """

    def __init__(
        self,
        stream: BinaryIO,
        name: str = "object",
        cipher: FrameCipher | None = None,
        require_encrypted: bool = False,
    ) -> None:
        self.stream = stream
        self.name = name
        self.cipher = cipher
        self._crc = 0
        prefix = self._read(_PREFIX.size)
        read_version(prefix, name)
        _, _, hlen = _PREFIX.unpack(prefix)
        if hlen > MAX_HEADER:
            raise CorruptionError(f"{name}: header length {hlen} is implausible")
        hbytes = self._read(hlen)
        try:
            hdict = json.loads(hbytes)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CorruptionError(f"{name}: header is not valid JSON ({e})") from e
        if not isinstance(hdict, dict):
            raise CorruptionError(f"{name}: header is not a JSON object")
        self.header = ObjectHeader.from_dict(hdict)
        if self.header.encrypted and cipher is None:
            raise EncryptionError(
                f"{name} is encrypted and no encryption key is configured",
                hint="set key_file / passphrase in [encryption] or BAKELITE_KEY_FILE",
            )
        if not self.header.encrypted and require_encrypted:
            raise EncryptionError(
                f"{name} is not encrypted but require_encrypted is on",
                hint="a plaintext object in an encrypted replica may be a substitution; "
                "set require_encrypted = false only while migrating a plaintext replica",
            )
        if self.header.encrypted and cipher is not None:
            have = cipher_key_id(cipher)
            if self.header.key_id is not None and have is not None and self.header.key_id != have:
                raise EncryptionError(
                    f"cannot decrypt {name}: it was encrypted with another key "
                    f"(key id {self.header.key_id}; the configured key's id is {have})",
                    hint="configure the key this replica was written with; after a rotation, "
                    "`bakelite reencrypt --old-key-file` rewrites old objects under the new key",
                )
        self.footer: ObjectFooter | None = None

    def _read(self, n: int) -> bytes:
        data = self.stream.read(n)
        if len(data) != n:
            raise CorruptionError(f"{self.name}: truncated (wanted {n} more bytes, got {len(data)})")
        self._crc = crc32c.crc32c(data, self._crc)
        return bytes(data)

    def frames(self) -> Iterator[bytes]:
        """Yield each verified, decompressed frame; verify the footer after the last."""
        codec = self.header.codec
        for comp, raw_len in self.compressed_frames():
            yield codecs.decompress(comp, codec, raw_len)

    def compressed_frames(self) -> Iterator[tuple[bytes, int]]:
        """Yield each verified ``(compressed frame, raw length)``; verify the footer after the last."""
        h = self.header
        plain_h = blake3.blake3()
        stored_h = blake3.blake3() if h.encrypted else plain_h
        n = raw_total = stored_total = 0
        while (lengths := self._frame_lengths(n)) is not None:
            stored_len, raw_len, fcrc = lengths
            stored = self._read(stored_len)
            comp = self._check_frame(n, stored, fcrc)
            if h.encrypted:
                stored_h.update(stored)
            plain_h.update(comp)
            n += 1
            raw_total += raw_len
            stored_total += stored_len
            yield comp, raw_len
        self._finish(n, raw_total, stored_total, stored_h.hexdigest(), plain_h.digest())

    def frames_concurrent(
        self, executor: Executor, window: int, window_bytes: int
    ) -> Generator[bytes, None, None]:
        """Like ``frames()``, with each frame's CRC check, decryption and decompression on ``executor``.

        Frames are read, hashed and yielded in stream order, and the first failure in stream order
        is the one raised, as with ``frames()``; the footer is verified after the last frame.  At
        most ``window`` frames, and ``window_bytes`` of stored plus raw bytes (at least one frame
        whatever its size), are read but not yet yielded.  Closing the iterator early cancels the
        frames not yet started.
        """
        h = self.header
        codec = h.codec
        plain_h = blake3.blake3()
        stored_h = blake3.blake3() if h.encrypted else plain_h
        pending: collections.deque[tuple[Future[tuple[bytes, bytes]], int]] = collections.deque()
        in_flight = n = raw_total = stored_total = 0

        def decode(index: int, stored: bytes, raw_len: int, fcrc: int) -> tuple[bytes, bytes]:
            comp = self._check_frame(index, stored, fcrc)
            return comp, codecs.decompress(comp, codec, raw_len)

        def take() -> bytes:
            nonlocal in_flight
            future, cost = pending.popleft()
            comp, raw = future.result()
            # The plaintext digest needs the frames in order, so it is fed here, not by the workers.
            plain_h.update(comp)
            in_flight -= cost
            return raw

        def drain() -> Iterator[bytes]:
            while pending:
                yield take()

        try:
            while True:
                try:
                    lengths = self._frame_lengths(n)
                except Exception:
                    # A frame read earlier may have failed first: raise what frames() would have.
                    yield from drain()
                    raise
                if lengths is None:
                    break
                stored_len, raw_len, fcrc = lengths
                cost = stored_len + raw_len
                # Make room before reading the frame's bytes, so memory stays within the window.
                while pending and (len(pending) >= window or in_flight + cost > window_bytes):
                    yield take()
                try:
                    stored = self._read(stored_len)
                except Exception:
                    yield from drain()
                    raise
                if h.encrypted:
                    stored_h.update(stored)
                pending.append((executor.submit(decode, n, stored, raw_len, fcrc), cost))
                in_flight += cost
                n += 1
                raw_total += raw_len
                stored_total += stored_len
            yield from drain()
        finally:
            # Abandoned or failed: nobody will use the frames still queued.
            for future, _ in pending:
                future.cancel()
        self._finish(n, raw_total, stored_total, stored_h.hexdigest(), plain_h.digest())

    def _frame_lengths(self, n: int) -> tuple[int, int, int] | None:
        """Read frame ``n``'s header: ``(stored_len, raw_len, crc)``, or ``None`` at the end marker."""
        stored_len, raw_len, fcrc = _FRAME.unpack(self._read(_FRAME.size))
        if stored_len == 0 and raw_len == 0 and fcrc == 0:
            return None
        if stored_len > MAX_FRAME or raw_len > MAX_FRAME:
            raise CorruptionError(f"{self.name}: frame {n} length is implausible")
        return stored_len, raw_len, fcrc

    def _check_frame(self, n: int, stored: bytes, fcrc: int) -> bytes:
        """Check frame ``n``'s CRC-32C and open it if sealed: its compressed plaintext (thread-safe)."""
        if crc32c.crc32c(stored) != fcrc:
            raise CorruptionError(f"{self.name}: frame {n} fails its CRC-32C")
        if self.header.encrypted:
            return self._open(stored, self.header.frame_ad(n), f"frame {n}")
        return stored

    def _open(self, sealed: bytes, ad: bytes, what: str) -> bytes:
        """Open one sealed part; a failure names decryption, and tampering when the key id matched."""
        assert self.cipher is not None
        try:
            return self.cipher.open(sealed, ad)
        except EncryptionError as e:
            if e.hint is not None:
                raise  # the cipher cannot be used at all (no key), and says what to do
            if self.header.key_id is not None and self.header.key_id == cipher_key_id(self.cipher):
                # The right key: the bytes were altered, or the object was moved or truncated.
                raise CorruptionError(
                    f"{self.name}: {what} fails decryption (authentication failed under the right key)",
                    detail="the object was altered, truncated, or moved from another position or database",
                    hint="restore from another backup or destination",
                ) from e
            raise EncryptionError(
                f"cannot decrypt {self.name}: {what} fails authentication",
                detail="wrong key, or the object was altered or moved",
                hint="check the configured key (key_file / passphrase / BAKELITE_KEY*)",
            ) from e

    def _finish(self, n: int, raw_total: int, stored_total: int, stored_hex: str, plain: bytes) -> None:
        # Read the footer length from the end: footer bytes, then its length, then the CRC.
        rest = self.stream.read()
        if len(rest) < _TAIL.size:
            raise CorruptionError(f"{self.name}: truncated footer")
        body, (flen, crc) = rest[: -_TAIL.size], _TAIL.unpack(rest[-_TAIL.size :])
        if flen != len(body):
            raise CorruptionError(f"{self.name}: footer length mismatch (trailing or missing bytes)")
        self._crc = crc32c.crc32c(rest[:-4], self._crc)
        if self._crc != crc:
            raise CorruptionError(f"{self.name}: object fails its CRC-32C")
        try:
            fdict = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CorruptionError(f"{self.name}: footer is not valid JSON ({e})") from e
        if not isinstance(fdict, dict):
            raise CorruptionError(f"{self.name}: footer is not a JSON object")
        footer = ObjectFooter.from_dict(fdict)
        if (footer.frames, footer.raw_bytes, footer.payload_bytes) != (n, raw_total, stored_total):
            raise CorruptionError(f"{self.name}: footer does not match its frames")
        if footer.payload_blake3 != stored_hex:
            raise CorruptionError(f"{self.name}: payload BLAKE3 mismatch")
        if self.header.encrypted and self.cipher is not None:
            # Authenticates the frame count and content hash: trailing frames cannot be dropped.
            if footer.seal is None:
                raise CorruptionError(f"{self.name}: the footer of an encrypted object is not sealed")
            try:
                tag = bytes.fromhex(footer.seal)
            except ValueError as e:
                raise CorruptionError(f"{self.name}: malformed footer seal") from e
            if self._open(tag, self.header.footer_ad(n, raw_total, footer.hash), "the footer") != b"":
                raise CorruptionError(f"{self.name}: the footer seal holds unexpected data")
        if footer.hash != self.header.content_hash(plain):
            raise CorruptionError(f"{self.name}: content hash mismatch")
        self.footer = footer


def decode_object(
    data: bytes,
    name: str = "object",
    cipher: FrameCipher | None = None,
    require_encrypted: bool = False,
) -> tuple[ObjectHeader, list[bytes], ObjectFooter]:
    """Decode and fully verify an in-memory object."""
    reader = ObjectReader(io.BytesIO(data), name, cipher, require_encrypted)
    frames = list(reader.frames())
    assert reader.footer is not None
    return reader.header, frames, reader.footer


def peek_header(data: bytes, name: str = "object") -> ObjectHeader:
    """Parse only the header of an object's first bytes (no integrity check)."""
    read_version(data, name)
    _, _, hlen = _PREFIX.unpack_from(data)
    try:
        return ObjectHeader.from_dict(json.loads(data[_PREFIX.size : _PREFIX.size + hlen]))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptionError(f"{name}: header is not valid JSON ({e})") from e
