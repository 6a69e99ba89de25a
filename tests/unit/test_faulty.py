"""FaultyStorage: the plan grammar and what each outcome does."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bakelite.errors import DeleteRefusedError, PermanentBackendError, TransientBackendError
from bakelite.storage.faulty import FaultPlan, FaultyStorage
from bakelite.storage.memory import MemoryStorage


def faulty(plan: str, seed: int = 0, lag: int = 1) -> tuple[FaultyStorage, MemoryStorage]:
    inner = MemoryStorage()
    return FaultyStorage(inner, plan, seed=seed, lag=lag), inner


def outcomes(storage: FaultyStorage, n: int) -> list[str]:
    """Call put n times, returning 'ok' or the error class name of each."""
    result = []
    for i in range(n):
        try:
            storage.put(f"k{i}", b"x")
            result.append("ok")
        except TransientBackendError:
            result.append("transient")
        except PermanentBackendError:
            result.append("permanent")
    return result


# -- the plan ----------------------------------------------------------------------------------


def test_sequence_is_consumed_one_per_call_then_ok() -> None:
    storage, _ = faulty("put:ok,ok,transient,permanent")
    assert outcomes(storage, 6) == ["ok", "ok", "transient", "permanent", "ok", "ok"]
    assert storage.calls["put"] == 6
    assert storage.injected == [("put", 3, "transient"), ("put", 4, "permanent")]


def test_at_applies_to_the_nth_call_only() -> None:
    storage, _ = faulty("put:transient@2,permanent@4")
    assert outcomes(storage, 5) == ["ok", "transient", "ok", "permanent", "ok"]


def test_at_overrides_the_sequence() -> None:
    storage, _ = faulty("put:transient,transient,transient,ok@2")
    assert outcomes(storage, 4) == ["transient", "ok", "transient", "ok"]


def test_percent_is_seeded_and_roughly_right() -> None:
    a, _ = faulty("put:transient%30", seed=42)
    b, _ = faulty("put:transient%30", seed=42)
    c, _ = faulty("put:transient%30", seed=43)
    run_a, run_b, run_c = outcomes(a, 1000), outcomes(b, 1000), outcomes(c, 1000)
    assert run_a == run_b
    assert run_a != run_c
    assert 200 < run_a.count("transient") < 400


def test_percent_extremes_and_after_the_sequence() -> None:
    storage, _ = faulty("put:ok,transient%0,permanent%100")
    assert outcomes(storage, 3) == ["ok", "permanent", "permanent"]


def test_ops_are_planned_and_counted_separately() -> None:
    storage, _ = faulty(" put : transient ; get : transient ")
    with pytest.raises(TransientBackendError):
        storage.put("a", b"1")
    storage.put("a", b"1")
    storage.put_stream("b", [b"2"])  # put_stream has its own plan (none)
    with pytest.raises(TransientBackendError):
        storage.get("a")
    assert storage.get("a") == b"1"
    assert dict(storage.calls) == {"put": 2, "put_stream": 1, "get": 2}


def test_empty_plan_passes_everything_through() -> None:
    storage, inner = faulty("")
    storage.put("a", b"1")
    assert storage.get("a") == b"1"
    assert storage.describe() == inner.describe()
    assert storage.injected == []


def test_plan_object_is_accepted() -> None:
    plan = FaultPlan.parse("stat:transient")
    storage = FaultyStorage(MemoryStorage(), plan)
    with pytest.raises(TransientBackendError):
        storage.stat("a")
    assert storage.stat("a") is None


@pytest.mark.parametrize(
    "plan",
    [
        "write:ok",  # unknown op
        "put",  # no outcomes
        "put:",  # empty outcome
        "put:explode",  # unknown outcome
        "stat:corrupt",  # outcome for another op
        "get:partial",
        "put:refuse",
        "get:lag",
        "put:transient@0",
        "put:transient@x",
        "put:transient%101",
        "put:transient%x",
        "put:ok;put:ok",  # planned twice
    ],
)
def test_bad_plans_are_rejected(plan: str) -> None:
    with pytest.raises(ValueError, match="fault plan"):
        FaultPlan.parse(plan)


# -- the outcomes ------------------------------------------------------------------------------


def test_transient_does_nothing() -> None:
    storage, inner = faulty("put:transient;delete:transient")
    with pytest.raises(TransientBackendError):
        storage.put("a", b"1")
    assert inner.keys() == []
    inner.put("b", b"1")
    with pytest.raises(TransientBackendError):
        storage.delete(["b"])
    assert inner.keys() == ["b"]


def test_timeout_does_the_operation_then_fails() -> None:
    storage, inner = faulty("put:timeout;put_stream:timeout;delete:timeout;get:timeout")
    with pytest.raises(TransientBackendError):
        storage.put("a", b"1")
    with pytest.raises(TransientBackendError):
        storage.put_stream("b", iter([b"2", b"3"]))
    assert inner.get("a") == b"1"
    assert inner.get("b") == b"23"
    with pytest.raises(TransientBackendError):
        storage.get("a")
    with pytest.raises(TransientBackendError):
        storage.delete(["a"])
    assert inner.keys() == ["b"]


def test_timeout_on_reads_and_listing() -> None:
    storage, inner = faulty("open:timeout;get_range:timeout;stat:timeout;list:timeout")
    inner.put("a", b"123")
    with pytest.raises(TransientBackendError):
        storage.open("a")
    with pytest.raises(TransientBackendError):
        storage.get_range("a", 0, 1)
    with pytest.raises(TransientBackendError):
        storage.stat("a")
    with pytest.raises(TransientBackendError):
        storage.list()
    assert [i.key for i in storage.list()] == ["a"]


def test_partial_writes_a_truncated_object() -> None:
    storage, inner = faulty("put:partial;put_stream:partial")
    with pytest.raises(TransientBackendError):
        storage.put("a", b"0123456789")
    assert inner.get("a") == b"01234"

    def chunks() -> Iterator[bytes]:
        yield b"abcd"
        yield b"efgh"

    with pytest.raises(TransientBackendError):
        storage.put_stream("b", chunks())
    assert inner.get("b") == b"abcd"


def test_corrupt_flips_exactly_one_byte() -> None:
    storage, inner = faulty("get:corrupt@2;open:corrupt;get_range:corrupt", seed=5)
    data = bytes(range(200))
    inner.put("a", data)
    assert storage.get("a") == data
    bad = storage.get("a")
    assert len(bad) == len(data)
    diffs = [i for i in range(len(data)) if bad[i] != data[i]]
    assert len(diffs) == 1
    assert bad[diffs[0]] == data[diffs[0]] ^ 0xFF
    assert storage.get("a") == data
    with storage.open("a") as f:
        streamed = f.read()
    assert len(streamed) == len(data) and streamed != data
    part = storage.get_range("a", 10, 5)
    assert len(part) == 5 and part != data[10:15]
    assert inner.get("a") == data  # the stored object is untouched


def test_corrupt_empty_object_is_still_visible() -> None:
    storage, inner = faulty("get:corrupt")
    inner.put("e", b"")
    assert storage.get("e") != b""


def test_permanent() -> None:
    storage, inner = faulty("get:permanent")
    inner.put("a", b"1")
    with pytest.raises(PermanentBackendError):
        storage.get("a")


def test_refuse_is_a_worm_delete_refusal() -> None:
    storage, inner = faulty("delete:refuse")
    inner.put("a", b"1")
    with pytest.raises(DeleteRefusedError):
        storage.delete(["a"])
    assert inner.keys() == ["a"]
    storage.delete(["a"])
    assert inner.keys() == []


def test_lag_hides_the_last_put() -> None:
    storage, _ = faulty("list:lag,ok,lag")
    storage.put("a", b"1")
    storage.put("b", b"1")
    assert [i.key for i in storage.list()] == ["a"]
    assert [i.key for i in storage.list()] == ["a", "b"]
    storage.put_stream("c", [b"1"])
    assert [i.key for i in storage.list()] == ["a", "b"]


def test_lag_window_is_configurable() -> None:
    storage, _ = faulty("list:lag", lag=2)
    for key in ("a", "b", "c"):
        storage.put(key, b"1")
    assert [i.key for i in storage.list()] == ["a"]


def test_outage_from_the_plan_hits_every_op_until_lifted() -> None:
    storage, inner = faulty("put:ok,outage")
    storage.put("a", b"1")
    with pytest.raises(TransientBackendError):
        storage.put("b", b"1")
    assert storage.outage
    for call in (lambda: storage.get("a"), lambda: storage.stat("a"), lambda: storage.list()):
        with pytest.raises(TransientBackendError):
            call()
    storage.set_outage(False)
    assert storage.get("a") == b"1"
    assert inner.keys() == ["a"]


def test_outage_flag_set_directly() -> None:
    storage, _ = faulty("")
    storage.outage = True
    with pytest.raises(TransientBackendError):
        storage.delete([])
    storage.set_outage(False)
    storage.delete([])
    assert storage.calls["delete"] == 2
