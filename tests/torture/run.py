"""`make torture`: run every scenario in a loop with fresh seeds for a set time; print each seed.

python tests/torture/run.py --seconds 1800 [--seed N] [--scale 2.0]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from inventory import RESULTS
from scenarios import SCENARIOS


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=1800)
    p.add_argument("--seed", type=int, default=None, help="master seed (default: random, printed)")
    p.add_argument("--scale", type=float, default=2.0)
    a = p.parse_args()
    master = a.seed if a.seed is not None else random.randrange(1 << 31)
    print(f"torture: master seed {master}, {a.seconds:.0f}s, scale {a.scale}", flush=True)
    rng = random.Random(master)
    deadline = time.time() + a.seconds
    runs = failures = 0
    summary: dict[str, dict[str, object]] = {}
    while time.time() < deadline:
        for name, scenario in SCENARIOS.items():
            if time.time() >= deadline:
                break
            seed = rng.randrange(1 << 31)
            t0 = time.time()
            with tempfile.TemporaryDirectory(prefix=f"torture-{name}-") as tmp:
                try:
                    figures = scenario(Path(tmp) / name, seed, a.scale)
                    outcome = "passed"
                except Exception:
                    outcome = "FAILED"
                    figures = {"error": traceback.format_exc(limit=3)}
                    failures += 1
            runs += 1
            print(f"{name} seed={seed} {outcome} in {time.time() - t0:.1f}s: {figures}", flush=True)
            prev = summary.get(name, {"runs": 0, "failed": 0})
            summary[name] = {
                "outcome": "FAILED" if outcome == "FAILED" or prev.get("outcome") == "FAILED" else "passed",
                "seed": seed if outcome == "FAILED" or prev.get("outcome") != "FAILED" else prev["seed"],
                "runs": int(prev["runs"]) + 1,  # type: ignore[call-overload]
                "failed": int(prev["failed"]) + (outcome == "FAILED"),  # type: ignore[call-overload]
            }
    print(f"torture: {runs} scenario runs, {failures} failed (master seed {master})")
    RESULTS.write_text(
        json.dumps({"scenarios": summary, "master_seed": master}, indent=2, sort_keys=True) + "\n"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
