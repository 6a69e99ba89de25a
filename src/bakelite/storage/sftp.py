"""The SFTP backend, on paramiko: objects as files under a directory of an SSH host.

Host keys are checked against ``known_hosts`` (the config's, else ``~/.ssh/known_hosts``); an
unknown or changed key is a permanent error with the fix in its hint, unless
``insecure_skip_host_key_check`` is set.  Authentication, first that applies: ``identity_file``
(passphrase from ``passphrase_env``, else ``BAKELITE_SFTP_KEY_PASSPHRASE``), then a password from
``password_env``, else ``BAKELITE_SFTP_PASSWORD``, else the inline ``password``.

Writes go to ``.tmp~<random>`` beside the target (``~`` is never in a key, so a temp file is never
listed), are fsynced where the server supports ``fsync@openssh.com``, and are moved over the target
with ``posix-rename@openssh.com``, which replaces atomically (plain SFTP rename refuses to).

Connections come from a small pool: a long snapshot upload holds one while change-sets go through
another.  A connection that fails is closed and never reused, so the next call reconnects.
"""

from __future__ import annotations

import builtins
import errno
import functools
import getpass
import io
import logging
import os
import posixpath
import secrets
import stat as stat_mod
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from bakelite.config.model import SFTPBackend
from bakelite.errors import (
    BackendError,
    BakeliteError,
    ConfigError,
    NotAvailableError,
    ObjectNotFound,
    PermanentBackendError,
    TransientBackendError,
)
from bakelite.storage.base import ObjectInfo, validate_key, validate_prefix

logger = logging.getLogger(__name__)

T = TypeVar("T")

INSTALL_HINT = "pip install 'bakelite[sftp]'"
PASSWORD_VARIABLE = "BAKELITE_SFTP_PASSWORD"
PASSPHRASE_VARIABLE = "BAKELITE_SFTP_KEY_PASSPHRASE"
_TMP_PREFIX = ".tmp~"
# Idle connections kept for reuse; more are opened on demand and closed when returned.
POOL_SIZE = 4
WRITE_SIZE = 1024 * 1024
# Tries at making the temp file's directory and opening it while deletes prune directories.
_CREATE_ATTEMPTS = 10
KEEPALIVE = 30  # seconds
# Outstanding read requests while streaming a file: 64 x 32 KiB in flight keeps the link busy
# without buffering a whole snapshot in memory.
PREFETCH_REQUESTS = 64


def _sdk() -> Any:
    """The paramiko module, or the install hint."""
    try:
        import paramiko
    except ImportError as e:
        raise NotAvailableError(
            "the sftp backend needs paramiko, which is not installed", hint=INSTALL_HINT
        ) from e
    return paramiko


class _Conn:
    """One SSH connection and its SFTP session."""

    def __init__(self, ssh: Any, sftp: Any) -> None:
        self.ssh = ssh
        self.sftp = sftp
        self.fsync = True  # until the server says it has no fsync@openssh.com

    def alive(self) -> bool:
        transport = self.ssh.get_transport()
        return bool(transport is not None and transport.is_active())

    def close(self) -> None:
        for thing in (self.sftp, self.ssh):
            try:
                thing.close()
            except Exception:  # closing a dead connection: nothing left to release
                logger.debug("error closing an SFTP connection", exc_info=True)


class SFTPStorage:
    """Objects as files under ``path`` on an SSH host; connects on first use."""

    def __init__(self, backend: SFTPBackend, environ: Mapping[str, str] | None = None) -> None:
        self._paramiko = _sdk()
        self.backend = backend
        self._env = dict(os.environ if environ is None else environ)
        self._lock = threading.Lock()
        self._idle: builtins.list[_Conn] = []
        self._root: str | None = None
        self._closed = False

    @classmethod
    def from_config(cls, backend: SFTPBackend, environ: Mapping[str, str] | None = None) -> SFTPStorage:
        """The storage for ``backend``; secrets are read from ``environ`` (default ``os.environ``)."""
        storage = cls(backend, environ)
        storage._password()  # a named variable that is unset is a config error: say so now
        return storage

    # -- connections ---------------------------------------------------------------------------

    def _password(self) -> str | None:
        b = self.backend
        if b.password_env:
            value = self._env.get(b.password_env)
            if value is None:
                raise ConfigError(
                    f"password_env names {b.password_env}, which is not set",
                    detail=self.describe(),
                    hint=f"set {b.password_env} (e.g. in /etc/bakelite/bakelite.env)",
                )
            return value
        return self._env.get(PASSWORD_VARIABLE) or b.password

    def _passphrase(self) -> str | None:
        b = self.backend
        name = b.passphrase_env or PASSPHRASE_VARIABLE
        value = self._env.get(name)
        if b.passphrase_env and value is None:
            raise ConfigError(
                f"passphrase_env names {name}, which is not set",
                detail=self.describe(),
                hint=f"set {name} to the passphrase of {b.identity_file}",
            )
        return value

    def _known_hosts(self) -> Path:
        return self.backend.known_hosts or Path(os.path.expanduser("~/.ssh/known_hosts"))

    def _connect(self) -> _Conn:
        paramiko = self._paramiko
        b = self.backend
        ssh = paramiko.SSHClient()
        if b.insecure_skip_host_key_check:
            # Not even loaded: a stale entry must not fail a connection the operator said to trust.
            ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        else:
            known = self._known_hosts()
            if known.exists():
                try:
                    ssh.load_host_keys(str(known))
                except (OSError, paramiko.SSHException) as e:
                    raise ConfigError(
                        f"cannot read known_hosts {known}", detail=str(e), hint="fix or regenerate the file"
                    ) from e
            ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
        pkey = None
        if b.identity_file:
            passphrase = self._passphrase()
            try:
                pkey = paramiko.PKey.from_path(
                    str(b.identity_file), passphrase.encode() if passphrase is not None else None
                )
            except (paramiko.PasswordRequiredException, TypeError) as e:
                # Newer paramiko lets cryptography's TypeError through for a missing passphrase.
                if passphrase is not None and not isinstance(e, paramiko.PasswordRequiredException):
                    raise
                raise ConfigError(
                    f"identity_file {b.identity_file} is encrypted and no passphrase was given",
                    hint=f"set passphrase_env, or {PASSPHRASE_VARIABLE}",
                ) from e
            except (OSError, ValueError, paramiko.SSHException) as e:
                raise ConfigError(
                    f"cannot load identity_file {b.identity_file}",
                    detail=f"{type(e).__name__}: {e}",
                    hint="check the path, its permissions and the passphrase",
                ) from e
        password = self._password()
        try:
            ssh.connect(
                b.host,
                port=b.port,
                username=b.user or getpass.getuser(),
                pkey=pkey,
                password=password,
                timeout=b.connect_timeout,
                banner_timeout=b.connect_timeout,
                auth_timeout=b.connect_timeout,
                allow_agent=False,
                # With neither key nor password configured, fall back to the user's default keys.
                look_for_keys=pkey is None and password is None,
            )
            # Keepalives notice a dead idle connection before a request is sent on it.
            ssh.get_transport().set_keepalive(KEEPALIVE)
            sftp = ssh.open_sftp()
            sftp.get_channel().settimeout(b.request_timeout)
        except Exception as e:
            ssh.close()
            raise self._connect_error(e) from e
        return _Conn(ssh, sftp)

    def _connect_error(self, e: Exception) -> BakeliteError:
        paramiko = self._paramiko
        b = self.backend
        where = self.describe()
        hostspec = b.host if b.port == 22 else f"[{b.host}]:{b.port}"
        known = self._known_hosts()
        if isinstance(e, paramiko.BadHostKeyException):
            got = e.key.fingerprint if hasattr(e.key, "fingerprint") else e.key.get_base64()
            return PermanentBackendError(
                f"host key of {b.host}:{b.port} does not match known_hosts ({where})",
                detail=f"the server offered {e.key.get_name()} {got}; {known} has a different key",
                hint="this may be an attack; if the key really changed, verify the new fingerprint, then "
                f"ssh-keygen -R '{hostspec}' -f {known} and add the new key",
            )
        if isinstance(e, paramiko.SSHException) and "known_hosts" in str(e):
            return PermanentBackendError(
                f"host key of {b.host}:{b.port} is not in known_hosts ({where})",
                detail=f"{known} has no entry for {hostspec}",
                hint=f"verify the fingerprint, then: ssh-keyscan -p {b.port} {b.host} >> {known} "
                "(or set known_hosts)",
            )
        if isinstance(e, paramiko.AuthenticationException):
            return PermanentBackendError(
                f"SSH authentication failed ({where})",
                detail=f"{type(e).__name__}: {e}",
                hint="check user, identity_file / password and the server's authorized_keys",
            )
        return TransientBackendError(f"cannot connect to {where}", detail=f"{type(e).__name__}: {e}")

    def _checkout(self) -> _Conn:
        with self._lock:
            if self._closed:
                raise BackendError(f"{self.describe()} is closed")
            while self._idle:
                conn = self._idle.pop()
                if conn.alive():
                    return conn
                conn.close()
        conn = self._connect()
        if self._root is None:
            self._root = self._resolve_root(conn)
        return conn

    def _checkin(self, conn: _Conn) -> None:
        with self._lock:
            if not self._closed and conn.alive() and len(self._idle) < POOL_SIZE:
                self._idle.append(conn)
                return
        conn.close()

    def _resolve_root(self, conn: _Conn) -> str:
        path = self.backend.path
        if posixpath.isabs(path):
            return posixpath.normpath(path)
        try:
            home = conn.sftp.normalize(".")
        except Exception as e:
            raise self._translate(e, conn, "resolving", path) from e
        return posixpath.normpath(posixpath.join(home, path))

    def _op(self, action: str, key: str, fn: Callable[[_Conn], T]) -> T:
        """Run a repeatable ``fn`` on a pooled connection; once more on a new one if it was stale."""
        for attempt in (1, 2):
            conn = self._checkout()
            try:
                result = fn(conn)
            except Exception as e:
                error = self._translate(e, conn, action, key)
                self._checkin(conn)  # closed instead, if the failure killed it
                # A pooled connection the server dropped while idle fails on first use; that is
                # not an outage, so go straight to a fresh one.
                if attempt == 1 and isinstance(error, TransientBackendError) and not conn.alive():
                    logger.debug("reconnecting to %s: %s", self.describe(), error.one_line())
                    continue
                raise error from e
            except BaseException:
                conn.close()  # interrupted mid-request: the session's state is unknown
                raise
            self._checkin(conn)
            return result
        raise AssertionError("unreachable")

    # -- writes --------------------------------------------------------------------------------

    def put(self, key: str, data: bytes, *, cold: bool = False) -> None:
        """Write a temp file, then rename it over ``key``."""
        self._write(key, (data,))

    def put_stream(self, key: str, chunks: Iterable[bytes], *, cold: bool = False) -> int:
        """Like ``put``; the temp file is removed if anything fails."""
        return self._write(key, chunks)

    def _write(self, key: str, chunks: Iterable[bytes]) -> int:
        rel = self._rel_path(key)
        conn = self._checkout()
        path = self._abs(rel)
        parent = posixpath.dirname(path)
        tmp = posixpath.join(parent, _TMP_PREFIX + secrets.token_hex(8))
        size = 0
        f: Any = None
        try:
            f = self._remote("writing", key, conn, lambda: self._create(conn, parent, tmp))
            f.set_pipelined(True)
            # The caller's chunk source runs outside _remote: its exceptions propagate unchanged.
            for chunk in chunks:
                if chunk:
                    size += len(chunk)
                    self._remote("writing", key, conn, functools.partial(f.write, chunk))
            self._remote("writing", key, conn, lambda: self._fsync(conn, f))
            # With pipelined writes, close is where a failed write is reported.
            self._remote("writing", key, conn, f.close)
            self._remote("renaming", key, conn, lambda: conn.sftp.posix_rename(tmp, path))
        except BaseException:
            if f is not None:
                _close_quietly(f, conn)
            if conn.alive():
                try:
                    conn.sftp.remove(tmp)
                except Exception:
                    logger.debug("could not remove temp file %s", tmp, exc_info=True)
            self._checkin(conn)
            raise
        self._checkin(conn)
        return size

    def _remote(self, action: str, key: str, conn: _Conn, fn: Callable[[], T]) -> T:
        """``fn()``, with its SFTP errors translated."""
        try:
            return fn()
        except Exception as e:
            raise self._translate(e, conn, action, key) from e

    def _create(self, conn: _Conn, parent: str, tmp: str) -> Any:
        """Open ``tmp`` for writing, making ``parent`` first (again, if a delete removed it)."""
        # A concurrent delete may remove a directory between our mkdir (or stat) and the open;
        # each attempt starts over from the missing level.
        for attempt in range(_CREATE_ATTEMPTS):
            try:
                self._makedirs(conn, parent)
                return conn.sftp.open(tmp, "wb", bufsize=WRITE_SIZE)
            except FileNotFoundError:
                if attempt == _CREATE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _makedirs(self, conn: _Conn, directory: str) -> None:
        assert self._root is not None
        missing: builtins.list[str] = []
        path = directory
        while True:
            try:
                st = conn.sftp.stat(path)
            except FileNotFoundError:
                missing.append(path)
                up = posixpath.dirname(path)
                if up == path:
                    break
                path = up
                continue
            if not stat_mod.S_ISDIR(st.st_mode or 0):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
            break
        for path in reversed(missing):
            try:
                conn.sftp.mkdir(path)
            except OSError:
                # OpenSSH answers a bare "Failure" when it exists (made by a concurrent writer).
                st = conn.sftp.stat(path)
                if not stat_mod.S_ISDIR(st.st_mode or 0):
                    raise

    def _fsync(self, conn: _Conn, f: Any) -> None:
        """``fsync@openssh.com`` on the open file, where the server has it."""
        if not conn.fsync:
            return
        f.flush()
        try:
            # paramiko has no public call for this OpenSSH extension; its own posix_rename is
            # built the same way, on the client's request method.
            conn.sftp._request(self._paramiko.sftp.CMD_EXTENDED, "fsync@openssh.com", f.handle)
        except OSError as e:
            if not conn.alive():
                raise
            conn.fsync = False
            logger.info(
                "%s does not support fsync@openssh.com; durability is up to the server",
                self.describe(),
                extra={"detail": str(e)},
            )

    def delete(self, keys: Iterable[str]) -> None:
        """Remove each file (absent ones are fine) and the directories left empty."""
        rels = [self._rel_path(k) for k in keys]
        if not rels:
            return

        def run(conn: _Conn) -> None:
            for rel in dict.fromkeys(rels):
                path = self._abs(rel)
                try:
                    conn.sftp.remove(path)
                except FileNotFoundError:
                    continue
                except OSError:
                    # OpenSSH says "Failure" when the name is a directory: not an object, nothing
                    # to delete.
                    try:
                        if stat_mod.S_ISDIR(conn.sftp.stat(path).st_mode or 0):
                            continue
                    except FileNotFoundError:
                        continue
                    raise
                self._prune(conn, posixpath.dirname(path))

        self._op("deleting", rels[0], run)

    def _prune(self, conn: _Conn, directory: str) -> None:
        root = self._root or ""
        while directory != root and directory.startswith(root + "/"):
            try:
                conn.sftp.rmdir(directory)
            except OSError:
                if not conn.alive():
                    raise
                return  # not empty, or already gone
            directory = posixpath.dirname(directory)

    # -- reads ---------------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        """The whole file."""
        with self.open(key) as f:
            return f.read()

    def open(self, key: str) -> BinaryIO:
        """The remote file, read with prefetching; the connection is held until closed."""
        rel = self._rel_path(key)
        conn = self._checkout()
        try:
            f = conn.sftp.open(self._abs(rel), "rb")
            size = f.stat().st_size or 0
            f.prefetch(size, max_concurrent_requests=PREFETCH_REQUESTS)
        except Exception as e:
            error = self._translate(e, conn, "opening", key)
            self._checkin(conn)
            raise error from e
        raw = _RemoteReader(self, conn, f, key)
        return io.BufferedReader(raw, buffer_size=1024 * 1024)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """``length`` bytes from ``start`` (fewer, or none, past the end)."""
        if start < 0 or length < 0:
            raise ValueError(f"invalid range start={start} length={length}")
        path = self._abs(self._rel_path(key))

        def run(conn: _Conn) -> bytes:
            with conn.sftp.open(path, "rb") as f:
                f.seek(start)
                out = bytearray()
                while len(out) < length:
                    data = f.read(length - len(out))
                    if not data:
                        break
                    out += data
                return bytes(out)

        return self._op("reading", key, run)

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and mtime, or ``None``."""
        path = self._abs(self._rel_path(key))

        def run(conn: _Conn) -> ObjectInfo | None:
            try:
                st = conn.sftp.stat(path)
            except FileNotFoundError:
                return None
            if not stat_mod.S_ISREG(st.st_mode or 0):
                return None
            return ObjectInfo(key=key, size=int(st.st_size or 0), mtime=float(st.st_mtime or 0))

        return self._op("inspecting", key, run)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every file under ``prefix``, sorted by key; only the matching subtree is walked."""
        validate_prefix(prefix)
        directory, _, name_prefix = prefix.rpartition("/")
        found: builtins.list[ObjectInfo] = []
        self._op("listing", prefix or "/", lambda conn: self._walk(conn, directory, name_prefix, found))
        return iter(found)

    def _walk(self, conn: _Conn, rel_dir: str, name_prefix: str, out: builtins.list[ObjectInfo]) -> None:
        try:
            entries = conn.sftp.listdir_attr(self._abs(rel_dir) if rel_dir else self._abs(""))
        except FileNotFoundError:
            return
        # Directories sort as "name/" so the keys come out in plain string order (see file.py).
        named = []
        for entry in entries:
            if not entry.filename.startswith(name_prefix) or not _is_segment(entry.filename):
                continue
            is_dir = stat_mod.S_ISDIR(entry.st_mode or 0)
            named.append((entry.filename + "/" if is_dir else entry.filename, entry, is_dir))
        named.sort(key=lambda item: item[0])
        for _, entry, is_dir in named:
            key = f"{rel_dir}/{entry.filename}" if rel_dir else entry.filename
            if is_dir:
                self._walk(conn, key, "", out)
            elif stat_mod.S_ISREG(entry.st_mode or 0):
                out.append(
                    ObjectInfo(key=key, size=int(entry.st_size or 0), mtime=float(entry.st_mtime or 0))
                )

    # -- misc ----------------------------------------------------------------------------------

    def describe(self) -> str:
        """``sftp://user@host:port/path``."""
        return self.backend.describe()

    def close(self) -> None:
        """Close every pooled connection."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _rel_path(self, key: str) -> str:
        return validate_key(key)

    def _abs(self, rel: str) -> str:
        assert self._root is not None or rel == "", "connect first"
        root = self._root or ""
        return posixpath.join(root, rel) if rel else root

    def _not_found(self, key: str) -> ObjectNotFound:
        return ObjectNotFound(f"object {key} not found", detail=self.describe())

    def _translate(self, e: Exception, conn: _Conn, action: str, key: str) -> BakeliteError:
        """An SFTP/SSH error as the backend error family; a dead connection is transient."""
        if isinstance(e, BakeliteError):
            return e
        where = self.describe()
        detail = f"{type(e).__name__}: {e} ({action} {key})"
        if not conn.alive():
            conn.close()
            return TransientBackendError(f"connection to {where} dropped {action} {key}", detail=detail)
        if isinstance(e, FileNotFoundError | IsADirectoryError | NotADirectoryError):
            if action in ("reading", "opening"):
                return self._not_found(key)
            return PermanentBackendError(f"{where}: no such directory {action} {key}", detail=detail)
        if isinstance(e, PermissionError):
            return PermanentBackendError(
                f"permission denied by {where} {action} {key}",
                detail=detail,
                hint=f"check that the SSH user may write under {self._root or self.backend.path}",
            )
        if isinstance(e, TimeoutError | EOFError | self._paramiko.SSHException):
            conn.close()
            return TransientBackendError(f"{where} failed {action} {key}", detail=detail)
        return BackendError(f"{where} failed {action} {key}", detail=detail)


class _RemoteReader(io.RawIOBase):
    """A raw stream over a prefetching remote file; returns its connection when closed."""

    def __init__(self, storage: SFTPStorage, conn: _Conn, f: Any, key: str) -> None:
        super().__init__()
        self._storage = storage
        self._conn = conn
        self._f = f
        self._key = key

    def readable(self) -> bool:
        """Always readable."""
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        """Up to ``len(buffer)`` bytes."""
        try:
            data = self._f.read(len(buffer))
        except Exception as e:
            raise self._storage._translate(e, self._conn, "reading", self._key) from e
        n = len(data)
        memoryview(buffer)[:n] = data
        return n

    def close(self) -> None:
        """Close the remote file and give the connection back."""
        if not self.closed:
            _close_quietly(self._f, self._conn)
            self._storage._checkin(self._conn)
        super().close()


def _close_quietly(f: Any, conn: _Conn) -> None:
    """Close a remote file on a possibly dead connection, and make sure it stays closed."""
    try:
        f.close()
    except Exception:
        conn.close()
    finally:
        # paramiko's close raises before marking the file closed when the connection is gone,
        # and its __del__ would then try again from the garbage collector and raise there.
        f._closed = True


def _is_segment(name: str) -> bool:
    try:
        validate_key(name)
    except BackendError:
        return False
    return True
