"""RetryingStorage: what is retried, how often, how long it waits, and put_stream's rules."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator

import pytest

from bakelite.errors import ObjectNotFound, PermanentBackendError, TransientBackendError
from bakelite.storage.faulty import FaultyStorage
from bakelite.storage.memory import MemoryStorage
from bakelite.storage.retry import Restartable, RetryingStorage


class Sleeps:
    """An injected sleep that records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def wrap(
    plan: str,
    attempts: int = 5,
    base_delay: float = 0.1,
    max_delay: float = 5.0,
    rng: random.Random | None = None,
) -> tuple[RetryingStorage, FaultyStorage, Sleeps]:
    faulty = FaultyStorage(MemoryStorage(), plan)
    sleeps = Sleeps()
    storage = RetryingStorage(faulty, attempts, base_delay, max_delay, sleep=sleeps, rng=rng)
    return storage, faulty, sleeps


def stored(faulty: FaultyStorage) -> list[str]:
    return [info.key for info in faulty.inner.list()]


def test_transient_errors_are_retried_until_success() -> None:
    storage, faulty, sleeps = wrap("put:transient,transient,transient")
    storage.put("a", b"1")
    assert faulty.calls["put"] == 4
    assert len(sleeps.delays) == 3
    assert faulty.inner.get("a") == b"1"


def test_after_the_last_attempt_the_last_error_is_raised() -> None:
    storage, faulty, sleeps = wrap("get:transient%100", attempts=3)
    with pytest.raises(TransientBackendError) as info:
        storage.get("a")
    assert faulty.calls["get"] == 3
    assert len(sleeps.delays) == 2  # no sleep after the last attempt
    assert info.value.detail == "call 3"  # FaultyStorage numbers its errors: this is the last one


def test_one_attempt_means_no_retry() -> None:
    storage, faulty, sleeps = wrap("stat:transient", attempts=1)
    with pytest.raises(TransientBackendError):
        storage.stat("a")
    assert faulty.calls["stat"] == 1
    assert sleeps.delays == []


@pytest.mark.parametrize("attempts", [0, -1])
def test_attempts_must_be_positive(attempts: int) -> None:
    with pytest.raises(ValueError):
        RetryingStorage(MemoryStorage(), attempts=attempts)


def test_permanent_errors_surface_at_once() -> None:
    storage, faulty, sleeps = wrap("put:permanent,transient")
    with pytest.raises(PermanentBackendError):
        storage.put("a", b"1")
    assert faulty.calls["put"] == 1
    assert sleeps.delays == []


def test_not_found_is_not_retried() -> None:
    storage, faulty, sleeps = wrap("")
    with pytest.raises(ObjectNotFound):
        storage.get("missing")
    assert faulty.calls["get"] == 1
    assert sleeps.delays == []


def test_other_exceptions_are_not_retried() -> None:
    storage, faulty, _ = wrap("")

    def chunks() -> Iterator[bytes]:
        raise KeyError("source")
        yield b""

    with pytest.raises(KeyError):
        storage.put_stream("a", chunks())
    assert faulty.calls["put_stream"] == 1


def test_full_jitter_stays_within_the_exponential_cap() -> None:
    storage, _, sleeps = wrap(
        "list:transient%100", attempts=12, base_delay=0.1, max_delay=2.0, rng=random.Random(1)
    )
    with pytest.raises(TransientBackendError):
        storage.list()
    caps = [min(2.0, 0.1 * 2**i) for i in range(11)]
    assert caps == [storage.backoff_cap(a) for a in range(1, 12)]
    assert len(sleeps.delays) == 11
    for delay, cap in zip(sleeps.delays, caps, strict=True):
        assert 0.0 <= delay <= cap
    # Full jitter, not a fixed schedule: the delays are not all at their caps.
    assert any(delay < cap * 0.9 for delay, cap in zip(sleeps.delays, caps, strict=True))


class _Extreme(random.Random):
    """uniform() returns its upper bound, to observe the caps themselves."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_backoff_doubles_and_is_capped() -> None:
    storage, _, sleeps = wrap("get:transient%100", attempts=7, base_delay=0.5, max_delay=4.0, rng=_Extreme())
    with pytest.raises(TransientBackendError):
        storage.get("a")
    assert sleeps.delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_every_op_is_retried() -> None:
    plan = ";".join(
        f"{op}:transient"
        for op in ("put", "get", "open", "get_range", "stat", "list", "delete", "put_stream")
    )
    storage, faulty, sleeps = wrap(plan)
    storage.put("a", b"123")
    assert storage.get("a") == b"123"
    with storage.open("a") as f:
        assert f.read() == b"123"
    assert storage.get_range("a", 1, 1) == b"2"
    assert storage.stat("a") is not None
    assert [i.key for i in storage.list()] == ["a"]
    assert storage.put_stream("b", [b"4"]) == 1
    storage.delete(["a", "b"])
    assert stored(faulty) == []
    assert len(sleeps.delays) == 8
    assert storage.describe() == faulty.inner.describe()


def test_timeout_after_a_put_is_retried_safely() -> None:
    storage, faulty, _ = wrap("put:timeout")
    storage.put("a", b"1")
    assert faulty.calls["put"] == 2
    assert faulty.inner.get("a") == b"1"


def test_retries_are_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    storage, _, _ = wrap("put:transient")
    with caplog.at_level(logging.DEBUG, logger="bakelite.storage.retry"):
        storage.put("db/key", b"1")
    records = [r for r in caplog.records if r.name == "bakelite.storage.retry"]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.DEBUG
    assert (record.op, record.key, record.attempt) == ("put", "db/key", 1)  # type: ignore[attr-defined]
    assert "put db/key" in record.getMessage()


# -- put_stream --------------------------------------------------------------------------------


def test_put_stream_of_a_list_is_retried_after_it_was_read() -> None:
    storage, faulty, _ = wrap("put_stream:partial,timeout")
    assert storage.put_stream("a", [b"ab", b"cd"]) == 4
    assert faulty.calls["put_stream"] == 3
    assert faulty.inner.get("a") == b"abcd"


def test_put_stream_with_a_factory_restarts_the_source() -> None:
    storage, faulty, _ = wrap("put_stream:partial,partial")
    started = 0

    def source() -> Iterator[bytes]:
        nonlocal started
        started += 1
        yield b"abc"
        yield b"def"

    assert storage.put_stream("a", Restartable(source)) == 6
    assert started == 3
    assert faulty.inner.get("a") == b"abcdef"


def test_put_stream_generator_is_retried_while_untouched() -> None:
    storage, faulty, _ = wrap("put_stream:transient,transient")

    def chunks() -> Iterator[bytes]:
        yield b"abc"

    assert storage.put_stream("a", chunks()) == 3
    assert faulty.calls["put_stream"] == 3
    assert faulty.inner.get("a") == b"abc"


def test_put_stream_generator_is_not_retried_once_consumed() -> None:
    storage, faulty, sleeps = wrap("put_stream:partial")

    def chunks() -> Iterator[bytes]:
        yield b"abc"

    with pytest.raises(TransientBackendError):
        storage.put_stream("a", chunks())
    assert faulty.calls["put_stream"] == 1
    assert sleeps.delays == []
