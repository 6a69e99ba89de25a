"""Encryption keys: the ``BAKELITE-KEY-V1`` format, key and passphrase files, Argon2id, ``cipher_for``.

A key is 32 random bytes, written as ``BAKELITE-KEY-V1-`` followed by the RFC 4648 base32 (no
padding) of the key and a 4-byte BLAKE3 checksum, so a mistyped or truncated key is caught when it
is read instead of failing later as "wrong key".

Passphrase mode derives the key with Argon2id.  Its salt and costs live in the replica, in the
cleartext ``<db>/KEYPARAMS`` object, so a recovery host needs only the passphrase; the object also
records the derived key's id, which tells a mistyped passphrase from the right one before anything is
written or read.  KEYPARAMS holds no secret: anyone who can read it could equally test guesses
against any encrypted object, and only the passphrase's strength and Argon2id's cost stand in the way.

``cipher_for(db)`` builds the cipher of a configured database: the key is loaded once, a passphrase
is derived once per (passphrase, salt, costs) per process, and both are cached.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import stat as stat_mod
import threading
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import blake3
from argon2.low_level import Type, hash_secret_raw

from bakelite.config.model import Database, Encryption
from bakelite.crypto.aead import KEY_BYTES, XChaCha20Poly1305, key_id
from bakelite.errors import BakeliteError, EncryptionError, FormatVersionError, ObjectNotFound
from bakelite.format import layout
from bakelite.format.envelope import FrameCipher, ObjectReader
from bakelite.storage.base import Storage

logger = logging.getLogger(__name__)

KEY_PREFIX = "BAKELITE-KEY-V1-"
_FAMILY = "BAKELITE-KEY-"
_CHECKSUM_BYTES = 4
_CHECKSUM_CONTEXT = b"bakelite key checksum v1"
_B32_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
KEY_TEXT_CHARS = len(base64.b32encode(bytes(KEY_BYTES + _CHECKSUM_BYTES)).rstrip(b"="))

# Argon2id costs for new KEYPARAMS: RFC 9106's second recommended option (64 MiB, 3 passes, 4 lanes),
# about a quarter of a second on one core.  Stored with the salt, so raising them later keeps old
# replicas readable.
ARGON2_TIME_COST = 3
ARGON2_MEMORY_KIB = 64 * 1024
ARGON2_PARALLELISM = 4
SALT_BYTES = 16
# What a KEYPARAMS object may ask for (it comes from the backend: bound the memory it can make us use).
_MAX_TIME_COST = 64
_MAX_MEMORY_KIB = 4 * 1024 * 1024
_MAX_PARALLELISM = 64
KEYPARAMS_FORMAT = "bakelite-keyparams"
KEYPARAMS_VERSION = 1

_lock = threading.Lock()
_derive_lock = threading.Lock()
_key_file_cache: dict[tuple[str, int, int, int], bytes] = {}
_derived: dict[tuple[bytes, bytes, int, int, int], bytes] = {}
# Per passphrase (by digest): the parameters last used, reused when creating KEYPARAMS for another
# database so a daemon with many databases sharing one passphrase derives its key once.
_preferred: dict[bytes, KdfParams] = {}
_warned_modes: set[str] = set()


# -- the key format -----------------------------------------------------------------------------


def _checksum(key: bytes) -> bytes:
    return blake3.blake3(_CHECKSUM_CONTEXT + key).digest(length=_CHECKSUM_BYTES)


def generate_key() -> bytes:
    """32 fresh random bytes from the operating system's CSPRNG."""
    return os.urandom(KEY_BYTES)


def format_key(key: bytes) -> str:
    """The ``BAKELITE-KEY-V1-…`` text of ``key``."""
    if len(key) != KEY_BYTES:
        raise ValueError(f"a key is {KEY_BYTES} bytes, not {len(key)}")
    return KEY_PREFIX + base64.b32encode(key + _checksum(key)).decode("ascii").rstrip("=")


def parse_key(text: str, source: str = "the key") -> bytes:
    """The 32 key bytes of a ``BAKELITE-KEY-V1-…`` text; EncryptionError (never echoing it) if malformed."""
    compact = "".join(text.split()).upper()
    if not compact.startswith(_FAMILY):
        raise EncryptionError(
            f"{source} is not a bakelite key (it should start with {KEY_PREFIX})",
            hint="generate one with `bakelite keygen`",
        )
    if not compact.startswith(KEY_PREFIX):
        version = compact[len(_FAMILY) :].split("-", 1)[0][:8]
        raise EncryptionError(
            f"{source} is a {_FAMILY}{version} key; this build reads {KEY_PREFIX.rstrip('-')} keys",
            hint="upgrade bakelite to read it",
        )
    body = compact[len(KEY_PREFIX) :].rstrip("=")
    bad = [i for i, c in enumerate(body) if c not in _B32_ALPHABET]
    if bad:
        raise EncryptionError(
            f"{source} is mistyped: character {bad[0] + 1} after the prefix is not a key character",
            detail=f"{len(bad)} such character(s); a key uses only A-Z and 2-7",
            hint="copy the key again from your off-host copy",
        )
    if len(body) != KEY_TEXT_CHARS:
        raise EncryptionError(
            f"{source} is mistyped: it has {len(body)} characters after the prefix, "
            f"a key has {KEY_TEXT_CHARS}",
            hint="copy the whole key again from your off-host copy",
        )
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except binascii.Error as e:
        raise EncryptionError(f"{source} is mistyped: it does not decode") from e
    key, check = raw[:KEY_BYTES], raw[KEY_BYTES:]
    if check != _checksum(key):
        raise EncryptionError(
            f"{source} fails its checksum: the key is mistyped or damaged",
            hint="copy the key again from your off-host copy",
        )
    return key


# -- files --------------------------------------------------------------------------------------


def _warn_if_shared(path: Path, st: os.stat_result, what: str) -> None:
    """Warn (once per path) when a secret file is accessible to its group or to others."""
    mode = stat_mod.S_IMODE(st.st_mode)
    if mode & 0o077 and str(path) not in _warned_modes:
        _warned_modes.add(str(path))
        logger.warning(
            "%s %s is accessible by group or others (mode %04o); restrict it: chmod 600 %s",
            what,
            path,
            mode,
            path,
            extra={"path": str(path)},
        )


def _read_secret_file(path: Path, what: str, setting: str) -> tuple[str, os.stat_result]:
    try:
        with open(path, encoding="utf-8") as f:
            st = os.fstat(f.fileno())
            if not stat_mod.S_ISREG(st.st_mode):
                raise EncryptionError(f"{what} {path} is not a regular file")
            return f.read(), st
    except FileNotFoundError as e:
        raise EncryptionError(
            f"{what} {path} not found",
            hint=f"check {setting}; keep the key's off-host copy at hand",
        ) from e
    except PermissionError as e:
        raise EncryptionError(
            f"cannot read {what} {path}: permission denied",
            hint="run as the user the file belongs to (e.g. with sudo), or fix its owner",
        ) from e
    except UnicodeDecodeError as e:
        raise EncryptionError(f"{what} {path} is not UTF-8 text") from e
    except IsADirectoryError as e:
        raise EncryptionError(f"{what} {path} is a directory") from e
    except OSError as e:
        raise EncryptionError(f"cannot read {what} {path}: {e.strerror or type(e).__name__}") from e


def _first_line(text: str) -> str | None:
    """The first line that is neither blank nor a ``#`` comment, stripped."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return stripped
    return None


def read_key_file(path: Path) -> bytes:
    """The key in a key file (its first non-blank, non-``#`` line); warns when group/other can read it."""
    path = Path(path).expanduser()
    text, st = _read_secret_file(path, "key file", "key_file / BAKELITE_KEY_FILE")
    _warn_if_shared(path, st, "key file")
    cache_key = (os.path.abspath(path), st.st_ino, st.st_mtime_ns, st.st_size)
    with _lock:
        cached = _key_file_cache.get(cache_key)
    if cached is not None:
        return cached
    line = _first_line(text)
    if line is None:
        raise EncryptionError(
            f"key file {path} holds no key", hint="write one with `bakelite keygen --output`"
        )
    key = parse_key(line, f"key file {path}")
    with _lock:
        _key_file_cache[cache_key] = key
    return key


def write_key_file(path: Path, key_text: str) -> None:
    """Create ``path`` (mode 0600, never replacing a file) holding ``key_text`` and a newline, durably."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        data = (key_text + "\n").encode("ascii")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            logger.warning("could not remove the partly written key file %s", path)
        raise
    os.close(fd)
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_passphrase_file(path: Path) -> str:
    """The passphrase in a file: its first line that is neither blank nor a ``#`` comment."""
    path = Path(path).expanduser()
    text, st = _read_secret_file(path, "passphrase file", "passphrase_file / BAKELITE_PASSPHRASE_FILE")
    _warn_if_shared(path, st, "passphrase file")
    line = _first_line(text)
    if line is None:
        raise EncryptionError(
            f"passphrase file {path} holds no passphrase",
            detail="every line is blank or a # comment",
        )
    return line


def normalize_passphrase(passphrase: str) -> bytes:
    """The bytes a passphrase is derived from: surrounding whitespace dropped, Unicode NFC, UTF-8."""
    text = unicodedata.normalize("NFC", passphrase.strip())
    if not text:
        raise EncryptionError("the passphrase is empty")
    return text.encode("utf-8")


# -- key sources --------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeySource:
    """What an ``[encryption]`` block yields: a key, or a passphrase still to be derived."""

    kind: Literal["key", "passphrase"]
    secret: bytes = field(repr=False)
    origin: str  # where it came from, for messages (never the secret itself)


def key_source(enc: Encryption) -> KeySource:
    """Load the block's one key source (reads the key or passphrase file)."""
    if enc.key is not None:
        return KeySource("key", parse_key(enc.key, "the key in BAKELITE_KEY"), "BAKELITE_KEY")
    if enc.key_file is not None:
        return KeySource("key", read_key_file(enc.key_file), f"key file {enc.key_file}")
    if enc.passphrase is not None:
        return KeySource("passphrase", normalize_passphrase(enc.passphrase), "passphrase")
    if enc.passphrase_file is not None:
        text = read_passphrase_file(enc.passphrase_file)
        return KeySource("passphrase", normalize_passphrase(text), f"passphrase file {enc.passphrase_file}")
    raise EncryptionError(
        "the encryption block names no key source",
        hint="set key_file, passphrase or passphrase_file (or BAKELITE_KEY_FILE / BAKELITE_PASSPHRASE)",
    )


# -- Argon2id and KEYPARAMS ---------------------------------------------------------------------


@dataclass(frozen=True)
class KdfParams:
    """Argon2id salt and costs of a replica, and the id of the key its passphrase derives."""

    salt: bytes
    time_cost: int = ARGON2_TIME_COST
    memory_kib: int = ARGON2_MEMORY_KIB
    parallelism: int = ARGON2_PARALLELISM
    key_id: str | None = None
    created: float = 0.0

    def to_json(self) -> bytes:
        """The KEYPARAMS object's bytes."""
        doc: dict[str, Any] = {
            "format": KEYPARAMS_FORMAT,
            "version": KEYPARAMS_VERSION,
            "kdf": "argon2id",
            "salt": self.salt.hex(),
            "time_cost": self.time_cost,
            "memory_kib": self.memory_kib,
            "parallelism": self.parallelism,
            "key_id": self.key_id,
            "created": self.created,
        }
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> KdfParams:
        """Parse and bound-check a KEYPARAMS object (it comes from the backend, so trust nothing)."""
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.get("format") != KEYPARAMS_FORMAT:
                raise ValueError("not a bakelite KEYPARAMS object")
            version = int(doc["version"])
            if version > KEYPARAMS_VERSION:
                raise FormatVersionError(
                    f"{where} was written by KEYPARAMS format {version}; "
                    f"this build reads {KEYPARAMS_VERSION}",
                    hint="upgrade bakelite to restore this replica",
                )
            if doc.get("kdf") != "argon2id":
                raise ValueError(f"unknown kdf {doc.get('kdf')!r}")
            kid = doc.get("key_id")
            params = cls(
                salt=bytes.fromhex(str(doc["salt"])),
                time_cost=int(doc["time_cost"]),
                memory_kib=int(doc["memory_kib"]),
                parallelism=int(doc["parallelism"]),
                key_id=None if kid is None else str(kid),
                created=float(doc.get("created", 0.0)),
            )
        except BakeliteError:
            raise
        except (ValueError, KeyError, TypeError) as e:
            raise EncryptionError(
                f"{where} is malformed: {e}", hint="restore it from another destination"
            ) from e
        if not (
            16 <= len(params.salt) <= 64
            and 1 <= params.time_cost <= _MAX_TIME_COST
            and 1 <= params.parallelism <= _MAX_PARALLELISM
            and 8 * params.parallelism <= params.memory_kib <= _MAX_MEMORY_KIB
        ):
            raise EncryptionError(
                f"{where} asks for implausible Argon2id parameters",
                detail=f"t={params.time_cost} m={params.memory_kib}KiB p={params.parallelism} "
                f"salt={len(params.salt)} bytes",
            )
        return params

    def describe(self) -> str:
        """``argon2id t=3 m=65536KiB p=4``."""
        return f"argon2id t={self.time_cost} m={self.memory_kib}KiB p={self.parallelism}"


def _digest(passphrase: bytes) -> bytes:
    return blake3.blake3(b"bakelite passphrase cache\0" + passphrase).digest()


def derive_key(passphrase: bytes, params: KdfParams) -> bytes:
    """Argon2id of ``passphrase`` under ``params`` (computed once per process, then cached)."""
    cache_key = (_digest(passphrase), params.salt, params.time_cost, params.memory_kib, params.parallelism)
    # One derivation at a time: concurrent callers for the same passphrase wait and hit the cache.
    with _derive_lock:
        with _lock:
            cached = _derived.get(cache_key)
        if cached is not None:
            return cached
        started = time.monotonic()
        key = bytes(
            hash_secret_raw(
                passphrase,
                params.salt,
                params.time_cost,
                params.memory_kib,
                params.parallelism,
                KEY_BYTES,
                Type.ID,
            )
        )
        with _lock:
            _derived[cache_key] = key
            _preferred[cache_key[0]] = replace(params, key_id=key_id(key))
    logger.debug("derived a passphrase key (%s) in %.2fs", params.describe(), time.monotonic() - started)
    return key


def new_keyparams(passphrase: bytes) -> KdfParams:
    """Parameters for a replica without KEYPARAMS: this process's ones for the passphrase, else fresh."""
    with _lock:
        known = _preferred.get(_digest(passphrase))
    if known is not None:
        return replace(known, created=time.time())
    return KdfParams(
        salt=os.urandom(SALT_BYTES),
        time_cost=ARGON2_TIME_COST,
        memory_kib=ARGON2_MEMORY_KIB,
        parallelism=ARGON2_PARALLELISM,
        created=time.time(),
    )


def read_keyparams(storages: Sequence[Storage], db: str) -> KdfParams | None:
    """The replica's KEYPARAMS from the first destination that has it, or None if none has."""
    key = layout.keyparams_key(db)
    for storage in storages:
        try:
            data = storage.get(key)
        except ObjectNotFound:
            continue
        return KdfParams.from_json(data, f"{key} on {storage.describe()}")
    return None


def _find_keyparams(storages: Sequence[Storage], db: str) -> tuple[KdfParams | None, list[Storage]]:
    """KEYPARAMS from the first destination holding it, and the destinations that lack it."""
    key = layout.keyparams_key(db)
    found: KdfParams | None = None
    missing: list[Storage] = []
    for storage in storages:
        if found is not None:
            if storage.stat(key) is None:
                missing.append(storage)
            continue
        try:
            data = storage.get(key)
        except ObjectNotFound:
            missing.append(storage)
            continue
        found = KdfParams.from_json(data, f"{key} on {storage.describe()}")
    return found, missing


def write_keyparams(storages: Sequence[Storage], db: str, params: KdfParams) -> None:
    """Store KEYPARAMS on every destination (atomic put; it holds no secret)."""
    data = params.to_json()
    for storage in storages:
        storage.put(layout.keyparams_key(db), data)
    logger.info(
        "%s: wrote KEYPARAMS (%s, key id %s)",
        db,
        params.describe(),
        params.key_id,
        extra={"db": db},
    )


def check_passphrase(db: str, key: bytes, params: KdfParams, origin: str) -> None:
    """EncryptionError unless ``key`` is the one KEYPARAMS records (a mistyped passphrase)."""
    have = key_id(key)
    if params.key_id is not None and have != params.key_id:
        raise EncryptionError(
            f"the {origin} does not match the one {db!r} is encrypted with",
            detail=f"{layout.keyparams_key(db)} records key id {params.key_id}; this passphrase gives {have}",
            hint="check the passphrase; to change it, run `bakelite reencrypt --old-passphrase-file OLD` "
            "with the old one",
        )


# -- ciphers ------------------------------------------------------------------------------------


class MissingKeyParams:
    """Stands in for a passphrase cipher when the replica has no KEYPARAMS: fails when used."""

    key_id: str | None = None

    def __init__(self, db: str) -> None:
        self.db = db

    def _error(self) -> EncryptionError:
        return EncryptionError(
            f"cannot decrypt {self.db!r}: its replica has no KEYPARAMS, so no key can be derived "
            "from the passphrase",
            hint="it was not encrypted in passphrase mode: configure the key_file it was written with "
            "(or restore KEYPARAMS from another destination)",
        )

    def seal(self, plaintext: bytes, ad: bytes) -> bytes:
        """Refuse: there are no parameters to derive a key with."""
        raise self._error()

    def open(self, ciphertext: bytes, ad: bytes) -> bytes:
        """Refuse: there are no parameters to derive a key with."""
        raise self._error()


def cipher_from_key(key: bytes) -> XChaCha20Poly1305:
    """The cipher of a raw 32-byte key."""
    return XChaCha20Poly1305(key)


def passphrase_cipher(
    db: str, passphrase: bytes, storages: Sequence[Storage], *, create: bool, origin: str = "passphrase"
) -> FrameCipher:
    """The cipher a passphrase gives for ``db``, reading (or with ``create``, first writing) KEYPARAMS."""
    params, missing = _find_keyparams(storages, db)
    if params is not None and create and missing:
        # A destination added later: give it KEYPARAMS too, so it restores on its own.
        write_keyparams(missing, db, params)
    if params is None:
        if not create:
            return MissingKeyParams(db)
        params = new_keyparams(passphrase)
        key = derive_key(passphrase, params)
        params = replace(params, key_id=key_id(key))
        write_keyparams(storages, db, params)
        return XChaCha20Poly1305(key)
    key = derive_key(passphrase, params)
    check_passphrase(db, key, params, origin)
    return XChaCha20Poly1305(key)


def cipher_for(
    db: Database, storages: Sequence[Storage] | None = None, *, create: bool = True
) -> FrameCipher | None:
    """The cipher of a configured database (None when unencrypted).

    A key file or inline key is loaded once.  In passphrase mode the key is derived once per process
    from the replica's KEYPARAMS, read from ``storages`` (default: the database's sync destinations);
    ``create`` writes KEYPARAMS when the replica has none (the daemon, reencrypt), while read-only
    commands pass ``create=False`` and get a cipher that fails only if it is actually needed.
    """
    enc = db.encryption
    if enc is None:
        return None
    source = key_source(enc)
    if source.kind == "key":
        return cipher_from_key(source.secret)
    if storages is not None:
        return passphrase_cipher(db.name, source.secret, storages, create=create, origin=source.origin)
    own = open_destinations(db)
    try:
        return passphrase_cipher(db.name, source.secret, own, create=create, origin=source.origin)
    finally:
        for storage in own:
            storage.close()


class LazyCipher:
    """A ``FrameCipher`` built on first use, so a command that turns out to be a no-op needs no key."""

    def __init__(self, build: Callable[[], FrameCipher]) -> None:
        self._build = build
        self._cipher: FrameCipher | None = None
        self._lock = threading.Lock()

    def _get(self) -> FrameCipher:
        with self._lock:
            if self._cipher is None:
                self._cipher = self._build()
            return self._cipher

    @property
    def key_id(self) -> str | None:
        """The underlying cipher's key id (loads or derives the key)."""
        kid = getattr(self._get(), "key_id", None)
        return kid if isinstance(kid, str) else None

    def seal(self, plaintext: bytes, ad: bytes) -> bytes:
        """Seal with the underlying cipher."""
        return self._get().seal(plaintext, ad)

    def open(self, ciphertext: bytes, ad: bytes) -> bytes:
        """Open with the underlying cipher."""
        return self._get().open(ciphertext, ad)


def lazy_cipher_for(db: Database, storages: Sequence[Storage]) -> FrameCipher | None:
    """``cipher_for(db, storages, create=False)``, deferred until an encrypted object is met."""
    if db.encryption is None:
        return None

    def build() -> FrameCipher:
        cipher = cipher_for(db, storages, create=False)
        assert cipher is not None
        return cipher

    return LazyCipher(build)


def open_destinations(db: Database, *, sync_only: bool = True) -> list[Storage]:
    """The database's destinations (sync ones by default), each with retries of transient errors."""
    from bakelite.storage.registry import open_storage
    from bakelite.storage.retry import RetryingStorage

    backends = db.sync_backends if sync_only and db.sync_backends else db.backends
    return [RetryingStorage(open_storage(b)) for b in backends]


def probe_key(db: Database, storage: Storage, key: str) -> str:
    """Load ``db``'s key and decrypt the first frame of the object at ``key``; a one-line verdict.

    For ``doctor``: raises EncryptionError (key missing, mistyped, wrong passphrase, sealed with
    another key) or CorruptionError; never creates KEYPARAMS and reads only the object's first frame.
    """
    enc = db.encryption
    if enc is None:
        return "not configured: the replica is stored in plaintext"
    cipher = cipher_for(db, [storage], create=False)
    stream = storage.open(key)
    try:
        reader = ObjectReader(stream, key, cipher, require_encrypted=enc.require_encrypted)
        if not reader.header.encrypted:
            return f"the key loads ({describe_cipher(cipher)}); {key} is still plaintext (migration)"
        next(iter(reader.frames()), None)
    finally:
        stream.close()
    return f"{describe_cipher(cipher)} decrypts {key}"


def describe_cipher(cipher: FrameCipher | None) -> str:
    """``plaintext`` or ``key <id>``, for reports and messages."""
    if cipher is None:
        return "plaintext"
    kid = getattr(cipher, "key_id", None)
    return f"key {kid}" if isinstance(kid, str) else "key (unknown id)"
