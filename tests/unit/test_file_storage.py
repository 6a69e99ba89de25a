"""What only the file backend promises: crash safety, directory hygiene, and its error messages."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bakelite.errors import BackendError, ObjectNotFound, PermanentBackendError, TransientBackendError
from bakelite.storage.file import FileStorage


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_root_is_created_lazily(tmp_path: Path) -> None:
    root = tmp_path / "not" / "yet"
    storage = FileStorage(root)
    assert list(storage.list()) == []
    assert storage.stat("a") is None
    assert not root.exists()
    storage.put("a/b", b"1")
    assert (root / "a" / "b").read_bytes() == b"1"


def test_describe_is_an_absolute_file_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    storage = FileStorage("rel/store")
    assert storage.describe() == f"file://{tmp_path}/rel/store"
    assert storage.describe().startswith("file:///")


def test_no_temp_file_is_left_behind(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    storage.put("a/b/c", b"x" * 1000)
    storage.put_stream("a/d", [b"y"] * 10)
    assert files_under(tmp_path) == ["a/b/c", "a/d"]


def test_delete_removes_emptied_directories_but_not_the_root(tmp_path: Path) -> None:
    root = tmp_path / "store"
    storage = FileStorage(root)
    storage.put("a/b/c/d", b"1")
    storage.put("a/keep", b"1")
    storage.delete(["a/b/c/d"])
    assert not (root / "a" / "b").exists()
    assert (root / "a" / "keep").exists()
    storage.delete(["a/keep"])
    assert root.is_dir()
    assert list(root.iterdir()) == []


def test_list_skips_temp_and_foreign_files(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    storage.put("a/real", b"1")
    (tmp_path / "a" / ".tmp~0123456789abcdef").write_bytes(b"half")
    (tmp_path / "a" / "has space").write_bytes(b"foreign")
    (tmp_path / "a" / "emptydir").mkdir()  # an empty directory is not an object
    os.mkfifo(tmp_path / "a" / "pipe")  # nor is anything but a regular file
    assert [i.key for i in storage.list()] == ["a/real"]
    assert storage.stat("a/pipe") is None


def test_list_does_not_follow_directory_symlinks(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    storage.put("a/x", b"1")
    (tmp_path / "a" / "loop").symlink_to(tmp_path, target_is_directory=True)
    assert [i.key for i in storage.list()] == ["a/x"]


def test_keys_that_are_directories_or_below_files_are_absent(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    storage.put("a/b", b"1")
    with pytest.raises(ObjectNotFound):
        storage.get("a")  # a directory
    with pytest.raises(ObjectNotFound):
        storage.get("a/b/c")  # below a file
    assert storage.stat("a") is None
    assert storage.stat("a/b/c") is None
    storage.delete(["a", "a/b/c"])
    assert storage.get("a/b") == b"1"


def test_put_over_a_directory_is_a_permanent_error(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    storage.put("a/b", b"1")
    with pytest.raises(PermanentBackendError) as info:
        storage.put("a", b"2")
    assert info.value.hint
    assert files_under(tmp_path) == ["a/b"]


def test_a_directory_another_writer_made_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = FileStorage(tmp_path)
    real_mkdir = os.mkdir

    def raced(path: str, *args: object) -> None:
        # Another writer wins the race: the directory exists and our mkdir reports it.
        real_mkdir(path)
        raise FileExistsError(errno.EEXIST, "File exists", path)

    monkeypatch.setattr(os, "mkdir", raced)
    storage.put("a/b/c", b"1")
    monkeypatch.undo()
    assert storage.get("a/b/c") == b"1"


def test_a_directory_pruned_while_being_made_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = FileStorage(tmp_path)
    real_mkdir = os.mkdir
    pruned = {"n": 0}

    def made_then_pruned(path: str, *args: object) -> None:
        # A racing put made it and a racing delete pruned it again, several times over.
        if path.endswith("race") and pruned["n"] < 12:
            pruned["n"] += 1
            raise FileExistsError(errno.EEXIST, "File exists", path)
        real_mkdir(path)

    monkeypatch.setattr(os, "mkdir", made_then_pruned)
    storage.put("race/k", b"1")
    monkeypatch.undo()
    assert pruned["n"] == 12
    assert storage.get("race/k") == b"1"


def test_a_file_where_a_directory_goes_is_a_permanent_error(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    storage.put("a", b"1")
    with pytest.raises(PermanentBackendError, match="not a directory"):
        storage.put("a/b", b"2")
    assert storage.get("a") == b"1"


def test_root_below_a_regular_file_is_a_permanent_error_with_a_hint(tmp_path: Path) -> None:
    # Works as root too, unlike a chmod: the backend path's parent is a regular file.
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"")
    storage = FileStorage(blocker / "store")
    with pytest.raises(PermanentBackendError) as info:
        storage.put("a/b", b"1")
    err = info.value
    assert str(blocker) in err.message
    assert err.hint is not None and str(blocker / "store") in err.hint


def test_permission_denied_names_the_path_and_suggests_chown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulated, so the test also runs as root (which bypasses mode bits).
    storage = FileStorage(tmp_path / "store")

    def denied(src: str, dst: str) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", dst)

    monkeypatch.setattr(os, "replace", denied)
    with pytest.raises(PermanentBackendError) as info:
        storage.put("a/b", b"1")
    err = info.value
    assert str(tmp_path / "store" / "a" / "b") in err.message
    assert err.hint is not None and "chown" in err.hint
    monkeypatch.undo()
    assert files_under(tmp_path) == []  # the temp file was removed


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions; see the simulated test")
def test_real_permission_denied(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir(mode=0o500)
    try:
        with pytest.raises(PermanentBackendError) as info:
            FileStorage(root).put("a", b"1")
        assert info.value.hint is not None and "chown" in info.value.hint
    finally:
        root.chmod(0o700)


def test_disk_full_is_transient_and_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = FileStorage(tmp_path)
    real_write = os.write
    writes = 0

    def filling(fd: int, data: bytes | memoryview) -> int:
        nonlocal writes
        writes += 1
        if writes > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", filling)
    with pytest.raises(TransientBackendError) as info:
        storage.put_stream("a/b", [b"x"] * 10)
    assert "space" in info.value.message
    monkeypatch.undo()
    assert files_under(tmp_path) == []


def test_other_io_errors_are_backend_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = FileStorage(tmp_path)

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(BackendError) as info:
        storage.put("a", b"1")
    assert type(info.value) is BackendError
    assert "EIO" in (info.value.detail or "")


_WRITER = textwrap.dedent(
    """
    import sys, time
    from bakelite.storage.file import FileStorage

    def chunks():
        for i in range(1_000_000):
            yield b"z" * 65536
            if i == 64:  # 4 MiB written: tell the parent, then keep writing slowly
                print("writing", flush=True)
            if i > 64:
                time.sleep(0.01)

    FileStorage(sys.argv[1]).put_stream("big/object", chunks())
    """
)


def test_a_process_killed_mid_put_leaves_no_visible_object(tmp_path: Path) -> None:
    root = tmp_path / "store"
    storage = FileStorage(root)
    storage.put("big/object", b"the old version")
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(root)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"writing\n"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    # The killed write left its temp file (proof it was mid-put), invisible to readers.
    leftovers = [p.name for p in (root / "big").iterdir()]
    assert any(name.startswith(".tmp~") for name in leftovers)
    assert [i.key for i in storage.list()] == ["big/object"]
    assert storage.get("big/object") == b"the old version"
    storage.put("big/other", b"1")
    assert [i.key for i in storage.list()] == ["big/object", "big/other"]


def test_a_process_killed_mid_first_put_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(root)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"writing\n"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    storage = FileStorage(root)
    assert list(storage.list()) == []
    assert storage.stat("big/object") is None
