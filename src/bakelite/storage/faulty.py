"""Fault injection by wrapping a backend, for tests and the torture harness (style.md point 8).

    FaultyStorage(MemoryStorage(), "put:ok,ok,transient;get:corrupt@3;list:lag", seed=7)

Plan grammar (whitespace is ignored)::

    plan    := [ op-plan { ";" op-plan } ]
    op-plan := op ":" item { "," item }
    item    := outcome | outcome "@" N | outcome "%" P
    op      := put | put_stream | get | open | get_range | stat | list | delete

For the n-th call (1-based, counted per op) the outcome is, in order of precedence:

1. the outcome of an ``outcome@N`` item with ``N == n``;
2. else the n-th plain item of the op's sequence, if the sequence is that long;
3. else the first ``outcome%P`` item that fires, each with probability ``P`` percent (seeded RNG);
4. else ``ok``.

``put`` and ``put_stream`` are planned separately.  Outcomes, and the ops they apply to:

=========== ================ ==================================================================
outcome     ops              effect
=========== ================ ==================================================================
ok          all              pass the call through
transient   all              raise ``TransientBackendError`` before doing anything
timeout     all              do the call, then raise ``TransientBackendError`` (the write
                             happened but the caller thinks it failed)
permanent   all              raise ``PermanentBackendError`` before doing anything
outage      all              start an outage: this and every later call of any op raises
                             ``TransientBackendError`` until ``set_outage(False)``
partial     put, put_stream  store the first half of the object, then raise
                             ``TransientBackendError`` (a non-atomic backend dying mid-write)
corrupt     get, open,       return the data with one byte inverted (an empty result gains a
            get_range        byte, so the corruption is always visible)
refuse      delete           raise ``DeleteRefusedError`` (WORM / Object Lock)
lag         list             omit the keys written by the last ``lag`` puts (eventual
                             consistency); ``lag`` is a constructor argument, default 1
crash       all              SIGKILL this process before doing anything (torture harness)
crashafter  all              do the call, then SIGKILL this process (a crash between an
                             object write and whatever was to follow it)
crashmid    put_stream       pass two chunks on, then SIGKILL this process mid-upload
=========== ================ ==================================================================

``calls`` counts every call per op (faulted or not); ``injected`` records ``(op, n, outcome)`` for
each fault.  ``outage`` can also be flipped directly (``faulty.outage = True``).
"""

from __future__ import annotations

import builtins
import io
import logging
import os
import random
import signal
import threading
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from bakelite.errors import DeleteRefusedError, PermanentBackendError, TransientBackendError
from bakelite.storage.base import ObjectInfo, Storage

logger = logging.getLogger(__name__)

_COMMON = frozenset({"ok", "transient", "timeout", "permanent", "outage", "crash", "crashafter"})
_OUTCOMES: dict[str, frozenset[str]] = {
    "put": _COMMON | {"partial"},
    "put_stream": _COMMON | {"partial", "crashmid"},
    "get": _COMMON | {"corrupt"},
    "open": _COMMON | {"corrupt"},
    "get_range": _COMMON | {"corrupt"},
    "stat": _COMMON,
    "list": _COMMON | {"lag"},
    "delete": _COMMON | {"refuse"},
}


@dataclass(frozen=True)
class OpPlan:
    """The faults planned for one op: a sequence, fixed calls, and probabilities."""

    sequence: tuple[str, ...] = ()
    at: Mapping[int, str] = field(default_factory=dict)
    chance: tuple[tuple[str, float], ...] = ()

    def outcome(self, n: int, rng: random.Random) -> str:
        """The outcome of the n-th call (1-based)."""
        if n in self.at:
            return self.at[n]
        if n <= len(self.sequence):
            return self.sequence[n - 1]
        for outcome, percent in self.chance:
            if rng.random() * 100.0 < percent:
                return outcome
        return "ok"


@dataclass(frozen=True)
class FaultPlan:
    """A parsed plan: one ``OpPlan`` per op that has faults."""

    ops: Mapping[str, OpPlan] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> FaultPlan:
        """Parse the grammar in the module docstring; ``ValueError`` naming the bad part."""
        ops: dict[str, OpPlan] = {}
        for part in text.split(";"):
            part = "".join(part.split())
            if not part:
                continue
            op, sep, items = part.partition(":")
            if not sep:
                raise ValueError(f"fault plan {text!r}: expected 'op:outcome,…' in {part!r}")
            if op not in _OUTCOMES:
                known = ", ".join(_OUTCOMES)
                raise ValueError(f"fault plan {text!r}: unknown operation in {part!r} (known: {known})")
            if op in ops:
                raise ValueError(f"fault plan {text!r}: operation {op!r} planned twice")
            ops[op] = _parse_items(text, op, items)
        return cls(ops)

    def outcome(self, op: str, n: int, rng: random.Random) -> str:
        """The outcome of the n-th call of ``op``."""
        plan = self.ops.get(op)
        return "ok" if plan is None else plan.outcome(n, rng)


def _parse_items(text: str, op: str, items: str) -> OpPlan:
    sequence: builtins.list[str] = []
    at: dict[int, str] = {}
    chance: builtins.list[tuple[str, float]] = []
    for item in items.split(","):
        try:
            if "@" in item:
                outcome, _, number = item.partition("@")
                n = int(number)
                if n < 1:
                    raise ValueError("call numbers start at 1")
                at[n] = outcome
            elif "%" in item:
                outcome, _, number = item.partition("%")
                percent = float(number)
                if not 0.0 <= percent <= 100.0:
                    raise ValueError("a probability is 0 to 100 percent")
                chance.append((outcome, percent))
            else:
                outcome = item
                sequence.append(outcome)
        except ValueError as e:
            raise ValueError(f"fault plan {text!r}: bad item {item!r} for {op}: {e}") from None
        if outcome not in _OUTCOMES[op]:
            allowed = ", ".join(sorted(_OUTCOMES[op]))
            raise ValueError(f"fault plan {text!r}: outcome {outcome!r} does not apply to {op} ({allowed})")
    return OpPlan(tuple(sequence), at, tuple(chance))


class FaultyStorage:
    """Wraps ``inner`` and injects the faults of ``plan`` (see the module docstring)."""

    def __init__(self, inner: Storage, plan: str | FaultPlan, seed: int = 0, *, lag: int = 1) -> None:
        self.inner = inner
        self.plan = plan if isinstance(plan, FaultPlan) else FaultPlan.parse(plan)
        self.outage = False
        self.calls: Counter[str] = Counter()
        self.injected: builtins.list[tuple[str, int, str]] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._recent: deque[str] = deque(maxlen=max(lag, 0))

    def set_outage(self, on: bool) -> None:
        """Start or end an outage: while on, every call raises ``TransientBackendError``."""
        self.outage = on

    # -- ops -----------------------------------------------------------------------------------

    def put(self, key: str, data: bytes, *, cold: bool = False) -> None:
        """``inner.put`` with the planned fault."""
        outcome = self._decide("put", key)
        if outcome == "partial":
            self._write_partial(key, data, cold)
        self.inner.put(key, data, cold=cold)
        self._written(key)
        self._after("put", key, outcome)

    def put_stream(self, key: str, chunks: Iterable[bytes], *, cold: bool = False) -> int:
        """``inner.put_stream`` with the planned fault."""
        outcome = self._decide("put_stream", key)
        if outcome == "partial":
            self._write_partial(key, b"".join(chunks), cold)
        if outcome == "crashmid":
            chunks = _die_after(chunks, 2)
        size = self.inner.put_stream(key, chunks, cold=cold)
        self._written(key)
        self._after("put_stream", key, outcome)
        return size

    def get(self, key: str) -> bytes:
        """``inner.get`` with the planned fault."""
        outcome = self._decide("get", key)
        data = self.inner.get(key)
        self._after("get", key, outcome)
        return self._corrupt(data) if outcome == "corrupt" else data

    def open(self, key: str) -> BinaryIO:
        """``inner.open`` with the planned fault (a corrupt stream is read whole first)."""
        outcome = self._decide("open", key)
        stream = self.inner.open(key)
        if outcome == "timeout":
            stream.close()
            self._after("open", key, outcome)
        if outcome == "corrupt":
            with stream:
                return io.BytesIO(self._corrupt(stream.read()))
        return stream

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """``inner.get_range`` with the planned fault."""
        outcome = self._decide("get_range", key)
        data = self.inner.get_range(key, start, length)
        self._after("get_range", key, outcome)
        return self._corrupt(data) if outcome == "corrupt" else data

    def stat(self, key: str) -> ObjectInfo | None:
        """``inner.stat`` with the planned fault."""
        outcome = self._decide("stat", key)
        info = self.inner.stat(key)
        self._after("stat", key, outcome)
        return info

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """``inner.list`` with the planned fault."""
        outcome = self._decide("list", prefix)
        if outcome == "timeout":
            builtins.list(self.inner.list(prefix))
            self._after("list", prefix, outcome)
        if outcome == "lag":
            with self._lock:
                hidden = set(self._recent)
            return (info for info in self.inner.list(prefix) if info.key not in hidden)
        return self.inner.list(prefix)

    def delete(self, keys: Iterable[str]) -> None:
        """``inner.delete`` with the planned fault."""
        batch = builtins.list(keys)
        label = f"{batch[0]} (+{len(batch) - 1})" if batch else "(none)"
        outcome = self._decide("delete", label)
        self.inner.delete(batch)
        self._after("delete", label, outcome)

    def describe(self) -> str:
        """The inner backend's description."""
        return self.inner.describe()

    def close(self) -> None:
        """Close the inner backend."""
        self.inner.close()

    # -- machinery -----------------------------------------------------------------------------

    def _decide(self, op: str, key: str) -> str:
        """Count the call, pick its outcome, and raise now for the faults that act before the op."""
        with self._lock:
            self.calls[op] += 1
            n = self.calls[op]
            outcome = "outage" if self.outage else self.plan.outcome(op, n, self._rng)
            if outcome == "outage":
                self.outage = True
            if outcome != "ok":
                self.injected.append((op, n, outcome))
        if outcome != "ok":
            logger.debug(
                "injecting %s into %s %s (call %d)", outcome, op, key, n, extra={"op": op, "key": key}
            )
        where = f"{op} {key}"
        if outcome in ("transient", "outage"):
            raise TransientBackendError(f"injected {outcome}: {where}", detail=f"call {n}")
        if outcome == "permanent":
            raise PermanentBackendError(f"injected permanent failure: {where}", detail=f"call {n}")
        if outcome == "refuse":
            raise DeleteRefusedError(f"injected delete refusal: {where}", detail=f"call {n}")
        if outcome == "crash":
            _die()
        return outcome

    def _after(self, op: str, key: str, outcome: str) -> None:
        if outcome == "timeout":
            raise TransientBackendError(f"injected timeout after {op} {key} completed")
        if outcome == "crashafter":
            _die()

    def _write_partial(self, key: str, data: bytes, cold: bool) -> None:
        self.inner.put(key, data[: len(data) // 2], cold=cold)
        self._written(key)
        raise TransientBackendError(
            f"injected partial write: put {key}", detail=f"{len(data) // 2} of {len(data)} bytes"
        )

    def _written(self, key: str) -> None:
        with self._lock:
            self._recent.append(key)

    def _corrupt(self, data: bytes) -> bytes:
        if not data:
            return b"\xff"
        with self._lock:
            pos = self._rng.randrange(len(data))
        flipped = bytearray(data)
        flipped[pos] ^= 0xFF
        return bytes(flipped)


def _die() -> None:
    """Kill this process at once, as a power cut or OOM kill would (no cleanup, no flush)."""
    logging.shutdown()
    os.kill(os.getpid(), signal.SIGKILL)


def _die_after(chunks: Iterable[bytes], n: int) -> Iterator[bytes]:
    for i, chunk in enumerate(chunks):
        if i == n:
            _die()
        yield chunk
    _die()
