"""The bounded torture run inside `make test`: each adversity once, fixed seeds, graded by the oracle."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from inventory import ADVERSITIES, PAGE, RESULTS, render
from scenarios import SCENARIOS, env_seed

SEEDS = {name: 1000 + i for i, name in enumerate(SCENARIOS)}


@pytest.mark.torture
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_adversity(name: str, tmp_path: Path) -> None:
    seed = env_seed(SEEDS[name])
    scale = float(os.environ.get("BAKELITE_TORTURE_SCALE", "1.0"))
    started = time.time()
    outcome = "FAILED"
    try:
        figures = SCENARIOS[name](tmp_path / name, seed, scale)
        outcome = "passed"
    finally:
        record = os.environ.get("BAKELITE_TORTURE_RECORD")
        if record:
            data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"scenarios": {}}
            data["scenarios"][name] = {
                "outcome": outcome,
                "seed": seed,
                "seconds": round(time.time() - started),
            }
            RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"{name} seed={seed}: {figures}")


def test_every_active_adversity_has_scenarios() -> None:
    for adv in ADVERSITIES:
        if adv.pending:
            assert not adv.scenarios
        else:
            assert adv.scenarios and all(s in SCENARIOS for s in adv.scenarios)
    covered = {s for adv in ADVERSITIES for s in adv.scenarios}
    assert covered == set(SCENARIOS)


def test_correctness_page_is_generated_from_the_inventory() -> None:
    assert PAGE.read_text() == render(), "docs/correctness.md is stale: run `make correctness-regen`"
