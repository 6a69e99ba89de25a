"""A backend that is a directory on a local (or mounted) filesystem.

Each key ``a/b/c`` is the file ``<root>/a/b/c``.  Writes go to a temp file in the target's directory
(``.tmp~<random>``: ``~`` is not allowed in a key segment, so a temp file can never be listed or
collide with a key), are fsynced, renamed over the target, and the directory is fsynced: a reader,
or a crash, sees the whole old object or the whole new one.  A crash mid-write leaves only an
invisible temp file behind.

Limitation shared with SFTP: a key cannot be both an object and a "directory" of other keys (``a``
and ``a/b``); ``format.layout`` never builds such keys.
"""

from __future__ import annotations

import builtins
import errno
import logging
import os
import secrets
import stat as stat_mod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from bakelite.errors import (
    BackendError,
    ObjectNotFound,
    PermanentBackendError,
    TransientBackendError,
)
from bakelite.fsutil import fsync_dir
from bakelite.storage.base import ObjectInfo, validate_key, validate_prefix

logger = logging.getLogger(__name__)

_TMP_PREFIX = ".tmp~"
# A put racing deletes in its directory remakes the directory; each attempt costs two syscalls.
_CREATE_ATTEMPTS = 20
# Read-side errors that mean "there is no object at this key" (the key names a directory, or a
# path component is a file): not a backend failure.
_ABSENT = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


class FileStorage:
    """Objects as files under ``root``; the root is created on the first write."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        # Absolute now, so a later chdir (daemonising) cannot move the backup.
        self.root = Path(os.path.abspath(root))
        self._root = str(self.root)

    # -- writes --------------------------------------------------------------------------------

    def put(self, key: str, data: bytes, *, cold: bool = False) -> None:
        """Store ``data`` at ``key`` atomically and durably."""
        self._write(key, (data,))

    def put_stream(self, key: str, chunks: Iterable[bytes], *, cold: bool = False) -> int:
        """Store the concatenation of ``chunks`` atomically; the temp file is removed on any error."""
        return self._write(key, chunks)

    def _write(self, key: str, chunks: Iterable[bytes]) -> int:
        path = self._path(key)
        parent = os.path.dirname(path)
        fd, tmp = self._create_temp(parent)
        size = 0
        try:
            # The caller's exceptions (a failing chunk generator) propagate unchanged; only our own
            # OSErrors are translated into backend errors.
            for chunk in chunks:
                size += len(chunk)
                try:
                    _write_all(fd, chunk)
                except OSError as e:
                    raise self._error(e, tmp, "writing") from e
            try:
                os.fsync(fd)
            except OSError as e:
                raise self._error(e, tmp, "syncing") from e
        except BaseException:
            os.close(fd)
            _unlink_quietly(tmp)
            raise
        os.close(fd)
        try:
            os.replace(tmp, path)
        except OSError as e:
            _unlink_quietly(tmp)
            raise self._error(e, path, "renaming into") from e
        try:
            fsync_dir(parent)
        except OSError as e:
            raise self._error(e, parent, "syncing") from e
        return size

    def _create_temp(self, parent: str) -> tuple[int, str]:
        """Make ``parent`` (and fsync what was created), then open a fresh temp file inside it."""
        tmp = os.path.join(parent, _TMP_PREFIX + secrets.token_hex(8))
        # A concurrent delete may remove the just-created (still empty) directory before the temp
        # file lands in it; making the directory again is enough, so try a few times.
        for attempt in range(_CREATE_ATTEMPTS):
            try:
                self._make_dirs(parent)
                # 0o666 lets the operator's umask decide, as any other file the daemon writes.
                return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), tmp
            except FileNotFoundError as e:
                if attempt == _CREATE_ATTEMPTS - 1:
                    raise self._error(e, tmp, "creating") from e
            except OSError as e:
                raise self._error(e, getattr(e, "filename", None) or tmp, "creating") from e
        raise AssertionError("unreachable")

    def _make_dirs(self, directory: str) -> None:
        """``mkdir -p`` that fsyncs the parent of every directory it creates."""
        if os.path.isdir(directory):
            return
        missing: builtins.list[str] = []
        path = directory
        while not os.path.isdir(path):
            missing.append(path)
            up = os.path.dirname(path)
            if up == path:
                break
            path = up
        for path in reversed(missing):
            try:
                os.mkdir(path)
            except FileExistsError:
                # One stat, not isdir() then lexists(): between two checks a concurrent delete and
                # put can prune and remake the directory, and a real directory looked like a file.
                try:
                    mode = os.stat(path).st_mode
                except FileNotFoundError:
                    # Made and pruned again by a concurrent delete: the caller tries again.
                    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path) from None
                if not stat_mod.S_ISDIR(mode):
                    raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path) from None
                # Another writer made it; fsync anyway, since we cannot know it already has.
            # The new entry is only durable once its parent directory is fsynced.
            fsync_dir(os.path.dirname(path))

    def delete(self, keys: Iterable[str]) -> None:
        """Delete ``keys`` (absent ones are fine) and the empty directories they leave behind."""
        touched: set[str] = set()
        for key in keys:
            path = self._path(key)
            try:
                os.unlink(path)
            except _ABSENT:
                continue
            except OSError as e:
                raise self._error(e, path, "deleting") from e
            touched.add(self._prune_empty_dirs(os.path.dirname(path)))
        # A delete is durable too: retention must not see pruned objects reappear after a crash.
        for directory in sorted(touched):
            try:
                fsync_dir(directory)
            except FileNotFoundError:
                continue  # removed meanwhile by another delete
            except OSError as e:
                raise self._error(e, directory, "syncing") from e

    def _prune_empty_dirs(self, directory: str) -> str:
        """Remove ``directory`` and its ancestors while empty, never the root; return the survivor."""
        while directory != self._root and directory.startswith(self._root + os.sep):
            try:
                os.rmdir(directory)
            except OSError:
                break  # not empty (or already gone): stop climbing
            directory = os.path.dirname(directory)
        return directory

    # -- reads ---------------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        """The whole object; ``ObjectNotFound`` if absent."""
        with self.open(key) as f:
            try:
                return f.read()
            except OSError as e:
                raise self._error(e, f.name, "reading") from e

    def open(self, key: str) -> BinaryIO:
        """The object's file, opened for reading; ``ObjectNotFound`` if absent."""
        path = self._path(key)
        try:
            return builtins.open(path, "rb")
        except _ABSENT as e:
            raise self._not_found(key) from e
        except OSError as e:
            raise self._error(e, path, "opening") from e

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """``length`` bytes from ``start`` (fewer, or none, past the end)."""
        if start < 0 or length < 0:
            raise ValueError(f"invalid range start={start} length={length}")
        with self.open(key) as f:
            try:
                f.seek(start)
                return f.read(length)
            except OSError as e:
                raise self._error(e, f.name, "reading") from e

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and mtime, or ``None`` if absent."""
        path = self._path(key)
        try:
            st = os.stat(path)
        except _ABSENT:
            return None
        except OSError as e:
            raise self._error(e, path, "inspecting") from e
        if not stat_mod.S_ISREG(st.st_mode):
            return None
        return ObjectInfo(key=key, size=st.st_size, mtime=st.st_mtime)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix``, sorted by key; only the matching subtree is walked."""
        validate_prefix(prefix)
        # "a/b" lists directory "a", keeping entries whose name starts with "b" (a partial segment
        # like "a/b" must match "a/bc/x" too); "a/b/" lists directory "a/b" whole.
        directory, _, name_prefix = prefix.rpartition("/")
        return self._walk(directory, name_prefix)

    def _walk(self, rel_dir: str, name_prefix: str) -> Iterator[ObjectInfo]:
        abs_dir = os.path.join(self._root, *rel_dir.split("/")) if rel_dir else self._root
        try:
            # Read the directory whole so no descriptor stays open while the caller iterates.
            with os.scandir(abs_dir) as it:
                entries = [e for e in it if e.name.startswith(name_prefix) and _is_segment(e.name)]
        except (FileNotFoundError, NotADirectoryError):
            return  # no root yet, no such prefix directory, or removed by a concurrent delete
        except OSError as e:
            raise self._error(e, abs_dir, "listing") from e
        # Keys under directory "d" all start with "d/", so sorting directories as "d/" among the
        # file names yields the keys in plain string order ("a.x" < "a/y" < "a0").
        named: builtins.list[tuple[str, os.DirEntry[str], bool]] = []
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)  # never follow a link into a loop
            except OSError:
                continue
            named.append((entry.name + "/" if is_dir else entry.name, entry, is_dir))
        named.sort(key=lambda item: item[0])
        for _, entry, is_dir in named:
            key = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if is_dir:
                yield from self._walk(key, "")
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue  # deleted while we listed
            except OSError as e:
                raise self._error(e, entry.path, "inspecting") from e
            if stat_mod.S_ISREG(st.st_mode):
                yield ObjectInfo(key=key, size=st.st_size, mtime=st.st_mtime)

    # -- misc ----------------------------------------------------------------------------------

    def describe(self) -> str:
        """``file:///abs/path``."""
        return f"file://{self._root}"

    def close(self) -> None:
        """Nothing to release."""

    def _path(self, key: str) -> str:
        validate_key(key)
        return os.path.join(self._root, *key.split("/"))

    def _not_found(self, key: str) -> ObjectNotFound:
        return ObjectNotFound(f"object {key} not found", detail=self.describe())

    def _error(self, e: OSError, path: str, action: str) -> BackendError:
        """Translate an OSError into the backend error family, with the path and the fix."""
        reason = e.strerror or str(e)
        if isinstance(e, PermissionError) or e.errno in (errno.EACCES, errno.EPERM):
            return PermanentBackendError(
                f"permission denied {action} {path}",
                detail=reason,
                hint=f"check ownership and permissions of {self._root} and its parents "
                f"(e.g. chown -R <daemon user> {self._root})",
            )
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            # Transient on purpose: a full disk or quota is usually fixed from outside (the
            # operator frees space, retention prunes, a log rotates), so retrying with backoff lets
            # replication resume by itself; the retry wrapper bounds the attempts so it still
            # surfaces as an error rather than hanging.
            return TransientBackendError(
                f"no space left {action} {path}",
                detail=reason,
                hint=f"free space on the filesystem holding {self._root}",
            )
        if e.errno == errno.EROFS:
            return PermanentBackendError(
                f"read-only filesystem {action} {path}",
                detail=reason,
                hint=f"mount the filesystem holding {self._root} read-write",
            )
        if isinstance(e, NotADirectoryError):
            return PermanentBackendError(
                f"not a directory {action} {path}",
                detail=reason,
                hint=f"a component of {self._root} (or of the key) is a regular file; "
                "the backend path must be a directory",
            )
        if isinstance(e, IsADirectoryError):
            return PermanentBackendError(
                f"key is a directory {action} {path}",
                detail=reason,
                hint="a key cannot be both an object and a prefix of other keys on a file backend",
            )
        return BackendError(
            f"I/O error {action} {path}", detail=f"{errno.errorcode.get(e.errno or 0, '?')}: {reason}"
        )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        logger.warning("could not remove temp file %s", path, extra={"path": path})


def _is_segment(name: str) -> bool:
    """Whether a directory entry can be part of a key (temp and foreign files cannot)."""
    try:
        validate_key(name)
    except BackendError:
        return False
    return True
