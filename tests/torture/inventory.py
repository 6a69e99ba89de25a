"""The torture harness's inventory: every adversity of the correctness bar and how it is exercised.

``docs/correctness.md`` is generated from this list and ``last_results.json`` (written by the last
``make correctness-regen`` or ``make torture`` run) with ``python tests/torture/inventory.py``.  An
adversity whose feature is not in this build is listed as pending, never as passing.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "last_results.json"
PAGE = HERE.parent.parent / "docs" / "correctness.md"


@dataclass(frozen=True)
class Adversity:
    """One row of the matrix."""

    title: str
    how: str
    scenarios: tuple[str, ...]  # names in scenarios.SCENARIOS; empty while pending
    pending: str = ""  # why it is not exercised yet (the feature has not landed)


ADVERSITIES: tuple[Adversity, ...] = (
    Adversity(
        "Marked workload: randomized commits, overflow-page blobs, periodic VACUUM, rolled-back spills",
        "every scenario runs it in a separate writer process; it records a gap-free marker, a log "
        "and a BLAKE3 digest of every user table after each commit",
        ("clean_drain",),
    ),
    Adversity(
        "Clean quiescent drain, then an exact restore",
        "SIGTERM to a real `bakelite daemon`; the latest restore must be the last commit exactly; "
        "a sweep of point-in-time restores must land on non-decreasing committed states",
        ("clean_drain",),
    ),
    Adversity(
        "Unsynced window: commits after the last sync when the process dies",
        "long debounce keeps commits unshipped; restores taken while running set the durability "
        "floor; after SIGKILL the restore must not fall below it; resumed, then exact",
        ("unsynced_window",),
    ),
    Adversity(
        "SIGKILL of the live daemon under write load",
        "a real daemon killed several times at random moments mid-write, each time restored, "
        "graded and restarted; exact after the final clean stop",
        ("sigkill_under_load",),
    ),
    Adversity(
        "Transient backend errors, timeouts, partial writes, lagging listings",
        "the daemon's destination wrapped in a fault-injecting backend (seeded plan); graded for "
        "survival and exactness",
        ("transient_faults",),
    ),
    Adversity(
        "Full backend outage under write load",
        "every backend call fails for a while; the daemon backs off, keeps its read lock, catches "
        "up when the backend returns; exact after a clean stop",
        ("full_outage",),
    ),
    Adversity(
        "Crash mid-operation: mid-snapshot, before and after an object write, after the pointer write",
        "SIGKILL injected at a chosen backend call (the cursor, not the manifest, is authoritative: "
        "torn uploads are discarded, finished ones adopted); restarted, then exact",
        (
            "crash_mid_snapshot",
            "crash_before_object_write",
            "crash_after_object_write",
            "crash_after_pointer_write",
        ),
    ),
    Adversity(
        "Red path: a corrupted replica must be refused",
        "flip a byte, drop an object, swap two, substitute one from another database: restore "
        "must fail for each, and the pristine replica must still restore exactly",
        ("red_path",),
    ),
    Adversity(
        "Crash mid-compaction and mid-delete",
        "1s/3s windows, keep 4, a new backup every 60 change-sets and max_backups 2 under write "
        "load; SIGKILL injected after a compaction delete, before a merged-object write, and "
        "mid-prune; the crashed replica restores to a committed state, then exact after resuming; "
        "and a long run keeps the object count bounded with every sampled target exact",
        (
            "compaction_bounded",
            "crash_mid_compaction_delete",
            "crash_mid_compaction_write",
            "crash_mid_prune",
        ),
    ),
    Adversity(
        "WORM / S3 Object Lock immutability",
        "every delete refused by the backend while compaction and retention are on: the daemon "
        "logs, backs off and keeps replicating; exact after a clean stop",
        ("worm_backend",),
    ),
    Adversity(
        "At-rest encryption: encrypt legacy data, rotate keys, crash mid-rewrite",
        "a plaintext replica encrypted in place by `reencrypt` (SIGKILLed part-way, then rerun), "
        "the daemon killed under load with the key on, then a key rotation crashed and rerun; "
        "no plaintext left, every point in time restores with the new key",
        ("encryption_lifecycle",),
    ),
    Adversity(
        "Multi-destination fan-out with asymmetric per-destination faults",
        "three `file` destinations written in lock-step, each wrapped in its own fault plan (a "
        "healthy primary, flaky partial writes, timeouts with stale listings); exact after a clean "
        "stop, each destination alone restores the last commit exactly, and a fan-out restore stays "
        "exact with a different object bit-flipped on two destinations",
        ("multi_destination_faults",),
    ),
)


def load_results() -> dict[str, dict[str, object]]:
    """The last recorded result per scenario."""
    try:
        data = json.loads(RESULTS.read_text())
    except FileNotFoundError:
        return {}
    return dict(data.get("scenarios", {}))


def render(results: dict[str, dict[str, object]] | None = None) -> str:
    """The correctness page as Markdown."""
    results = load_results() if results is None else results
    lines = [
        "# Correctness",
        "",
        "<!-- Generated by `make correctness-regen` from tests/torture/inventory.py; do not edit. -->",
        "",
        "Every restore in the torture harness is graded by an oracle that needs no stored "
        "fingerprint: the workload writes its own ground truth into the database.",
        "",
        "A restore passes only if:",
        "",
        "- `PRAGMA integrity_check` returns `ok`;",
        "- its markers are exactly `{1..m}` (no holes, no rows from the future);",
        "- the BLAKE3 digest of every user table equals the one the writer recorded at commit `m`, "
        "and `m` is a commit the writer really made;",
        "- after a clean stop `m` is the last commit; after a crash it is never below what was "
        "already durable;",
        "- point-in-time targets land on non-decreasing commits as the target time grows.",
        "",
        "| adversity | how it is exercised | last result |",
        "|---|---|---|",
    ]
    for adv in ADVERSITIES:
        if adv.pending:
            result = f"pending: {adv.pending}"
        else:
            parts = []
            for name in adv.scenarios:
                r = results.get(name)
                parts.append(f"{name}: {r['outcome']} (seed {r['seed']})" if r else f"{name}: not run yet")
            result = "; ".join(parts)
        lines.append(f"| {adv.title} | {adv.how} | {result} |")
    lines += [
        "",
        "`make test` runs each scenario once at a bounded size with fixed seeds. `make torture` runs "
        "them in a loop with fresh random seeds for a set time (default 30 minutes) and prints every "
        "seed, so a failure reproduces with `BAKELITE_TORTURE_SEED=<seed>`.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render())
