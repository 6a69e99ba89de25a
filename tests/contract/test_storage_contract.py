"""The one contract every backend passes, written against the ``Storage`` protocol only.

Adding a backend is one entry in ``BACKENDS``: a function of the pytest request (to reach server
fixtures with ``request.getfixturevalue``) and a fresh temp directory, returning an empty storage.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bakelite.errors import BackendError, ObjectNotFound
from bakelite.storage.base import Storage
from bakelite.storage.faulty import FaultyStorage
from bakelite.storage.file import FileStorage
from bakelite.storage.memory import MemoryStorage
from bakelite.storage.registry import PrefixedStorage
from bakelite.storage.retry import RetryingStorage
from servers import real_cloud_factories, storage_factories

# Transient faults on every op, retried away: the contract must hold through the retry wrapper.
_FLAKY = ";".join(
    f"{op}:transient%25" for op in ("put", "put_stream", "get", "open", "get_range", "stat", "list", "delete")
)


def _no_sleep(_: float) -> None:
    pass


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Storage]] = {
    "file": lambda request, tmp: FileStorage(tmp / "store"),
    "memory": lambda request, tmp: MemoryStorage(),
    "prefixed-file": lambda request, tmp: PrefixedStorage(FileStorage(tmp / "store"), "app"),
    "retrying-file": lambda request, tmp: RetryingStorage(FileStorage(tmp / "store"), sleep=_no_sleep),
    "retrying-flaky-memory": lambda request, tmp: RetryingStorage(
        FaultyStorage(MemoryStorage(), _FLAKY, seed=3), attempts=20, sleep=_no_sleep
    ),
    # s3 (moto), gcs (fake-gcs-server), azure (Azurite), sftp (OpenSSH): tests/servers.py.
    **storage_factories(),
    # Real clouds, only when their BAKELITE_TEST_* variables are set (marked `cloud`).
    **real_cloud_factories(),
}


@pytest.fixture(
    params=[
        pytest.param(n, marks=pytest.mark.cloud) if n.startswith("real-") else n for n in sorted(BACKENDS)
    ]
)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    backend = BACKENDS[request.param](request, tmp_path)
    assert isinstance(backend, Storage)
    yield backend
    backend.close()


def keys(storage: Storage, prefix: str = "") -> list[str]:
    return [info.key for info in storage.list(prefix)]


class Boom(Exception):
    """Raised by a chunk generator to abort a put_stream."""


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 10 * 1024 * 1024])
def test_put_get_round_trip(storage: Storage, size: int) -> None:
    data = (bytes(range(251)) * (size // 251 + 1))[:size]
    storage.put("db/obj", data)
    assert storage.get("db/obj") == data
    info = storage.stat("db/obj")
    assert info is not None
    assert (info.key, info.size) == ("db/obj", size)


def test_put_cold_is_an_ordinary_object(storage: Storage) -> None:
    storage.put("snap/1", b"cold data", cold=True)
    assert storage.get("snap/1") == b"cold data"


def test_overwrite_replaces(storage: Storage) -> None:
    storage.put("k", b"old" * 1000)
    storage.put("k", b"new")
    assert storage.get("k") == b"new"
    assert keys(storage) == ["k"]


def test_overwrite_is_atomic_for_concurrent_readers(storage: Storage) -> None:
    a, b = b"a" * (256 * 1024), b"b" * (384 * 1024)
    storage.put("k", a)
    seen: set[bytes] = set()
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                seen.add(storage.get("k"))
        except BaseException as e:  # surfaced below, not lost in the thread
            errors.append(e)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(40):
            storage.put("k", a if i % 2 else b)
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert seen <= {a, b}


def test_get_absent_raises_object_not_found(storage: Storage) -> None:
    with pytest.raises(ObjectNotFound):
        storage.get("nope")
    with pytest.raises(ObjectNotFound):
        storage.open("no/such/key")
    with pytest.raises(ObjectNotFound):
        storage.get_range("nope", 0, 10)
    assert storage.stat("nope") is None


def test_open_streams(storage: Storage) -> None:
    data = bytes(range(256)) * 64
    storage.put("s", data)
    with storage.open("s") as f:
        head = f.read(3)
        rest = f.read()
    assert head + rest == data


def test_get_range(storage: Storage) -> None:
    data = bytes(range(256)) * 4
    storage.put("r", data)
    assert storage.get_range("r", 10, 20) == data[10:30]
    assert storage.get_range("r", 0, len(data)) == data
    assert storage.get_range("r", 1020, 100) == data[1020:]  # runs past the end
    assert storage.get_range("r", 2000, 10) == b""  # starts past the end
    assert storage.get_range("r", 5, 0) == b""


def test_stat(storage: Storage) -> None:
    import time

    before = time.time()
    storage.put("dir/s", b"12345")
    info = storage.stat("dir/s")
    assert info is not None
    assert info.key == "dir/s"
    assert info.size == 5
    # Loose: a server's clock may differ from ours, and some stores keep whole seconds.
    assert abs(info.mtime - before) < 3600


# -- listing -----------------------------------------------------------------------------------


def test_list_is_sorted_by_key(storage: Storage) -> None:
    # Chosen so that directory order differs from string order: "-" < "." < "/" < "0".
    names = ["x0", "x/1", "x.1", "x-1", "xa/b/c", "x/0/deep", "w", "y"]
    for name in names:
        storage.put(name, name.encode())
    listed = list(storage.list())
    assert [i.key for i in listed] == sorted(names)
    assert {i.key: i.size for i in listed} == {n: len(n) for n in names}


def test_list_prefix_filtering(storage: Storage) -> None:
    for name in ["a/bc/x", "a/b/y", "a/bz", "a/c", "ab/d", "b/e"]:
        storage.put(name, b"1")
    assert keys(storage, "a/b") == ["a/b/y", "a/bc/x", "a/bz"]  # a partial segment
    assert keys(storage, "a/b/") == ["a/b/y"]
    assert keys(storage, "a/") == ["a/b/y", "a/bc/x", "a/bz", "a/c"]
    assert keys(storage, "a") == ["a/b/y", "a/bc/x", "a/bz", "a/c", "ab/d"]
    assert keys(storage, "a/bz") == ["a/bz"]  # a prefix that is a whole key
    assert keys(storage, "a/bz/") == []
    assert keys(storage, "zzz") == []
    assert keys(storage, "zzz/") == []
    assert keys(storage, "") == ["a/b/y", "a/bc/x", "a/bz", "a/c", "ab/d", "b/e"]


def test_list_empty_storage(storage: Storage) -> None:
    assert keys(storage) == []
    assert keys(storage, "a/") == []


# -- delete ------------------------------------------------------------------------------------


def test_delete(storage: Storage) -> None:
    for name in ["d/1", "d/2", "d/3", "e/deep/4"]:
        storage.put(name, b"x")
    storage.delete(["d/1", "e/deep/4"])
    assert keys(storage) == ["d/2", "d/3"]
    assert storage.stat("d/1") is None
    with pytest.raises(ObjectNotFound):
        storage.get("e/deep/4")


def test_delete_is_idempotent(storage: Storage) -> None:
    storage.put("k", b"x")
    storage.delete(["k", "k"])
    storage.delete(["k"])
    storage.delete(["never/existed", "nor/this"])
    storage.delete([])
    assert keys(storage) == []
    storage.put("k", b"again")  # the key is usable after its directory was cleaned up
    assert storage.get("k") == b"again"


def test_delete_accepts_a_generator(storage: Storage) -> None:
    storage.put("g/1", b"x")
    storage.put("g/2", b"x")
    storage.delete(info.key for info in storage.list("g/"))
    assert keys(storage) == []


# -- put_stream --------------------------------------------------------------------------------


def test_put_stream_many_chunks(storage: Storage) -> None:
    chunks = [bytes([i % 256]) * (i % 97) for i in range(1000)]  # includes empty chunks
    size = storage.put_stream("big/stream", iter(chunks))
    expected = b"".join(chunks)
    assert size == len(expected)
    assert storage.get("big/stream") == expected


def test_put_stream_of_nothing_is_an_empty_object(storage: Storage) -> None:
    assert storage.put_stream("empty", iter([])) == 0
    assert storage.get("empty") == b""


def test_put_stream_from_a_list(storage: Storage) -> None:
    assert storage.put_stream("l", [b"ab", b"cd"], cold=True) == 4
    assert storage.get("l") == b"abcd"


def test_put_stream_generator_raising_midway_leaves_nothing(storage: Storage) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"x" * 65536
        raise Boom("source failed")

    with pytest.raises(Boom):
        storage.put_stream("dir/partial", chunks())
    assert storage.stat("dir/partial") is None
    with pytest.raises(ObjectNotFound):
        storage.get("dir/partial")
    assert keys(storage) == []


def test_put_stream_failing_keeps_the_old_object(storage: Storage) -> None:
    storage.put("k", b"old")

    def chunks() -> Iterator[bytes]:
        yield b"new"
        raise Boom("source failed")

    with pytest.raises(Boom):
        storage.put_stream("k", chunks())
    assert storage.get("k") == b"old"
    assert keys(storage) == ["k"]


# -- keys --------------------------------------------------------------------------------------

BAD_KEYS = ["../x", "a/../../x", "/abs", "a//b", "a/./b", "", "a\x00b", "a/", ".", "..", "a b", "a\\b"]


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_invalid_keys_are_rejected(storage: Storage, key: str) -> None:
    with pytest.raises(BackendError):
        storage.put(key, b"x")
    with pytest.raises(BackendError):
        storage.put_stream(key, [b"x"])
    with pytest.raises(BackendError):
        storage.get(key)
    with pytest.raises(BackendError):
        storage.stat(key)
    with pytest.raises(BackendError):
        storage.delete([key])
    assert keys(storage) == []


@pytest.mark.parametrize("prefix", ["../", "/abs", "a//b", "a/./", "\x00"], ids=repr)
def test_invalid_prefixes_are_rejected(storage: Storage, prefix: str) -> None:
    with pytest.raises(BackendError):
        list(storage.list(prefix))


def test_key_characters(storage: Storage) -> None:
    key = "db=app/L0/0000000041-0000000057.cs+v2_x"
    storage.put(key, b"1")
    assert keys(storage) == [key]
    assert storage.get(key) == b"1"


# -- concurrency -------------------------------------------------------------------------------


def test_concurrent_puts_from_threads(storage: Storage) -> None:
    n_threads, per_thread = 8, 25
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads)

    def writer(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                storage.put(f"t{t}/o{i:03d}", f"{t}:{i}".encode())
                storage.put("shared/same", f"{t}".encode() * 1000)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    expected = sorted(
        [f"t{t}/o{i:03d}" for t in range(n_threads) for i in range(per_thread)] + ["shared/same"]
    )
    assert keys(storage) == expected
    assert storage.get("t3/o007") == b"3:7"
    assert storage.get("shared/same") in {f"{t}".encode() * 1000 for t in range(n_threads)}


def test_concurrent_put_and_delete_in_one_directory(storage: Storage) -> None:
    # Deletes remove emptied directories on file-like backends; a put racing them must still land.
    errors: list[BaseException] = []

    def churn(t: int) -> None:
        try:
            for i in range(50):
                key = f"race/t{t}-{i}"
                storage.put(key, b"x")
                storage.delete([key])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=churn, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert keys(storage) == []
